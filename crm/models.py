"""The customer data platform: one record per person, what identifies them, what they consented to,
what they bought and what they did.

Other apps read from here and never the other way round (see ../shared/DESIGN.md §4). News travels
rightwards through the append-only `Event` log.
"""

import zoneinfo

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator, RegexValidator
from django.db import models
from django.db.models import F, Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from simple_history.models import HistoricalRecords

from crm.db import CurrentTransactionId


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


class ConsentChannel(models.TextChoices):
    """Channels a message can be sent on; each needs its own consent."""

    EMAIL = "email", _("Email")
    SMS = "sms", _("SMS")
    WECHAT = "wechat", _("WeChat")
    PUSH = "push", _("Push")


class IdentityKind(models.TextChoices):
    """Well-known identifier kinds. Any other named channel may be used as `channel:<name>`."""

    EMAIL = "email", _("Email address")
    PHONE = "phone", _("Phone number")
    WECHAT_OPENID = "wechat_openid", _("WeChat openid")
    WECHAT_UNIONID = "wechat_unionid", _("WeChat unionid")
    TMALL_BUYER_ID = "tmall_buyer_id", _("Tmall buyer id")
    JD_BUYER_ID = "jd_buyer_id", _("JD buyer id")
    APP_DEVICE_ID = "app_device_id", _("App device id")
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
    utm_medium = models.CharField(_("utm medium"), max_length=100, blank=True)
    utm_campaign = models.CharField(_("utm campaign"), max_length=100, blank=True)
    created_at = models.DateTimeField(_("created at"), default=timezone.now, db_index=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)
    erased_at = models.DateTimeField(_("erased at"), null=True, blank=True)

    # The history is read by customer id only (the 360 page, the audit). Its copies of the lookup indexes
    # (external id, email, phone: two each on PostgreSQL; created_at) cost every customer write seven
    # index inserts for nothing: a third of a first order import's database time went to indexes.
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


class ConsentStatus(models.TextChoices):
    OPTED_IN = "opted_in", _("Opted in")
    OPTED_OUT = "opted_out", _("Opted out")


class Consent(models.Model):
    """The current consent of one customer on one channel. No row means no consent."""

    # Lookups by customer use the (customer, channel) unique index; a customer-only one would be redundant.
    customer = models.ForeignKey(
        Customer,
        on_delete=models.CASCADE,
        related_name="consents",
        db_index=False,
        verbose_name=_("customer"),
    )
    channel = models.CharField(_("channel"), max_length=16, choices=ConsentChannel.choices)
    status = models.CharField(_("status"), max_length=16, choices=ConsentStatus.choices)
    changed_at = models.DateTimeField(_("changed at"))
    source = models.CharField(_("source"), max_length=100, blank=True)

    history = HistoricalRecords()

    class Meta:
        verbose_name = _("consent")
        verbose_name_plural = _("consents")
        constraints = [
            models.UniqueConstraint(fields=["customer", "channel"], name="crm_consent_customer_channel_uniq")
        ]
        indexes = [
            # "Opted in to e-mail" in a segment: the customers come from this index alone.
            models.Index(
                fields=["channel", "status"], include=["customer"], name="crm_consent_chan_status_idx"
            )
        ]

    def __str__(self) -> str:
        return f"{self.channel}: {self.get_status_display()}"


class ConsentChange(models.Model):
    """Append-only history of consent: every opt-in and opt-out, when, from where and by whom."""

    customer = models.ForeignKey(
        Customer, on_delete=models.CASCADE, related_name="consent_changes", verbose_name=_("customer")
    )
    channel = models.CharField(_("channel"), max_length=16, choices=ConsentChannel.choices)
    status = models.CharField(_("status"), max_length=16, choices=ConsentStatus.choices)
    previous_status = models.CharField(_("previous status"), max_length=16, blank=True)
    occurred_at = models.DateTimeField(_("occurred at"))
    source = models.CharField(_("source"), max_length=100, blank=True)
    changed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        verbose_name=_("changed by"),
    )
    recorded_at = models.DateTimeField(_("recorded at"), default=timezone.now)

    class Meta:
        verbose_name = _("consent change")
        verbose_name_plural = _("consent history")
        ordering = ["-occurred_at", "-id"]
        indexes = [models.Index(fields=["customer", "channel", "-occurred_at"], name="crm_consentchange_idx")]

    def __str__(self) -> str:
        return f"{self.channel}: {self.previous_status or '-'} → {self.status}"


class Product(models.Model):
    sku = models.CharField(_("SKU"), max_length=64, unique=True)
    name = models.CharField(_("name"), max_length=200)
    category = models.CharField(_("category"), max_length=100, blank=True, db_index=True)
    price = models.DecimalField(
        _("price"), max_digits=12, decimal_places=2, validators=[MinValueValidator(0)]
    )
    currency = models.CharField(_("currency"), max_length=3, default="CNY")
    created_at = models.DateTimeField(_("created at"), default=timezone.now)

    class Meta:
        verbose_name = _("product")
        verbose_name_plural = _("products")
        constraints = [models.CheckConstraint(condition=Q(price__gte=0), name="crm_product_price_nonneg")]

    def __str__(self) -> str:
        return f"{self.name} ({self.sku})"


class OrderStatus(models.TextChoices):
    PAID = "paid", _("Paid")
    PARTIALLY_REFUNDED = "partially_refunded", _("Partially refunded")
    REFUNDED = "refunded", _("Refunded")


class Order(models.Model):
    """A paid order, idempotent on its external id: `fingerprint` is a hash of what was ingested, so a
    repeat of the same order changes nothing and a different order under the same id is refused."""

    # Unique by a pattern-ops index (Meta): it serves the lookups, ON CONFLICT and the admin's prefix
    # search; `unique=True` made two indexes for that on PostgreSQL.
    external_id = models.CharField(_("external order id"), max_length=100)
    # No index of its own: crm_order_cust_placed_cov_idx starts with customer_id and serves every lookup
    # by customer, and one index less is one insert less per imported order.
    customer = models.ForeignKey(
        Customer, on_delete=models.PROTECT, related_name="orders", db_index=False, verbose_name=_("customer")
    )
    channel = models.CharField(_("channel"), max_length=16, choices=Channel.choices, blank=True)
    store = models.CharField(_("store"), max_length=100, blank=True)
    placed_at = models.DateTimeField(_("placed at"))
    currency = models.CharField(_("currency"), max_length=3, default="CNY")
    total = models.DecimalField(_("total"), max_digits=14, decimal_places=2)
    refunded_amount = models.DecimalField(_("refunded amount"), max_digits=14, decimal_places=2, default=0)
    status = models.CharField(
        _("status"), max_length=24, choices=OrderStatus.choices, default=OrderStatus.PAID
    )
    fingerprint = models.CharField(_("fingerprint"), max_length=64, editable=False)
    created_at = models.DateTimeField(_("created at"), default=timezone.now)

    class Meta:
        verbose_name = _("order")
        verbose_name_plural = _("orders")
        ordering = ["-placed_at"]
        indexes = [
            # Covering: a segment condition on a customer's orders in a window (count, net spend, per
            # channel) reads only this index, never the order rows.
            models.Index(
                fields=["customer", "placed_at"],
                include=["status", "channel", "total", "refunded_amount"],
                name="crm_order_cust_placed_cov_idx",
            )
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["external_id"], name="crm_order_external_id_uniq", opclasses=["varchar_pattern_ops"]
            ),
            models.CheckConstraint(condition=Q(total__gte=0), name="crm_order_total_nonneg"),
            models.CheckConstraint(
                condition=Q(refunded_amount__gte=0) & Q(refunded_amount__lte=F("total")),
                name="crm_order_refund_within_total",
            ),
        ]

    def __str__(self) -> str:
        return self.external_id


class OrderLine(models.Model):
    # The unique (order, line_no) index below serves every lookup by order; an order-only index as well
    # would be one more index entry to write for each line.
    order = models.ForeignKey(
        Order, on_delete=models.CASCADE, related_name="lines", db_index=False, verbose_name=_("order")
    )
    line_no = models.PositiveIntegerField(_("line"))
    product = models.ForeignKey(
        Product,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        verbose_name=_("product"),
    )
    sku = models.CharField(_("SKU"), max_length=64, blank=True)
    name = models.CharField(_("name"), max_length=200, blank=True)
    category = models.CharField(_("category"), max_length=100, blank=True)
    quantity = models.PositiveIntegerField(_("quantity"), default=1)
    unit_price = models.DecimalField(_("unit price"), max_digits=12, decimal_places=2)
    line_total = models.DecimalField(_("line total"), max_digits=14, decimal_places=2)
    refunded_quantity = models.PositiveIntegerField(_("refunded quantity"), default=0)

    class Meta:
        verbose_name = _("order line")
        verbose_name_plural = _("order lines")
        constraints = [
            models.UniqueConstraint(fields=["order", "line_no"], name="crm_orderline_order_line_uniq"),
            models.CheckConstraint(
                condition=Q(refunded_quantity__lte=F("quantity")), name="crm_orderline_refund_within_qty"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.sku} × {self.quantity}"


class Refund(models.Model):
    """A refund against an order, idempotent on its external id."""

    order = models.ForeignKey(
        Order, on_delete=models.PROTECT, related_name="refunds", verbose_name=_("order")
    )
    external_id = models.CharField(_("external refund id"), max_length=100, unique=True)
    amount = models.DecimalField(_("amount"), max_digits=14, decimal_places=2)
    refunded_at = models.DateTimeField(_("refunded at"))
    reason = models.CharField(_("reason"), max_length=300, blank=True)
    lines = models.JSONField(_("refunded lines"), default=list, blank=True)
    fingerprint = models.CharField(_("fingerprint"), max_length=64, editable=False)
    created_at = models.DateTimeField(_("created at"), default=timezone.now)

    class Meta:
        verbose_name = _("refund")
        verbose_name_plural = _("refunds")
        constraints = [models.CheckConstraint(condition=Q(amount__gt=0), name="crm_refund_amount_pos")]

    def __str__(self) -> str:
        return self.external_id


class Event(models.Model):
    """Append-only behaviour log. The spine other apps (journeys, loyalty) read by cursor (`id`).

    `customer` is cleared when a customer is erased: the behaviour stays for aggregate statistics but
    no longer points at a person."""

    customer = models.ForeignKey(
        Customer,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="events",
        # The two (customer, ...) indexes below serve every lookup by customer; a customer-only index
        # as well would be one more index to write on each event for nothing.
        db_index=False,
        verbose_name=_("customer"),
    )
    type = models.CharField(_("type"), max_length=64)
    properties = models.JSONField(_("properties"), default=dict, blank=True)
    occurred_at = models.DateTimeField(_("occurred at"))
    channel = models.CharField(_("channel"), max_length=16, choices=Channel.choices, blank=True)
    # Unique where given (the constraint below): most events (orders, tier changes, lifecycle stages,
    # messages) have none, and a plain unique column would index every one of their NULLs, twice on
    # PostgreSQL (Django adds a LIKE-pattern index to a unique CharField; nothing searches these by prefix).
    external_id = models.CharField(_("external event id"), max_length=100, null=True, blank=True)
    received_at = models.DateTimeField(_("received at"), default=timezone.now)
    # Which transaction wrote the event (crm.db.CurrentTransactionId: a column default, so COPY and raw
    # INSERTs get it too). The log is read in (xact_id, id) order below the oldest transaction still
    # running, which an id alone cannot give: ids are handed out at insert, not at commit.
    xact_id = models.BigIntegerField(
        _("writing transaction"), db_default=CurrentTransactionId(), editable=False
    )

    class Meta:
        verbose_name = _("behaviour event")
        verbose_name_plural = _("behaviour events")
        indexes = [
            models.Index(fields=["customer", "-occurred_at"], name="crm_event_customer_time_idx"),
            # "Did / did not do X (N times) in the last D days" for one customer is one range of this
            # index (segments probe it customer by customer), whatever else the customer did.
            models.Index(fields=["customer", "type", "occurred_at"], name="crm_event_cust_type_time_idx"),
            models.Index(fields=["type", "occurred_at"], name="crm_event_type_time_idx"),
            models.Index(fields=["xact_id", "id"], name="crm_event_log_order_idx"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["external_id"],
                condition=models.Q(external_id__isnull=False),
                name="crm_event_external_id_uniq",
                violation_error_message=_("An event with this external id is already stored."),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.type} @ {self.occurred_at:%Y-%m-%d %H:%M}"

    def save(self, *args, **kwargs):
        # The log is append-only; only erasure (a queryset update) may detach the customer.
        if not self._state.adding:
            raise ValidationError(_("Behaviour events are append-only and cannot be edited."))
        super().save(*args, **kwargs)


class EventLogCursor(models.Model):
    """How far one consumer of the behaviour-event log (loyalty's accrual, the delivery pipeline's notices,
    journey triggers) has read: the (xact_id, id) of the last event it was given. Read and advanced only
    by crm.services.event_log.event_log_read, in the consumer's own transaction."""

    consumer = models.CharField(_("consumer"), max_length=64, primary_key=True)
    last_xact_id = models.BigIntegerField(_("last transaction id"), default=0)
    last_event_id = models.BigIntegerField(_("last event id"), default=0)
    events_read = models.BigIntegerField(_("events read"), default=0)
    updated_at = models.DateTimeField(_("updated at"), default=timezone.now)

    class Meta:
        verbose_name = _("event-log cursor")
        verbose_name_plural = _("event-log cursors")

    def __str__(self) -> str:
        return f"{self.consumer}: {self.last_xact_id}/{self.last_event_id}"


class Tag(models.Model):
    class Kind(models.TextChoices):
        MANUAL = "manual", _("Manual")
        RULE = "rule", _("Rule-applied")

    name = models.CharField(_("name"), max_length=64, unique=True)
    kind = models.CharField(_("kind"), max_length=8, choices=Kind.choices, default=Kind.MANUAL)
    description = models.CharField(_("description"), max_length=300, blank=True)
    created_at = models.DateTimeField(_("created at"), default=timezone.now)

    class Meta:
        verbose_name = _("tag")
        verbose_name_plural = _("tags")
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class CustomerTag(models.Model):
    # Indexed by (customer, tag) through the unique constraint and by (tag, customer) below: the foreign
    # keys' single-column indexes would be redundant with them.
    customer = models.ForeignKey(
        Customer,
        on_delete=models.CASCADE,
        related_name="customer_tags",
        db_index=False,
        verbose_name=_("customer"),
    )
    tag = models.ForeignKey(
        Tag, on_delete=models.CASCADE, related_name="customer_tags", db_index=False, verbose_name=_("tag")
    )
    source = models.CharField(_("source"), max_length=32, default="manual")
    added_at = models.DateTimeField(_("added at"), default=timezone.now)

    history = HistoricalRecords()

    class Meta:
        verbose_name = _("customer tag")
        verbose_name_plural = _("customer tags")
        constraints = [models.UniqueConstraint(fields=["customer", "tag"], name="crm_customertag_uniq")]
        indexes = [
            # "Has tag 5" / "has none of tags 5, 7" in a segment: the customers come from this index alone.
            models.Index(fields=["tag", "customer"], name="crm_customertag_tag_cust_idx")
        ]

    def __str__(self) -> str:
        return str(self.tag_id)


class PrivacyRequest(models.Model):
    """A PIPL/GDPR request carried out on one customer: export everything, or erase."""

    class Kind(models.TextChoices):
        EXPORT = "export", _("Export")
        ERASE = "erase", _("Erase")

    customer = models.ForeignKey(
        Customer, on_delete=models.PROTECT, related_name="privacy_requests", verbose_name=_("customer")
    )
    kind = models.CharField(_("kind"), max_length=8, choices=Kind.choices)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        verbose_name=_("requested by"),
    )
    via = models.CharField(_("via"), max_length=16, default="admin")
    reason = models.CharField(_("reason"), max_length=300, blank=True)
    created_at = models.DateTimeField(_("created at"), default=timezone.now)
    summary = models.JSONField(_("summary"), default=dict, blank=True)

    class Meta:
        verbose_name = _("privacy request")
        verbose_name_plural = _("privacy requests")
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.kind} #{self.customer_id}"


class ApiKey(models.Model):
    """A server-to-server credential. Only a SHA-256 of the secret is stored; the secret is shown
    once, when the key is created."""

    class Scope(models.TextChoices):
        CUSTOMERS_READ = "customers:read", _("Read customers")
        CUSTOMERS_WRITE = "customers:write", _("Write customers")
        EVENTS_WRITE = "events:write", _("Write behaviour events")
        ORDERS_WRITE = "orders:write", _("Write orders and refunds")
        COUPONS_REDEEM = "coupons:redeem", _("Validate and redeem coupons (store)")

    name = models.CharField(_("name"), max_length=100)
    prefix = models.CharField(_("prefix"), max_length=16, unique=True, editable=False)
    key_hash = models.CharField(_("key hash"), max_length=64, editable=False)
    scopes = models.JSONField(_("scopes"), default=list)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        verbose_name=_("created by"),
    )
    created_at = models.DateTimeField(_("created at"), default=timezone.now)
    last_used_at = models.DateTimeField(_("last used at"), null=True, blank=True)
    revoked_at = models.DateTimeField(_("revoked at"), null=True, blank=True)

    class Meta:
        verbose_name = _("API key")
        verbose_name_plural = _("API keys")

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"


class ImportJob(models.Model):
    """A CSV import, run by a Celery worker so a long file shows progress and survives the request."""

    class Kind(models.TextChoices):
        CUSTOMERS = "customers", _("Customers")
        ORDERS = "orders", _("Orders")

    class Status(models.TextChoices):
        QUEUED = "queued", _("Queued")
        RUNNING = "running", _("Running")
        DONE = "done", _("Done")
        FAILED = "failed", _("Failed")

    kind = models.CharField(_("kind"), max_length=16, choices=Kind.choices)
    file = models.FileField(_("file"), upload_to="imports/%Y/%m/")
    original_name = models.CharField(_("file name"), max_length=255, blank=True)
    dry_run = models.BooleanField(_("dry run"), default=False)
    status = models.CharField(_("status"), max_length=8, choices=Status.choices, default=Status.QUEUED)
    total_rows = models.PositiveIntegerField(_("rows"), default=0)
    processed_rows = models.PositiveIntegerField(_("rows processed"), default=0)
    created_count = models.PositiveIntegerField(_("created"), default=0)
    updated_count = models.PositiveIntegerField(_("updated"), default=0)
    unchanged_count = models.PositiveIntegerField(_("unchanged"), default=0)
    error_count = models.PositiveIntegerField(_("rejected rows"), default=0)
    errors = models.JSONField(_("errors"), default=list, blank=True)
    message = models.TextField(_("message"), blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        verbose_name=_("created by"),
    )
    created_at = models.DateTimeField(_("created at"), default=timezone.now)
    finished_at = models.DateTimeField(_("finished at"), null=True, blank=True)

    class Meta:
        verbose_name = _("import job")
        verbose_name_plural = _("import jobs")
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.kind} import {self.original_name}"


class Heartbeat(models.Model):
    """Liveness marks written by periodic tasks; /healthz reads when beat last ran from here."""

    name = models.CharField(_("name"), max_length=64, primary_key=True)
    beat_at = models.DateTimeField(_("last beat at"))

    def __str__(self) -> str:
        return self.name


# Customer intelligence and segments live in modules of their own; importing them here registers their
# models with the crm app.
from crm.models_metrics import *  # noqa: E402, F403
from crm.models_segments import *  # noqa: E402, F403
