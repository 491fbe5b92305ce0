"""Message templates, written by staff in Jinja2 and rendered in a sandbox (campaigns/rendering.py). Every
save that changes the content makes a new version; a message records the version it was rendered from."""

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from simple_history.models import HistoricalRecords

from campaigns.models.channels import Channel


class MessageTemplate(models.Model):
    class Purpose(models.TextChoices):
        MARKETING = "marketing", _("Marketing")
        TRANSACTIONAL = "transactional", _("Transactional")

    code = models.CharField(
        _("code"),
        max_length=64,
        unique=True,
        validators=[
            RegexValidator(r"^[a-z0-9][a-z0-9_.-]*$", _("Lower-case letters, digits, _ . and - only."))
        ],
        help_text=_("How code and the send API name this template, e.g. order_shipped."),
    )
    name = models.CharField(_("name"), max_length=200)
    channel = models.CharField(_("channel"), max_length=16, choices=Channel.choices)
    purpose = models.CharField(
        _("purpose"), max_length=16, choices=Purpose.choices, default=Purpose.MARKETING
    )
    description = models.TextField(_("description"), blank=True)
    coupon_programme = models.ForeignKey(
        "loyalty.CouponProgramme",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        verbose_name=_("coupon programme"),
        help_text=_("A template that shows {{ coupon.code }} issues each message a code of this programme."),
    )
    current_version = models.ForeignKey(
        "campaigns.TemplateVersion",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        verbose_name=_("current version"),
    )
    created_at = models.DateTimeField(_("created at"), default=timezone.now)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)
    history = HistoricalRecords()

    class Meta:
        verbose_name = _("message template")
        verbose_name_plural = _("message templates")
        ordering = ["code"]

    def __str__(self) -> str:
        return f"{self.name} ({self.code})"


class TemplateVersion(models.Model):
    """An immutable version of a template's content, per language:

    - email: {"zh-hans": {"subject": ..., "html": ..., "text": ...}, "en": {...}}
    - sms: {"zh-hans": {"text": ...}, ...}
    - push: {"zh-hans": {"title": ..., "body": ...}, ...}
    - wechat: {"zh-hans": {"template_id": ..., "kind": "template"|"subscribe", "page": ..., "url": ...,
      "data": {"thing1": "{{ ... }}", ...}}, ...}

    Each string is Jinja2 source. The languages are the customer languages (settings.LANGUAGES); a customer
    whose language has no variant gets the first one (the business's default language)."""

    template = models.ForeignKey(
        MessageTemplate, on_delete=models.CASCADE, related_name="versions", verbose_name=_("template")
    )
    number = models.PositiveIntegerField(_("version"))
    content = models.JSONField(_("content"))
    fingerprint = models.CharField(_("fingerprint"), max_length=64, editable=False)
    created_at = models.DateTimeField(_("created at"), default=timezone.now)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        verbose_name=_("created by"),
    )

    class Meta:
        verbose_name = _("template version")
        verbose_name_plural = _("template versions")
        ordering = ["template", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["template", "number"], name="campaigns_template_version_uniq")
        ]

    def __str__(self) -> str:
        return f"{self.template.code} v{self.number}"


class MessageCoupon(models.Model):
    """The coupon issued for one message: a message's code is issued once, whatever is retried (a
    render after a crash reads this row back instead of issuing a second code)."""

    message = models.OneToOneField(
        "campaigns.Message",
        primary_key=True,
        on_delete=models.CASCADE,
        related_name="+",
        verbose_name=_("message"),
    )
    coupon = models.OneToOneField(
        "loyalty.Coupon", on_delete=models.PROTECT, related_name="+", verbose_name=_("coupon")
    )
    issued_at = models.DateTimeField(_("issued at"), default=timezone.now)

    class Meta:
        verbose_name = _("message coupon")
        verbose_name_plural = _("message coupons")

    def __str__(self) -> str:
        return f"#{self.message_id}: {self.coupon_id}"
