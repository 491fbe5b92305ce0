"""The points ledger and the programme that feeds it.

The ledger is append-only: a balance is the sum of `LedgerEntry` rows; the balances cached on
`LoyaltyAccount` (and `remaining` on `PointLot`) are written in the same transaction as the entries and
can be rebuilt from them (`loyalty.services.ledger.account_rebuild_balances`).

Locking rule (see loyalty/services/locks.py): every write that touches an account's entries, lots or
owed points first holds that account's row lock (`SELECT ... FOR UPDATE`), accounts in primary-key
order. Lots are never locked on their own, so two writers can only ever wait on account rows, in one
order, and cannot deadlock.
"""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import F, Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django.utils.translation import pgettext_lazy
from simple_history.models import HistoricalRecords

from crm.models import Leased

# --- Programme configuration ------------------------------------------------------------------------


class ExpiryPolicy(models.TextChoices):
    ROLLING_MONTHS = "rolling_months", _("Rolling: N months after earning")
    END_OF_FOLLOWING_YEAR = "end_of_following_year", _("End of the year after earning")
    NEVER = "never", _("Never")


class TierBasis(models.TextChoices):
    SPEND = "spend", _("Paid spend in the window")
    POINTS = "points", _("Points earned in the window")


class ProgrammeSettings(models.Model):
    """The one programme (a single row, pk=1). Read through `loyalty.services.programme.programme_get`."""

    name = models.CharField(_("programme name"), max_length=100, default="Loyalty")
    currency = models.CharField(_("currency"), max_length=3, default="CNY")
    time_zone = models.CharField(
        _("programme time zone"),
        max_length=64,
        default="Asia/Shanghai",
        help_text=_("Year ends and days (caps, expiry dates) are counted in this time zone."),
    )
    return_window_days = models.PositiveIntegerField(
        _("return window (days)"),
        default=15,
        help_text=_("Order points stay pending this many days after the order, then become available."),
    )
    expiry_policy = models.CharField(
        _("expiry policy"),
        max_length=32,
        choices=ExpiryPolicy.choices,
        default=ExpiryPolicy.END_OF_FOLLOWING_YEAR,
    )
    expiry_months = models.PositiveIntegerField(
        _("expiry months"), default=24, help_text=_("Used by the rolling expiry policy.")
    )
    expiring_notice_days = models.PositiveIntegerField(
        _("expiring-soon notice (days)"),
        default=30,
        help_text=_("A points_expiring event is emitted this many days before points expire."),
    )
    tier_basis = models.CharField(
        _("tier qualification"), max_length=8, choices=TierBasis.choices, default=TierBasis.SPEND
    )
    tier_window_months = models.PositiveIntegerField(_("qualification window (months)"), default=12)
    tier_review_months = models.PositiveIntegerField(
        _("review period (months)"),
        default=12,
        help_text=_("A tier is reviewed this many months after it was reached or last confirmed."),
    )
    downgrade_grace_days = models.PositiveIntegerField(
        _("downgrade grace (days)"),
        default=30,
        help_text=_("A member below the threshold at review keeps the tier this many more days."),
    )
    transfer_enabled = models.BooleanField(_("points transfer enabled"), default=False)
    point_value = models.DecimalField(
        _("value of one point"),
        max_digits=10,
        decimal_places=4,
        default=Decimal("0.01"),
        validators=[MinValueValidator(0)],
        help_text=_(
            "What one point costs the brand when it is redeemed, in the programme currency; the admin home "
            "page values the outstanding points (the points liability) with it."
        ),
    )
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    history = HistoricalRecords()

    class Meta:
        verbose_name = _("programme settings")
        verbose_name_plural = _("programme settings")
        constraints = [models.CheckConstraint(condition=Q(pk=1), name="loyalty_programme_singleton")]

    def __str__(self) -> str:
        return self.name

    def save(self, *args, **kwargs):
        self.pk = 1
        super().save(*args, **kwargs)


class Tier(models.Model):
    code = models.SlugField(pgettext_lazy("tier", "code"), max_length=32, unique=True)
    name = models.CharField(_("name"), max_length=64)
    rank = models.PositiveSmallIntegerField(
        _("rank"), unique=True, help_text=_("0 is the entry tier; higher ranks are better tiers.")
    )
    threshold_spend = models.DecimalField(
        _("spend threshold"), max_digits=14, decimal_places=2, default=0, validators=[MinValueValidator(0)]
    )
    threshold_points = models.PositiveIntegerField(_("points threshold"), default=0)
    earn_multiplier = models.DecimalField(
        _("earn multiplier"),
        max_digits=6,
        decimal_places=2,
        default=1,
        validators=[MinValueValidator(1)],
        help_text=_("1.25 gives a 25% tier bonus on the base points of every order."),
    )
    birthday_gift_points = models.PositiveIntegerField(_("birthday gift (points)"), default=0)
    free_shipping = models.BooleanField(_("free shipping"), default=False)
    exclusive_rewards = models.BooleanField(_("exclusive rewards"), default=False)
    description = models.TextField(_("description"), blank=True)
    is_active = models.BooleanField(_("active"), default=True)

    history = HistoricalRecords()

    class Meta:
        verbose_name = _("tier")
        verbose_name_plural = _("tiers")
        ordering = ["rank"]
        constraints = [
            models.CheckConstraint(condition=Q(earn_multiplier__gte=1), name="loyalty_tier_multiplier_ge_1"),
            models.CheckConstraint(condition=Q(threshold_spend__gte=0), name="loyalty_tier_spend_nonneg"),
        ]

    def __str__(self) -> str:
        return self.name


class BonusEvent(models.TextChoices):
    SIGNUP = "signup", _("Sign-up")
    BIRTHDAY = "birthday", _("Birthday")
    FIRST_ORDER = "first_order", _("First order")
    REVIEW = "review", _("Review")
    SOCIAL_SHARE = "social_share", _("Social share")
    REFERRAL_REFERRER = "referral_referrer", _("Referral (referrer)")
    REFERRAL_REFEREE = "referral_referee", _("Referral (referee)")


class EarnRule(models.Model):
    class Kind(models.TextChoices):
        BASE = "base", _("Points per currency unit")
        PRODUCT = "product", _("Product multiplier")
        CATEGORY = "category", _("Category multiplier")
        EVENT = "event", _("Event bonus")

    name = models.CharField(_("name"), max_length=100)
    kind = models.CharField(_("kind"), max_length=16, choices=Kind.choices)
    points_per_unit = models.DecimalField(
        _("points per currency unit"),
        max_digits=10,
        decimal_places=4,
        default=1,
        validators=[MinValueValidator(0)],
        help_text=_("Base rule: points for each unit of paid order value (1 = 1 point per yuan)."),
    )
    currency = models.CharField(_("currency"), max_length=3, default="CNY")
    multiplier = models.DecimalField(
        _("multiplier"),
        max_digits=6,
        decimal_places=2,
        default=1,
        validators=[MinValueValidator(1)],
        help_text=_("Product/category rules: 2 doubles the base points of matching lines."),
    )
    sku = models.CharField(_("SKU"), max_length=64, blank=True)
    category = models.CharField(_("category"), max_length=100, blank=True)
    event = models.CharField(_("bonus event"), max_length=32, choices=BonusEvent.choices, blank=True)
    trigger_event_type = models.CharField(
        _("behaviour event type"),
        max_length=64,
        blank=True,
        help_text=_("For review and social-share bonuses: the behaviour event type that earns it."),
    )
    bonus_points = models.PositiveIntegerField(_("bonus points"), default=0)
    cap_per_day = models.PositiveIntegerField(_("cap per member per day (points)"), null=True, blank=True)
    cap_per_customer = models.PositiveIntegerField(_("cap per member (points)"), null=True, blank=True)
    starts_at = models.DateTimeField(_("starts at"), null=True, blank=True)
    ends_at = models.DateTimeField(_("ends at"), null=True, blank=True)
    is_active = models.BooleanField(_("active"), default=True)
    created_at = models.DateTimeField(_("created at"), default=timezone.now)

    history = HistoricalRecords()

    class Meta:
        verbose_name = _("earn rule")
        verbose_name_plural = _("earn rules")
        ordering = ["kind", "name"]
        constraints = [
            models.CheckConstraint(condition=Q(multiplier__gte=1), name="loyalty_earnrule_multiplier_ge_1"),
            models.CheckConstraint(condition=Q(points_per_unit__gte=0), name="loyalty_earnrule_ppu_nonneg"),
            models.CheckConstraint(
                condition=Q(ends_at__isnull=True) | Q(starts_at__isnull=True) | Q(ends_at__gt=F("starts_at")),
                name="loyalty_earnrule_dates_ordered",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self):
        errors = {}
        if self.kind == self.Kind.PRODUCT and not self.sku:
            errors["sku"] = _("A product multiplier needs a SKU.")
        if self.kind == self.Kind.CATEGORY and not self.category:
            errors["category"] = _("A category multiplier needs a category.")
        if self.kind == self.Kind.EVENT and not self.event:
            errors["event"] = _("An event bonus needs the event it rewards.")
        if self.starts_at and self.ends_at and self.ends_at <= self.starts_at:
            errors["ends_at"] = _("The end must be after the start.")
        if errors:
            raise ValidationError(errors)


class Promotion(models.Model):
    """Date-bounded extra points on orders placed in the window (double points on Double 11)."""

    name = models.CharField(_("name"), max_length=100)
    multiplier = models.DecimalField(
        _("multiplier"),
        max_digits=6,
        decimal_places=2,
        default=2,
        validators=[MinValueValidator(1)],
        help_text=_("2 doubles the base points of orders placed in the window."),
    )
    category = models.CharField(
        _("category"), max_length=100, blank=True, help_text=_("Blank: every order line.")
    )
    starts_at = models.DateTimeField(_("starts at"))
    ends_at = models.DateTimeField(_("ends at"))
    is_active = models.BooleanField(_("active"), default=True)

    history = HistoricalRecords()

    class Meta:
        verbose_name = _("promotion")
        verbose_name_plural = _("promotions")
        ordering = ["-starts_at"]
        constraints = [
            models.CheckConstraint(condition=Q(multiplier__gte=1), name="loyalty_promotion_multiplier_ge_1"),
            models.CheckConstraint(
                condition=Q(ends_at__gt=F("starts_at")), name="loyalty_promotion_dates_ordered"
            ),
        ]

    def __str__(self) -> str:
        return self.name


# --- Accounts and the ledger ------------------------------------------------------------------------


class LoyaltyAccount(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active", _("Active")
        MERGED = "merged", _("Merged into another account")

    # Nullable so that an account folded into another by a customer merge keeps its row (and history)
    # after its customer is gone.
    customer = models.OneToOneField(
        "crm.Customer",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="loyalty_account",
        verbose_name=_("customer"),
    )
    status = models.CharField(_("status"), max_length=8, choices=Status.choices, default=Status.ACTIVE)
    merged_into = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        verbose_name=_("merged into"),
    )
    tier = models.ForeignKey(
        Tier, null=True, blank=True, on_delete=models.PROTECT, related_name="accounts", verbose_name=_("tier")
    )
    tier_since = models.DateTimeField(_("tier since"), null=True, blank=True)
    tier_review_at = models.DateTimeField(_("tier review at"), null=True, blank=True)
    downgrade_at = models.DateTimeField(
        _("downgrade at"),
        null=True,
        blank=True,
        help_text=_("End of the grace period after a failed review."),
    )
    # Cached balances: each is the sum of one column of this account's entries.
    available = models.BigIntegerField(_("available points"), default=0)
    pending = models.BigIntegerField(_("pending points"), default=0)
    owed = models.BigIntegerField(_("owed points"), default=0)
    created_at = models.DateTimeField(_("created at"), default=timezone.now)

    class Meta:
        verbose_name = _("loyalty account")
        verbose_name_plural = _("loyalty accounts")
        ordering = ["-id"]
        constraints = [
            models.CheckConstraint(condition=Q(available__gte=0), name="loyalty_account_available_nonneg"),
            models.CheckConstraint(condition=Q(pending__gte=0), name="loyalty_account_pending_nonneg"),
            models.CheckConstraint(condition=Q(owed__gte=0), name="loyalty_account_owed_nonneg"),
        ]
        indexes = [
            models.Index(fields=["tier_review_at"], name="loyalty_account_review_idx"),
            models.Index(fields=["downgrade_at"], name="loyalty_account_downgrade_idx"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} ({self.customer_id or '-'})"


class EntryKind(models.TextChoices):
    EARN = "earn", _("Earned")
    RELEASE = "release", _("Pending → available")
    REDEEM = "redeem", _("Redeemed")
    EXPIRE = "expire", _("Expired")
    REVERSE = "reverse", _("Reversed (refund)")
    ADJUST = "adjust", _("Manual adjustment")
    SETTLE = "settle", _("Owed points settled")
    TRANSFER_OUT = "transfer_out", _("Transferred out")
    TRANSFER_IN = "transfer_in", _("Transferred in")


class LedgerEntry(models.Model):
    """One append-only movement of points. `points` moves the available balance, `pending_delta` the
    pending balance and `owed_delta` the points owed; each balance is the sum of its column.

    A database trigger (migration 0001, PostgreSQL) refuses DELETE and any UPDATE other than re-pointing
    `account` (which only a customer merge does)."""

    # Foreign keys without an index of their own where a composite or partial index below serves the
    # lookups: every index is paid again on each of the millions of inserts.
    account = models.ForeignKey(
        LoyaltyAccount,
        on_delete=models.PROTECT,
        related_name="entries",
        db_index=False,
        verbose_name=_("loyalty account"),
    )
    kind = models.CharField(_("kind"), max_length=16, choices=EntryKind.choices)
    points = models.BigIntegerField(_("available change"), default=0)
    pending_delta = models.BigIntegerField(_("pending change"), default=0)
    owed_delta = models.BigIntegerField(_("owed change"), default=0)
    # Unique through a constraint, not unique=True: that would add a second (LIKE) index to every insert.
    idempotency_key = models.CharField(_("idempotency key"), max_length=200)
    payload_hash = models.CharField(_("payload hash"), max_length=64, editable=False)
    reason = models.CharField(_("reason"), max_length=300, blank=True)
    reference = models.CharField(_("reference"), max_length=200, blank=True)
    order = models.ForeignKey(
        "crm.Order",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        verbose_name=_("order"),
        db_index=False,
    )
    order_line = models.ForeignKey(
        "crm.OrderLine",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        verbose_name=_("order line"),
        db_index=False,
    )
    rule = models.ForeignKey(
        EarnRule,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        verbose_name=_("rule"),
        db_index=False,
    )
    lot = models.ForeignKey(
        "PointLot",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        verbose_name=_("lot"),
        db_index=False,
    )
    source_event_id = models.BigIntegerField(_("behaviour event"), null=True, blank=True)
    # How an order earning was made up: base, product, tier, promotion points, and the rates used.
    parts = models.JSONField(_("parts"), default=dict, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        db_index=False,
        verbose_name=_("created by"),
    )
    occurred_at = models.DateTimeField(_("occurred at"), default=timezone.now)
    created_at = models.DateTimeField(_("recorded at"), default=timezone.now)

    class Meta:
        verbose_name = _("ledger entry")
        verbose_name_plural = _("ledger entries")
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(fields=["idempotency_key"], name="loyalty_entry_idempotency_key_uniq"),
        ]
        indexes = [
            models.Index(fields=["account", "-id"], name="loyalty_entry_account_idx"),
            models.Index(
                fields=["order_line"], name="loyalty_entry_line_idx", condition=Q(order_line__isnull=False)
            ),
            models.Index(fields=["order"], name="loyalty_entry_order_idx", condition=Q(order__isnull=False)),
            models.Index(fields=["rule"], name="loyalty_entry_rule_idx", condition=Q(rule__isnull=False)),
            models.Index(fields=["lot"], name="loyalty_entry_lot_idx", condition=Q(lot__isnull=False)),
            models.Index(
                fields=["created_by"],
                name="loyalty_entry_created_by_idx",
                condition=Q(created_by__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.points:+d}"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise ValidationError(_("Ledger entries are append-only and cannot be edited."))
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise ValidationError(_("Ledger entries are append-only and cannot be deleted."))

    @property
    def reason_display(self) -> str:
        """The reason in the reader's language (a job's code translated; a staff member's words as typed)."""
        from loyalty.ledger_reasons import reason_text

        return reason_text(self.reason, kind=self.kind)


class PointLot(models.Model):
    """What one earning brought in, spent oldest-first. `remaining` is what is left of it; the rest went
    out through redemptions, reversals, settlements, transfers (each a `LotConsumption`) or expiry."""

    class State(models.TextChoices):
        PENDING = "pending", _("Pending")
        AVAILABLE = "available", _("Available")

    account = models.ForeignKey(
        LoyaltyAccount, on_delete=models.PROTECT, related_name="lots", verbose_name=_("loyalty account")
    )
    earn_entry = models.OneToOneField(
        LedgerEntry, on_delete=models.PROTECT, related_name="earned_lot", verbose_name=_("earning entry")
    )
    order_line = models.ForeignKey(
        "crm.OrderLine",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        db_index=False,
        verbose_name=_("order line"),
    )
    state = models.CharField(_("state"), max_length=10, choices=State.choices)
    points = models.BigIntegerField(_("points earned"))
    remaining = models.BigIntegerField(_("points remaining"))
    consumed = models.BigIntegerField(_("points consumed"), default=0)
    expired = models.BigIntegerField(_("points expired"), default=0)
    # No database constraint and no index: the nightly expiry sets this on up to millions of lots, and a
    # foreign-key check per row was a large share of its time. Entries are never deleted (trigger), and
    # loyalty_audit checks that each points at an `expire` entry of the same account.
    expire_entry = models.ForeignKey(
        LedgerEntry,
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        related_name="expired_lots",
        db_index=False,
        db_constraint=False,
        verbose_name=_("expiry entry"),
    )
    earned_at = models.DateTimeField(_("earned at"))
    available_at = models.DateTimeField(_("available at"))
    expires_at = models.DateTimeField(_("expires at"), null=True, blank=True)
    notified_at = models.DateTimeField(_("expiry notice sent at"), null=True, blank=True)

    class Meta:
        verbose_name = _("points lot")
        verbose_name_plural = _("points lots")
        ordering = ["expires_at", "id"]
        constraints = [
            models.CheckConstraint(condition=Q(points__gt=0), name="loyalty_lot_points_pos"),
            models.CheckConstraint(condition=Q(remaining__gte=0), name="loyalty_lot_remaining_nonneg"),
            models.CheckConstraint(
                condition=Q(points=F("remaining") + F("consumed") + F("expired")), name="loyalty_lot_balanced"
            ),
        ]
        indexes = [
            # FIFO spending: the account's open lots, soonest-expiring first.
            models.Index(
                fields=["account", "expires_at", "id"],
                name="loyalty_lot_fifo_idx",
                condition=Q(remaining__gt=0, state="available"),
            ),
            models.Index(
                fields=["available_at"], name="loyalty_lot_release_idx", condition=Q(state="pending")
            ),
            models.Index(
                fields=["expires_at"],
                name="loyalty_lot_expiry_idx",
                condition=Q(remaining__gt=0, state="available"),
            ),
            models.Index(
                fields=["order_line"], name="loyalty_lot_line_idx", condition=Q(order_line__isnull=False)
            ),
        ]

    def __str__(self) -> str:
        return f"lot #{self.pk}: {self.remaining}/{self.points}"


class LotConsumption(models.Model):
    """Points taken out of one lot by one entry (redeem, reverse, settle, transfer)."""

    lot = models.ForeignKey(
        PointLot, on_delete=models.PROTECT, related_name="consumptions", verbose_name=_("lot")
    )
    # The (entry, lot) unique index serves lookups by entry.
    entry = models.ForeignKey(
        LedgerEntry,
        on_delete=models.PROTECT,
        related_name="consumptions",
        db_index=False,
        verbose_name=_("ledger entry"),
    )
    points = models.BigIntegerField(_("points"))

    class Meta:
        verbose_name = _("lot consumption")
        verbose_name_plural = _("lot consumptions")
        constraints = [
            models.UniqueConstraint(fields=["entry", "lot"], name="loyalty_consumption_entry_lot_uniq"),
            models.CheckConstraint(condition=Q(points__gt=0), name="loyalty_consumption_points_pos"),
        ]

    def __str__(self) -> str:
        return f"{self.points} from lot #{self.lot_id}"


class OwedPoints(models.Model):
    """A refund reversed points the member had already spent: the shortfall, settled from later
    earnings (oldest debt first) instead of a negative balance."""

    account = models.ForeignKey(
        LoyaltyAccount, on_delete=models.PROTECT, related_name="debts", verbose_name=_("loyalty account")
    )
    entry = models.OneToOneField(
        LedgerEntry, on_delete=models.PROTECT, related_name="debt", verbose_name=_("ledger entry")
    )
    points = models.BigIntegerField(_("points owed"))
    remaining = models.BigIntegerField(_("still owed"))
    created_at = models.DateTimeField(_("created at"), default=timezone.now)

    class Meta:
        verbose_name = _("owed points")
        verbose_name_plural = _("owed points")
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(condition=Q(points__gt=0), name="loyalty_owed_points_pos"),
            models.CheckConstraint(
                condition=Q(remaining__gte=0) & Q(remaining__lte=F("points")),
                name="loyalty_owed_remaining_range",
            ),
        ]
        indexes = [
            models.Index(fields=["account", "id"], name="loyalty_owed_open_idx", condition=Q(remaining__gt=0))
        ]

    def __str__(self) -> str:
        return f"{self.remaining}/{self.points}"


class TierChange(models.Model):
    """Tier history: every move of an account between tiers, and why."""

    class Reason(models.TextChoices):
        UPGRADE = "upgrade", _("Threshold reached")
        RENEWED = "renewed", _("Confirmed at review")
        GRACE = "grace", _("Below threshold at review: grace period")
        DOWNGRADE = "downgrade", _("Downgraded after review")
        MERGE = "merge", _("Customer merge")
        MANUAL = "manual", _("Set by staff")

    account = models.ForeignKey(
        LoyaltyAccount,
        on_delete=models.PROTECT,
        related_name="tier_changes",
        verbose_name=_("loyalty account"),
    )
    from_tier = models.ForeignKey(
        Tier, null=True, blank=True, on_delete=models.PROTECT, related_name="+", verbose_name=_("from tier")
    )
    to_tier = models.ForeignKey(
        Tier, null=True, blank=True, on_delete=models.PROTECT, related_name="+", verbose_name=_("to tier")
    )
    reason = models.CharField(_("reason"), max_length=16, choices=Reason.choices)
    qualifying_value = models.DecimalField(_("qualifying value"), max_digits=16, decimal_places=2, default=0)
    note = models.CharField(_("note"), max_length=300, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        verbose_name=_("changed by"),
    )
    changed_at = models.DateTimeField(_("changed at"), default=timezone.now)

    class Meta:
        verbose_name = _("tier change")
        verbose_name_plural = _("tier history")
        ordering = ["-changed_at", "-id"]
        indexes = [models.Index(fields=["account", "-changed_at"], name="loyalty_tierchange_account_idx")]

    def __str__(self) -> str:
        return f"{self.from_tier_id or '-'} → {self.to_tier_id or '-'}"


class RuleUsage(models.Model):
    """Points a capped rule has given one account on one day (programme time zone)."""

    account = models.ForeignKey(
        LoyaltyAccount, on_delete=models.PROTECT, related_name="+", verbose_name=_("loyalty account")
    )
    rule = models.ForeignKey(EarnRule, on_delete=models.PROTECT, related_name="+", verbose_name=_("rule"))
    day = models.DateField(_("day"))
    points = models.BigIntegerField(_("points"), default=0)

    class Meta:
        verbose_name = _("rule usage")
        verbose_name_plural = _("rule usage")
        constraints = [
            models.UniqueConstraint(fields=["account", "rule", "day"], name="loyalty_ruleusage_uniq"),
        ]

    def __str__(self) -> str:
        return f"{self.rule_id}@{self.day}: {self.points}"


# --- Staff adjustments ------------------------------------------------------------------------------


class ManualAdjustment(models.Model):
    """A staff member adding or removing points on one account, with the reason. The ledger entry it made
    is `entry`; the form's one-time token is the idempotency key, so a double submit adjusts once."""

    account = models.ForeignKey(
        LoyaltyAccount,
        on_delete=models.PROTECT,
        related_name="adjustments",
        verbose_name=_("loyalty account"),
    )
    points = models.BigIntegerField(_("points"), help_text=_("Positive adds points, negative removes them."))
    reason = models.CharField(_("reason"), max_length=300)
    idempotency_key = models.CharField(_("request key"), max_length=200, unique=True)
    entry = models.OneToOneField(
        LedgerEntry,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        verbose_name=_("ledger entry"),
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        verbose_name=_("created by"),
    )
    created_at = models.DateTimeField(_("created at"), default=timezone.now)

    class Meta:
        verbose_name = _("manual adjustment")
        verbose_name_plural = _("manual adjustments")
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=~Q(points=0), name="loyalty_adjustment_nonzero"),
            models.CheckConstraint(condition=~Q(reason=""), name="loyalty_adjustment_reason_required"),
        ]

    def __str__(self) -> str:
        return f"{self.points:+d} #{self.account_id}"


class BulkAdjustmentBatch(Leased):
    """A CSV of adjustments: uploaded and previewed by one staff member, approved by another, applied once."""

    class Status(models.TextChoices):
        PREVIEW = "preview", _("Awaiting approval")
        APPROVED = "approved", _("Approved")
        APPLYING = "applying", _("Applying")
        APPLIED = "applied", _("Applied")
        REJECTED = "rejected", _("Rejected")

    name = models.CharField(_("name"), max_length=200)
    reason = models.CharField(_("reason"), max_length=300)
    file_name = models.CharField(_("file name"), max_length=255, blank=True)
    file_sha256 = models.CharField(_("file SHA-256"), max_length=64, blank=True)
    status = models.CharField(_("status"), max_length=10, choices=Status.choices, default=Status.PREVIEW)
    line_count = models.PositiveIntegerField(_("lines"), default=0)
    error_count = models.PositiveIntegerField(_("lines with errors"), default=0)
    total_points = models.BigIntegerField(_("total points"), default=0)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+", verbose_name=_("uploaded by")
    )
    created_at = models.DateTimeField(_("uploaded at"), default=timezone.now)
    approved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        verbose_name=_("approved by"),
    )
    approved_at = models.DateTimeField(_("approved at"), null=True, blank=True)
    applied_at = models.DateTimeField(_("applied at"), null=True, blank=True)
    # Progress of the apply, written by the same transaction as each chunk's entries, so it never runs
    # ahead of the ledger. The worker applying it holds the batch's lease (crm.models.Leased): a batch
    # whose worker was killed is resumed by the lease reaper.
    lines_done = models.PositiveIntegerField(_("lines applied"), default=0)
    progress_at = models.DateTimeField(_("last progress at"), null=True, blank=True)

    history = HistoricalRecords()

    class Meta:
        verbose_name = _("bulk adjustment")
        verbose_name_plural = _("bulk adjustments")
        ordering = ["-created_at"]
        constraints = [
            # Four eyes: the uploader cannot approve their own batch.
            models.CheckConstraint(
                condition=Q(approved_by__isnull=True) | ~Q(approved_by=F("created_by")),
                name="loyalty_bulk_four_eyes",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def lines_to_apply(self) -> int:
        return self.line_count - self.error_count


class BulkAdjustmentLine(models.Model):
    batch = models.ForeignKey(
        BulkAdjustmentBatch, on_delete=models.CASCADE, related_name="lines", verbose_name=_("bulk adjustment")
    )
    line_no = models.PositiveIntegerField(_("line"))
    customer_external_id = models.CharField(_("customer external id"), max_length=64)
    customer = models.ForeignKey(
        "crm.Customer",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        verbose_name=_("customer"),
    )
    points = models.BigIntegerField(_("points"))
    reason = models.CharField(_("reason"), max_length=300, blank=True)
    error = models.CharField(_("error"), max_length=300, blank=True)
    entry = models.ForeignKey(
        LedgerEntry,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        verbose_name=_("ledger entry"),
    )

    class Meta:
        verbose_name = _("bulk adjustment line")
        verbose_name_plural = _("bulk adjustment lines")
        ordering = ["batch", "line_no"]
        constraints = [
            models.UniqueConstraint(fields=["batch", "line_no"], name="loyalty_bulkline_uniq"),
        ]

    def __str__(self) -> str:
        return f"{self.batch_id}:{self.line_no}"


class ExpiryRun(Leased):
    """One run of the nightly points expiry: the instant up to which it expires lots, and how far it has
    got. The worker running it holds its lease; a run whose worker was killed is resumed by the lease
    reaper from `last_account_id`, as of the same instant, so each account is expired once."""

    class Status(models.TextChoices):
        RUNNING = "running", _("Running")
        DONE = "done", _("Done")

    expires_up_to = models.DateTimeField(_("expires lots due up to"))
    status = models.CharField(_("status"), max_length=8, choices=Status.choices, default=Status.RUNNING)
    # The accounts are walked in id order; each batch commits this with its entries.
    last_account_id = models.BigIntegerField(_("last account done"), default=0)
    points_expired = models.BigIntegerField(_("points expired"), default=0)
    started_at = models.DateTimeField(_("started at"), default=timezone.now)
    finished_at = models.DateTimeField(_("finished at"), null=True, blank=True)

    class Meta:
        verbose_name = _("points expiry run")
        verbose_name_plural = _("points expiry runs")
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"{self.expires_up_to:%Y-%m-%d %H:%M} ({self.get_status_display()})"
