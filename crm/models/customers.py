"""The customer record and what identifies it: channels, identities and merges.

Other apps read from here and never the other way round (see ../shared/DESIGN.md §4). News travels
rightwards through the append-only `Event` log (crm.models.events).
"""

import zoneinfo

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from simple_history.models import HistoricalRecords


class Channel(models.TextChoices):
    """Where a customer was met or an order was placed."""

    WECHAT = "wechat", _("WeChat")
    TMALL = "tmall", _("Tmall")
    JD = "jd", _("JD.com")
    APP = "app", _("App")
    WEB = "web", _("Web")
    STORE = "store", _("Store")
    SMS = "sms", _("SMS")
    EMAIL = "email", _("Email")
    OTHER = "other", _("Other")


class IdentityKind(models.TextChoices):
    """Well-known identifier kinds. Any other named channel may be used as `channel:<name>`."""

    EMAIL = "email", _("Email address")
    PHONE = "phone", _("Phone number")
    WECHAT_OPENID = "wechat_openid", _("WeChat openid")
    WECHAT_UNIONID = "wechat_unionid", _("WeChat unionid")
    TMALL_BUYER_ID = "tmall_buyer_id", _("Tmall buyer id")
    JD_BUYER_ID = "jd_buyer_id", _("JD buyer id")
    APP_DEVICE_ID = "app_device_id", _("App device id")
    PUSH_TOKEN = "push_token", _("App push token")
    EXTERNAL_ID = "external_id", _("Customer external id")


identity_kind_validator = RegexValidator(
    r"^([a-z][a-z0-9_]{0,31}|channel:[a-z0-9_.-]{1,32})$",
    _("Identity kind must be a known kind (email, phone, wechat_openid, ...) or channel:<name>."),
)


def validate_time_zone(value: str) -> None:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValidationError(
            _("%(value)s is not an IANA time zone (e.g. Asia/Shanghai)."), params={"value": value}
        )


def default_time_zone() -> str:
    return settings.DEFAULT_CUSTOMER_TIME_ZONE


# The profile every writer may set (API upsert, CSV import, admin form, a merge filling gaps): what the
# person told us about themselves, then how they were acquired. One list, so a new profile field is added
# once.
PROFILE_PERSONAL_FIELDS = ("name", "email", "phone", "birthday", "gender", "city", "region", "time_zone")
PROFILE_ACQUISITION_FIELDS = ("acquisition_channel", "utm_source", "utm_medium", "utm_campaign")
PROFILE_FIELDS = (*PROFILE_PERSONAL_FIELDS, *PROFILE_ACQUISITION_FIELDS)


class ConsentChannel(models.TextChoices):
    """Channels a message can be sent on; each needs its own consent."""

    EMAIL = "email", _("Email")
    SMS = "sms", _("SMS")
    WECHAT = "wechat", _("WeChat")
    PUSH = "push", _("Push")


class Customer(models.Model):
    class Gender(models.TextChoices):
        UNKNOWN = "", _("Unknown")
        FEMALE = "female", _("Female")
        MALE = "male", _("Male")
        OTHER = "other", _("Other")

    # Unique, email and phone indexed: by Meta below, one index each (see migration crm/0013).
    external_id = models.CharField(_("external id"), max_length=64, null=True, blank=True)
    name = models.CharField(_("name"), max_length=200, blank=True)
    email = models.EmailField(_("email"), blank=True)
    phone = models.CharField(_("phone"), max_length=32, blank=True)
    birthday = models.DateField(_("birthday"), null=True, blank=True)
    gender = models.CharField(_("gender"), max_length=8, choices=Gender.choices, blank=True, default="")
    city = models.CharField(_("city"), max_length=100, blank=True)
    region = models.CharField(_("region"), max_length=100, blank=True)
    time_zone = models.CharField(
        _("time zone"), max_length=64, default=default_time_zone, validators=[validate_time_zone]
    )
    acquisition_channel = models.CharField(
        _("acquisition channel"), max_length=16, choices=Channel.choices, blank=True
    )
    utm_source = models.CharField(_("utm source"), max_length=100, blank=True)
    # What messages speak to the customer in, and by; blank: the business's default language
    # (settings.MESSAGING_DEFAULT_LANGUAGE) and the best channel the customer consented to.
    language = models.CharField(
        _("language"), max_length=16, choices=settings.LANGUAGES, blank=True, default=""
    )
    preferred_channel = models.CharField(
        _("preferred channel"), max_length=16, choices=ConsentChannel.choices, blank=True, default=""
    )
    utm_medium = models.CharField(_("utm medium"), max_length=100, blank=True)
    utm_campaign = models.CharField(_("utm campaign"), max_length=100, blank=True)
    created_at = models.DateTimeField(_("created at"), default=timezone.now, db_index=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)
    erased_at = models.DateTimeField(_("erased at"), null=True, blank=True)

    # The history is read by customer id only (the 360 page, the audit). Its copies of the lookup indexes
    # (external id, email, phone: two each on PostgreSQL; created_at) cost every customer write seven
    # index inserts for nothing, a large part of a first order import's database time (see BENCHMARKS.md,
    # order CSV import).
    history = HistoricalRecords(
        excluded_fields=["updated_at"], no_db_index=["external_id", "email", "phone", "created_at"]
    )

    class Meta:
        verbose_name = _("customer")
        verbose_name_plural = _("customers")
        ordering = ["-id"]
        indexes = [
            # Segment conditions on the city ("in Shanghai, Beijing or Hangzhou") read this index alone
            # instead of scanning every (wide) customer row; it carries the id for the joins that follow.
            models.Index(
                fields=["city"],
                include=["id"],
                condition=Q(erased_at__isnull=True),
                name="crm_customer_city_live_idx",
            ),
            # Email and phone are looked up whole and by prefix (the admin search): one pattern-ops index
            # serves both, where `db_index=True` made two on PostgreSQL (one per kind of lookup).
            models.Index(fields=["email"], name="crm_customer_email_like", opclasses=["varchar_pattern_ops"]),
            models.Index(fields=["phone"], name="crm_customer_phone_like", opclasses=["varchar_pattern_ops"]),
        ]
        constraints = [
            # A constraint, not `unique=True`, which also makes a LIKE-pattern index nothing uses (external
            # ids are looked up whole).
            models.UniqueConstraint(fields=["external_id"], name="crm_customer_external_id_uniq"),
        ]

    def __str__(self) -> str:
        return self.name or self.email or self.phone or self.external_id or f"#{self.pk}"

    @property
    def is_erased(self) -> bool:
        return self.erased_at is not None


class CustomerIdentity(models.Model):
    """One identifier that points at one customer. (kind, value) is unique: ingesting data carrying
    identifiers of two different customers is what triggers a merge."""

    customer = models.ForeignKey(
        Customer, on_delete=models.CASCADE, related_name="identities", verbose_name=_("customer")
    )
    kind = models.CharField(_("kind"), max_length=40, validators=[identity_kind_validator])
    value = models.CharField(_("value"), max_length=200)
    source = models.CharField(_("source"), max_length=64, blank=True)
    created_at = models.DateTimeField(_("created at"), default=timezone.now)

    history = HistoricalRecords()

    class Meta:
        verbose_name = _("identity")
        verbose_name_plural = _("identities")
        constraints = [models.UniqueConstraint(fields=["kind", "value"], name="crm_identity_kind_value_uniq")]
        indexes = [models.Index(fields=["value"], name="crm_identity_value_idx")]

    def __str__(self) -> str:
        return f"{self.kind}:{self.value}"

    @property
    def kind_display(self) -> str:
        """The kind in the reader's language; a `channel:<name>` kind is shown as typed."""
        try:
            return str(IdentityKind(self.kind).label)
        except ValueError:
            return self.kind


class CustomerMerge(models.Model):
    """A record that one customer was folded into another, with what the loser looked like."""

    class Trigger(models.TextChoices):
        IDENTITY = "identity", _("Shared identifier at ingestion")
        MANUAL = "manual", _("Merged by staff")

    survivor = models.ForeignKey(
        Customer,
        on_delete=models.CASCADE,
        related_name="merges_absorbed",
        verbose_name=_("survivor (kept customer)"),
    )
    merged_customer_id = models.BigIntegerField(_("merged customer id"))
    merged_snapshot = models.JSONField(_("merged customer as it was"))
    moved = models.JSONField(_("rows moved"), default=dict)
    trigger = models.CharField(_("trigger"), max_length=16, choices=Trigger.choices)
    reason = models.CharField(_("reason"), max_length=300, blank=True)
    performed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        verbose_name=_("performed by"),
    )
    performed_at = models.DateTimeField(_("performed at"), default=timezone.now)

    class Meta:
        verbose_name = _("customer merge")
        verbose_name_plural = _("customer merges")
        ordering = ["-performed_at"]

    def __str__(self) -> str:
        return f"#{self.merged_customer_id} → #{self.survivor_id}"
