"""Rewards catalogue, coupons, referrals and member credentials.

What a member can spend points on (`Reward`), what spending them produces (`RewardRedemption` issuing a
`Coupon`), the coupon programmes the store validates and redeems against, who referred whom, and the
credentials members use for the portal and the app. Member credentials are deliberately not Django users:
a member is a `crm.Customer`, and staff authentication never sees them.
"""

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

__all__ = [
    "Coupon",
    "CouponBatch",
    "CouponProgramme",
    "CouponRedemption",
    "MemberApiToken",
    "MemberLogin",
    "MemberMagicLinkUse",
    "Referral",
    "ReferralCode",
    "Reward",
    "RewardRedemption",
]


class CouponProgramme(models.Model):
    """What a family of coupons is worth and when and how often each code may be used."""

    class DiscountKind(models.TextChoices):
        AMOUNT = "amount", _("Amount off")
        PERCENT = "percent", _("Percent off")

    name = models.CharField(_("name"), max_length=200)
    description = models.TextField(_("description"), blank=True)
    discount_kind = models.CharField(
        _("discount kind"), max_length=8, choices=DiscountKind.choices, default=DiscountKind.AMOUNT
    )
    discount_value = models.DecimalField(
        _("discount"),
        max_digits=12,
        decimal_places=2,
        help_text=_("An amount in the programme's currency, or a percentage (1–100)."),
    )
    max_discount = models.DecimalField(
        _("maximum discount"),
        max_digits=12,
        decimal_places=2,
        null=True,
        blank=True,
        help_text=_("Caps a percentage discount; empty means no cap."),
    )
    currency = models.CharField(_("currency"), max_length=3, default="CNY")
    min_spend = models.DecimalField(_("minimum spend"), max_digits=12, decimal_places=2, default=0)
    uses_per_code = models.PositiveIntegerField(
        _("uses per code"),
        null=True,
        blank=True,
        default=1,
        help_text=_("1 for single-use codes; empty for unlimited."),
    )
    valid_from = models.DateTimeField(_("valid from"), null=True, blank=True)
    valid_until = models.DateTimeField(_("valid until"), null=True, blank=True)
    valid_days_after_issue = models.PositiveIntegerField(
        _("valid days after issue"),
        null=True,
        blank=True,
        help_text=_("For coupons issued to a member (rewards): they expire this many days after issue."),
    )
    is_active = models.BooleanField(_("active"), default=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        verbose_name=_("created by"),
    )
    created_at = models.DateTimeField(_("created at"), default=timezone.now)

    class Meta:
        verbose_name = _("coupon programme")
        verbose_name_plural = _("coupon programmes")
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(discount_value__gt=0), name="loyalty_couponprogramme_discount_pos"
            ),
            models.CheckConstraint(
                condition=~Q(discount_kind="percent") | Q(discount_value__lte=100),
                name="loyalty_couponprogramme_percent_le_100",
            ),
            models.CheckConstraint(
                condition=Q(min_spend__gte=0), name="loyalty_couponprogramme_min_spend_nonneg"
            ),
            models.CheckConstraint(
                condition=Q(uses_per_code__isnull=True) | Q(uses_per_code__gt=0),
                name="loyalty_couponprogramme_uses_pos",
            ),
            models.CheckConstraint(
                condition=Q(valid_from__isnull=True)
                | Q(valid_until__isnull=True)
                | Q(valid_until__gt=F("valid_from")),
                name="loyalty_couponprogramme_validity_order",
            ),
        ]

    def __str__(self) -> str:
        return self.name


class CouponBatch(models.Model):
    """One bulk generation of codes, so a batch can be exported and traced to who made it."""

    programme = models.ForeignKey(
        CouponProgramme, on_delete=models.PROTECT, related_name="batches", verbose_name=_("coupon programme")
    )
    quantity = models.PositiveIntegerField(_("quantity"))
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        verbose_name=_("created by"),
    )
    created_at = models.DateTimeField(_("created at"), default=timezone.now)

    class Meta:
        verbose_name = _("coupon batch")
        verbose_name_plural = _("coupon batches")
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.programme} × {self.quantity}"


class Coupon(models.Model):
    """One code. `uses_count` only grows by a conditional update under a row lock; the check constraint
    is the last line of defence against a code used more often than it may be."""

    programme = models.ForeignKey(
        CouponProgramme, on_delete=models.PROTECT, related_name="coupons", verbose_name=_("coupon programme")
    )
    batch = models.ForeignKey(
        CouponBatch,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="coupons",
        verbose_name=_("coupon batch"),
    )
    code = models.CharField(_("code"), max_length=16, unique=True)
    customer = models.ForeignKey(
        "crm.Customer",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="coupons",
        verbose_name=_("customer"),
        help_text=_("The member it was issued to; empty for codes handed out in bulk."),
    )
    max_uses = models.PositiveIntegerField(_("maximum uses"), null=True, blank=True)
    uses_count = models.PositiveIntegerField(_("uses"), default=0)
    valid_from = models.DateTimeField(_("valid from"), null=True, blank=True)
    valid_until = models.DateTimeField(_("valid until"), null=True, blank=True)
    issued_at = models.DateTimeField(_("issued at"), default=timezone.now)
    revoked_at = models.DateTimeField(_("revoked at"), null=True, blank=True)

    class Meta:
        verbose_name = _("coupon")
        verbose_name_plural = _("coupons")
        ordering = ["-issued_at", "-id"]
        # Apart from view_coupon: a file of codes spends them for whoever holds it, so reading coupons in
        # the admin does not let a role download them (config/roles.py gives it to administrators only).
        permissions = [("export_coupon", _("Can export coupon codes"))]
        indexes = [models.Index(fields=["customer", "-issued_at"], name="loyalty_coupon_customer_idx")]
        constraints = [
            models.CheckConstraint(
                condition=Q(max_uses__isnull=True) | Q(uses_count__lte=F("max_uses")),
                name="loyalty_coupon_uses_within_max",
            ),
        ]

    def __str__(self) -> str:
        return self.code

    def effective_window(self, programme: CouponProgramme | None = None):
        """(valid_from, valid_until): the narrower of the coupon's own and its programme's."""
        programme = programme or self.programme
        starts = [d for d in (self.valid_from, programme.valid_from) if d]
        ends = [d for d in (self.valid_until, programme.valid_until) if d]
        return (max(starts) if starts else None, min(ends) if ends else None)

    @property
    def uses_left(self) -> int | None:
        return None if self.max_uses is None else max(self.max_uses - self.uses_count, 0)


class CouponRedemption(models.Model):
    """A coupon applied to one store order. (coupon, order_reference) is unique, so the store retrying
    the same order gets the first answer back instead of using the code twice."""

    coupon = models.ForeignKey(
        Coupon, on_delete=models.PROTECT, related_name="redemptions", verbose_name=_("coupon")
    )
    order_reference = models.CharField(_("order reference"), max_length=100)
    customer = models.ForeignKey(
        "crm.Customer",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="coupon_redemptions",
        verbose_name=_("customer"),
    )
    order_total = models.DecimalField(_("order total"), max_digits=14, decimal_places=2)
    currency = models.CharField(_("currency"), max_length=3)
    discount = models.DecimalField(_("discount"), max_digits=14, decimal_places=2)
    store = models.CharField(_("store"), max_length=100, blank=True)
    api_key = models.ForeignKey(
        "crm.ApiKey",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        verbose_name=_("API key"),
    )
    redeemed_at = models.DateTimeField(_("redeemed at"), default=timezone.now)

    class Meta:
        verbose_name = _("coupon redemption")
        verbose_name_plural = _("coupon redemptions")
        ordering = ["-redeemed_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["coupon", "order_reference"], name="loyalty_couponredemption_order_uniq"
            ),
            models.CheckConstraint(condition=Q(discount__gte=0), name="loyalty_couponredemption_disc_nonneg"),
        ]

    def __str__(self) -> str:
        return f"{self.coupon_id} @ {self.order_reference}"


class Reward(models.Model):
    """Something in the catalogue a member buys with points; buying it issues a coupon of `coupon_programme`."""

    name = models.CharField(_("name"), max_length=200)
    description = models.TextField(_("description"), blank=True)
    points_price = models.PositiveIntegerField(_("points price"))
    coupon_programme = models.ForeignKey(
        CouponProgramme, on_delete=models.PROTECT, related_name="rewards", verbose_name=_("coupon programme")
    )
    stock = models.PositiveIntegerField(
        _("stock"), null=True, blank=True, help_text=_("Empty means unlimited.")
    )
    per_member_limit = models.PositiveIntegerField(
        _("limit per member"), null=True, blank=True, help_text=_("Empty means no limit.")
    )
    min_tier = models.ForeignKey(
        "loyalty.Tier",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        verbose_name=_("lowest tier"),
        help_text=_("Only members at this tier or above may redeem; empty means everyone."),
    )
    valid_from = models.DateTimeField(_("available from"), null=True, blank=True)
    valid_until = models.DateTimeField(_("available until"), null=True, blank=True)
    is_active = models.BooleanField(_("active"), default=True)
    sort_order = models.IntegerField(_("sort order"), default=0)
    created_at = models.DateTimeField(_("created at"), default=timezone.now)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("reward")
        verbose_name_plural = _("rewards")
        ordering = ["sort_order", "points_price", "id"]
        constraints = [
            models.CheckConstraint(condition=Q(points_price__gt=0), name="loyalty_reward_price_pos"),
            models.CheckConstraint(
                condition=Q(per_member_limit__isnull=True) | Q(per_member_limit__gt=0),
                name="loyalty_reward_limit_pos",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def is_available_at(self, now) -> bool:
        return (
            self.is_active
            and (self.valid_from is None or self.valid_from <= now)
            and (self.valid_until is None or now < self.valid_until)
            and (self.stock is None or self.stock > 0)
        )


class RewardRedemption(models.Model):
    """Points spent on a reward: one ledger debit, one unit of stock, one coupon, all or none."""

    reward = models.ForeignKey(
        Reward, on_delete=models.PROTECT, related_name="redemptions", verbose_name=_("reward")
    )
    customer = models.ForeignKey(
        "crm.Customer",
        on_delete=models.PROTECT,
        related_name="reward_redemptions",
        verbose_name=_("customer"),
    )
    points = models.PositiveIntegerField(_("points"))
    coupon = models.OneToOneField(
        Coupon, on_delete=models.PROTECT, related_name="reward_redemption", verbose_name=_("coupon")
    )
    ledger_entry = models.OneToOneField(
        "loyalty.LedgerEntry",
        on_delete=models.PROTECT,
        related_name="reward_redemption",
        verbose_name=_("ledger entry"),
    )
    idempotency_key = models.CharField(_("idempotency key"), max_length=200, unique=True)
    created_at = models.DateTimeField(_("redeemed at"), default=timezone.now)

    class Meta:
        verbose_name = _("reward redemption")
        verbose_name_plural = _("reward redemptions")
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["customer", "reward"], name="loyalty_rewardred_cust_idx")]

    def __str__(self) -> str:
        return f"{self.reward_id} → {self.customer_id}"


class ReferralCode(models.Model):
    """A member's own code; their referral link is /member/join/?ref=<code>."""

    customer = models.OneToOneField(
        "crm.Customer", on_delete=models.CASCADE, related_name="referral_code", verbose_name=_("customer")
    )
    code = models.CharField(_("code"), max_length=16, unique=True)
    created_at = models.DateTimeField(_("created at"), default=timezone.now)

    class Meta:
        verbose_name = _("referral code")
        verbose_name_plural = _("referral codes")

    def __str__(self) -> str:
        return self.code


class Referral(models.Model):
    """Who referred whom, recorded when the referee signed up. A customer is referred at most once."""

    referrer = models.ForeignKey(
        "crm.Customer", on_delete=models.PROTECT, related_name="referrals_made", verbose_name=_("referrer")
    )
    referee = models.OneToOneField(
        "crm.Customer", on_delete=models.PROTECT, related_name="referred_by", verbose_name=_("referee")
    )
    code = models.CharField(_("code"), max_length=16)
    created_at = models.DateTimeField(_("created at"), default=timezone.now)

    class Meta:
        verbose_name = _("referral")
        verbose_name_plural = _("referrals")
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=~Q(referrer=F("referee")), name="loyalty_referral_not_self"),
        ]

    def __str__(self) -> str:
        return f"{self.referrer_id} → {self.referee_id}"


class MemberLogin(models.Model):
    """A member's portal/app credentials. Not a Django user: staff auth never authenticates members."""

    customer = models.OneToOneField(
        "crm.Customer", on_delete=models.CASCADE, related_name="member_login", verbose_name=_("customer")
    )
    email = models.EmailField(_("sign-in email"), unique=True)
    password = models.CharField(_("password"), max_length=128, blank=True)
    is_active = models.BooleanField(_("active"), default=True)
    last_login = models.DateTimeField(_("last sign-in"), null=True, blank=True)
    created_at = models.DateTimeField(_("created at"), default=timezone.now)

    class Meta:
        verbose_name = _("member login")
        verbose_name_plural = _("member logins")

    def __str__(self) -> str:
        return self.email


class MemberMagicLinkUse(models.Model):
    """The nonce of every one-time sign-in link that has been used; the primary key makes a second use
    (or two at once) fail."""

    nonce = models.CharField(_("nonce"), max_length=32, primary_key=True)
    used_at = models.DateTimeField(_("used at"), default=timezone.now)

    class Meta:
        verbose_name = _("used sign-in link")
        verbose_name_plural = _("used sign-in links")

    def __str__(self) -> str:
        return self.nonce


class MemberApiToken(models.Model):
    """A bearer token for the member API (`Authorization: Bearer <prefix>.<secret>`); only a SHA-256 of the
    secret is stored."""

    customer = models.ForeignKey(
        "crm.Customer", on_delete=models.CASCADE, related_name="member_api_tokens", verbose_name=_("customer")
    )
    prefix = models.CharField(_("prefix"), max_length=16, unique=True, editable=False)
    key_hash = models.CharField(_("key hash"), max_length=64, editable=False)
    name = models.CharField(_("device"), max_length=100, blank=True)
    created_at = models.DateTimeField(_("created at"), default=timezone.now)
    last_used_at = models.DateTimeField(_("last used at"), null=True, blank=True)
    revoked_at = models.DateTimeField(_("revoked at"), null=True, blank=True)

    class Meta:
        verbose_name = _("member API token")
        verbose_name_plural = _("member API tokens")

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.customer_id})"
