"""The dormant-customer win-back programme: its rules (who is dormant, whom to wake first, what they get),
the nightly runs that select customers, and each customer's assignment to the treated arm or the holdout.

A run is idempotent per programme and business day (one WinbackRun per day, one assignment per customer
and cycle: the database refuses a second), and resumable: the selection is one statement that commits
with the run's phase, the enrollment of the treated goes in batches that each commit with their
assignments' `enrolled_at`, and the run holds a lease (crm.models.jobs.Leased) so a run whose worker died
is taken over by the reaper and carried on from the first assignment not yet enrolled
(journeys/services/winback.py).
"""

from decimal import Decimal

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from crm.models.jobs import Leased
from crm.models.metrics import ValueTier
from journeys.models.enrollments import Arm

# The channels a win-back may open with, in the order the selection tries them for a customer.
WINBACK_CHANNELS = ("sms", "wechat", "email")


# Why a customer the dormancy rules caught was not assigned (WinbackRun.suppressed's keys).
SUPPRESSION_LABELS = {
    "no_consent": _("no consent on any usable channel"),
    "recently_messaged": _("messaged recently"),
    "in_other_winback": _("in another win-back"),
    "cooldown": _("selected in this programme's current cycle"),
    "not_worth_it": _("expected value below the offer's cost"),
    "budget_or_capacity": _("beyond the budget or a channel's capacity"),
    "not_entered": _("the journey refused the entry"),
}


class WinbackAudience(models.TextChoices):
    DORMANT = "dormant", _("Dormant customers (win-back)")
    AT_RISK = "at_risk", _("At-risk customers (decline prevention)")


class BudgetKind(models.TextChoices):
    OFFERS = "offers", _("A number of offers")
    MONEY = "money", _("An amount of money")


class WinbackProgramme(models.Model):
    name = models.CharField(_("name"), max_length=200)
    is_active = models.BooleanField(
        _("active"), default=True, help_text=_("Only active programmes run nightly.")
    )
    audience = models.CharField(
        _("audience"),
        max_length=16,
        choices=WinbackAudience.choices,
        default=WinbackAudience.DORMANT,
        help_text=_(
            "Dormant: no order for longer than the cycles below. At risk: customers in the at-risk stage, not "
            "yet dormant, for a lighter treatment before they fall asleep."
        ),
    )
    # Dormancy rules, on crm's nightly metrics.
    cycles_without_order = models.DecimalField(
        _("cycles without an order"),
        max_digits=5,
        decimal_places=2,
        default=Decimal("2.50"),
        validators=[MinValueValidator(Decimal("0.1"))],
        help_text=_("No order for longer than this many times the customer's own purchase cycle."),
    )
    max_p_alive = models.FloatField(
        _("probability alive below"),
        default=0.6,
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text=_("Only customers whose modelled probability of being alive is below this."),
    )
    value_tiers = models.JSONField(
        _("value tiers"),
        default=list,
        blank=True,
        help_text=_("The value tiers to include (codes: high, medium, low); empty: all buyers."),
    )
    # Whom to wake first.
    budget_kind = models.CharField(
        _("budget in"), max_length=8, choices=BudgetKind.choices, default=BudgetKind.OFFERS
    )
    budget_offers = models.PositiveIntegerField(
        _("offers per night"), null=True, blank=True, help_text=_("The most customers treated in one run.")
    )
    budget_amount = models.DecimalField(
        _("money per night"),
        max_digits=14,
        decimal_places=2,
        null=True,
        blank=True,
        validators=[MinValueValidator(Decimal("0"))],
        help_text=_("The most the offers of one run may cost (the offers' costs below)."),
    )
    currency = models.CharField(_("currency"), max_length=3, default="CNY")
    sms_capacity = models.PositiveIntegerField(
        _("SMS per night"), null=True, blank=True, help_text=_("Empty: no limit.")
    )
    wechat_capacity = models.PositiveIntegerField(_("WeChat messages per night"), null=True, blank=True)
    email_capacity = models.PositiveIntegerField(_("emails per night"), null=True, blank=True)
    message_cost = models.DecimalField(
        _("cost per message"),
        max_digits=8,
        decimal_places=3,
        default=Decimal("0.050"),
        validators=[MinValueValidator(Decimal("0"))],
        help_text=_("What one message costs, counted in the report's costs."),
    )
    holdout_percent = models.PositiveSmallIntegerField(
        _("holdout (%)"),
        default=10,
        validators=[MinValueValidator(1), MaxValueValidator(50)],
        help_text=_("The share of the selected customers, drawn at random, who receive nothing."),
    )
    recent_message_days = models.PositiveIntegerField(
        _("not messaged within (days)"),
        default=7,
        help_text=_("Customers sent a marketing message in this many days are left out."),
    )
    cooldown_days = models.PositiveIntegerField(
        _("cycle (days)"),
        default=30,
        validators=[MinValueValidator(1)],
        help_text=_("A customer selected once is not selected again by this programme for this many days."),
    )
    reactivation_days = models.PositiveIntegerField(
        _("reactivation window (days)"),
        default=30,
        validators=[MinValueValidator(1), MaxValueValidator(365)],
        help_text=_("A customer is reactivated when they order within this many days of being selected."),
    )
    journey = models.ForeignKey(
        "journeys.Journey",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        verbose_name=_("journey"),
        help_text=_(
            "The journey the treated enter; empty: the ready-made win-back journey, built on the first run."
        ),
    )
    created_at = models.DateTimeField(_("created at"), default=timezone.now)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("win-back programme")
        verbose_name_plural = _("win-back programmes")
        ordering = ["name", "id"]

    def __str__(self) -> str:
        return self.name

    def clean(self):
        errors = {}
        tiers = self.value_tiers if isinstance(self.value_tiers, list) else None
        known = {ValueTier.HIGH, ValueTier.MEDIUM, ValueTier.LOW}
        if tiers is None or any(t not in known for t in tiers):
            errors["value_tiers"] = _("List value tiers from: high, medium, low.")
        if self.budget_kind == BudgetKind.OFFERS and not self.budget_offers:
            errors["budget_offers"] = _("Give the number of offers per night.")
        if self.budget_kind == BudgetKind.MONEY and self.budget_amount is None:
            errors["budget_amount"] = _("Give the amount of money per night.")
        if errors:
            raise ValidationError(errors)

    def channel_capacities(self) -> dict[str, int | None]:
        return {"sms": self.sms_capacity, "wechat": self.wechat_capacity, "email": self.email_capacity}


class WinbackOffer(models.Model):
    """What a customer of one value tier gets with the messages: a coupon, a points bonus, or both."""

    programme = models.ForeignKey(
        WinbackProgramme, on_delete=models.CASCADE, related_name="offers", verbose_name=_("programme")
    )
    value_tier = models.CharField(_("value tier"), max_length=8, choices=ValueTier.choices)
    coupon_programme = models.ForeignKey(
        "loyalty.CouponProgramme",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        verbose_name=_("coupon programme"),
    )
    points_bonus = models.PositiveIntegerField(_("points bonus"), default=0)
    cost = models.DecimalField(
        _("cost per offer"),
        max_digits=10,
        decimal_places=2,
        default=Decimal("0"),
        validators=[MinValueValidator(Decimal("0"))],
        help_text=_(
            "What one offer is expected to cost: subtracted from the score and counted in a money budget."
        ),
    )

    class Meta:
        verbose_name = _("win-back offer")
        verbose_name_plural = _("win-back offers")
        constraints = [
            models.UniqueConstraint(fields=["programme", "value_tier"], name="journeys_winback_offer_tier"),
        ]

    def __str__(self) -> str:
        return f"{self.programme} / {self.get_value_tier_display()}"


class WinbackRunStatus(models.TextChoices):
    RUNNING = "running", _("Running")
    DONE = "done", _("Done")
    FAILED = "failed", _("Failed")


class WinbackPhase(models.TextChoices):
    SELECT = "select", _("Selecting")
    ENROLL = "enroll", _("Enrolling")
    DONE = "done", _("Done")


class WinbackRun(Leased):
    programme = models.ForeignKey(
        WinbackProgramme, on_delete=models.CASCADE, related_name="runs", verbose_name=_("programme")
    )
    run_date = models.DateField(_("night of"))
    status = models.CharField(
        _("status"), max_length=8, choices=WinbackRunStatus.choices, default=WinbackRunStatus.RUNNING
    )
    phase = models.CharField(
        _("phase"), max_length=8, choices=WinbackPhase.choices, default=WinbackPhase.SELECT
    )
    started_at = models.DateTimeField(_("started at"), default=timezone.now)
    selected_at = models.DateTimeField(_("selected at"), null=True, blank=True)
    finished_at = models.DateTimeField(_("finished at"), null=True, blank=True)
    considered = models.PositiveIntegerField(_("considered"), default=0)
    eligible = models.PositiveIntegerField(_("eligible"), default=0)
    selected = models.PositiveIntegerField(_("selected"), default=0)
    held_out = models.PositiveIntegerField(_("held out"), default=0)
    enrolled = models.PositiveIntegerField(_("enrolled"), default=0)
    messaged = models.PositiveIntegerField(_("messaged"), default=0)
    # {"no_consent": 12, "recently_messaged": 3, "in_other_winback": 1, "cooldown": 40, "capacity": 7,
    #  "budget": 1200, "not_worth_it": 4, "not_entered": 0}: codes, translated when shown.
    suppressed = models.JSONField(_("suppressed, by reason"), default=dict, blank=True)
    budget_spent = models.DecimalField(_("budget spent"), max_digits=16, decimal_places=2, default=0)
    # How the reactivation probability was estimated: per (tier, channel), the model's or learned uplift.
    uplift = models.JSONField(_("uplift used"), default=dict, blank=True)
    timings = models.JSONField(_("timings (s)"), default=dict, blank=True)
    error = models.CharField(_("error"), max_length=40, blank=True)

    class Meta:
        verbose_name = _("win-back run")
        verbose_name_plural = _("win-back runs")
        ordering = ["-run_date", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["programme", "run_date"], name="journeys_winback_run_night"),
        ]

    def __str__(self) -> str:
        return f"{self.programme} {self.run_date}"


class WinbackAssignment(models.Model):
    run = models.ForeignKey(
        WinbackRun, on_delete=models.CASCADE, related_name="assignments", verbose_name=_("run")
    )
    # Copied from the run: the unique key below reaches across runs of the programme.
    programme = models.ForeignKey(
        WinbackProgramme,
        on_delete=models.CASCADE,
        related_name="+",
        db_index=False,
        verbose_name=_("programme"),
    )
    customer = models.ForeignKey(
        "crm.Customer", on_delete=models.CASCADE, related_name="+", verbose_name=_("customer")
    )
    # The programme's cycle the customer was selected in: the run's night, so rerunning a night is a no-op.
    cycle = models.DateField(_("cycle"))
    arm = models.CharField(_("arm"), max_length=8, choices=Arm.choices)
    value_tier = models.CharField(_("value tier"), max_length=8, choices=ValueTier.choices)
    channel = models.CharField(_("channel"), max_length=16)
    p_reactivation = models.FloatField(_("probability of coming back"))
    expected_spend = models.DecimalField(_("expected spend"), max_digits=14, decimal_places=2)
    offer_cost = models.DecimalField(_("offer cost"), max_digits=10, decimal_places=2)
    score = models.FloatField(_("score"))
    rank = models.PositiveIntegerField(_("rank"))
    selected_at = models.DateTimeField(_("selected at"))
    coupon = models.ForeignKey(
        "loyalty.Coupon",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        verbose_name=_("coupon"),
    )
    points_bonus = models.PositiveIntegerField(_("points bonus"), default=0)
    enrollment = models.ForeignKey(
        "journeys.Enrollment",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_constraint=False,
        verbose_name=_("enrollment"),
    )
    enrolled_at = models.DateTimeField(_("enrolled at"), null=True, blank=True)
    # Outcome (intention to treat: counted in the arm assigned, whatever was delivered), refreshed nightly.
    messages = models.PositiveSmallIntegerField(_("messages sent"), default=0)
    returned_at = models.DateTimeField(_("came back at"), null=True, blank=True)
    orders = models.PositiveIntegerField(_("orders in the window"), default=0)
    revenue = models.DecimalField(_("revenue in the window"), max_digits=14, decimal_places=2, default=0)
    coupon_order = models.CharField(_("order the coupon was redeemed in"), max_length=100, blank=True)
    coupon_discount = models.DecimalField(_("coupon discount"), max_digits=14, decimal_places=2, default=0)

    class Meta:
        verbose_name = _("win-back assignment")
        verbose_name_plural = _("win-back assignments")
        ordering = ["run", "rank"]
        constraints = [
            models.UniqueConstraint(
                fields=["programme", "customer", "cycle"], name="journeys_winback_assignment_cycle"
            ),
            models.CheckConstraint(condition=Q(arm__in=["treated", "holdout"]), name="journeys_winback_arm"),
        ]
        indexes = [
            # Enrollment resumes from the first treated assignment not yet enrolled, in rank order.
            models.Index(
                fields=["run", "rank"],
                condition=Q(arm="treated", enrolled_at__isnull=True),
                name="journeys_winback_to_enroll",
            ),
            models.Index(fields=["customer", "-selected_at"], name="journeys_winback_customer"),
        ]

    def __str__(self) -> str:
        return f"{self.run_id}/{self.customer_id} {self.arm}"
