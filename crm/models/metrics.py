"""Customer intelligence tables: per-customer metrics (RFM, lifecycle stage, predicted value) and model fits.

`CustomerMetrics` holds one row per customer, rewritten as a set by `crm.services.metrics.metrics_compute`
(nightly and on demand); nothing else writes it. `MetricsRun` records each computation with the fitted
BG/NBD and Gamma-Gamma parameters. `LifecycleSettings` is the one row of thresholds marketing edits in
the admin. See docs/metrics.md for the definitions.
"""

from decimal import Decimal

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from crm.models.jobs import Leased

__all__ = [
    "LifecycleStage",
    "RfmSegment",
    "ValueTier",
    "LifecycleSettings",
    "CustomerMetrics",
    "MetricsRun",
]

# The behaviour event written when a customer's lifecycle stage changes; journeys react to it.
LIFECYCLE_STAGE_CHANGED = "lifecycle_stage_changed"


class LifecycleStage(models.TextChoices):
    # zh-hans names (for the catalogue): 潜在客户, 新客户, 活跃客户, 流失预警客户, 沉睡客户, 流失客户.
    PROSPECT = "prospect", _("Prospect")
    NEW = "new", _("New")
    ACTIVE = "active", _("Active")
    AT_RISK = "at_risk", _("At risk")
    DORMANT = "dormant", _("Dormant")
    CHURNED = "churned", _("Churned")


class RfmSegment(models.TextChoices):
    # zh-hans: 重要价值客户, 忠诚客户, 潜力客户, 新客户, 有望客户, 需要关注, 即将沉睡, 流失风险, 不能失去, 休眠客户, 已流失.
    CHAMPIONS = "champions", _("Champions")
    LOYAL = "loyal", _("Loyal")
    POTENTIAL_LOYALIST = "potential_loyalist", _("Potential loyalist")
    NEW = "new", _("New customers")
    PROMISING = "promising", _("Promising")
    NEED_ATTENTION = "need_attention", _("Need attention")
    ABOUT_TO_SLEEP = "about_to_sleep", _("About to sleep")
    AT_RISK = "at_risk", _("At risk")
    CANT_LOSE = "cant_lose", _("Can't lose them")
    HIBERNATING = "hibernating", _("Hibernating")
    LOST = "lost", _("Lost")


class ValueTier(models.TextChoices):
    # zh-hans: 高价值, 中价值, 低价值, 无消费.
    HIGH = "high", _("High value")
    MEDIUM = "medium", _("Medium value")
    LOW = "low", _("Low value")
    NONE = "none", _("No purchase")


class LifecycleSettings(models.Model):
    """The lifecycle-stage thresholds: one row (pk=1), edited in the admin, read by every computation.

    By default the thresholds scale with each customer's own purchase cycle (mean days between purchase
    days): a customer who buys every 20 days is at risk sooner than one who buys twice a year."""

    class Mode(models.TextChoices):
        CYCLE = "cycle", _("Multiples of each customer's purchase cycle")
        FIXED = "fixed", _("Fixed numbers of days")

    mode = models.CharField(_("thresholds"), max_length=8, choices=Mode.choices, default=Mode.CYCLE)
    new_days = models.PositiveIntegerField(
        _("new for (days)"),
        default=30,
        validators=[MinValueValidator(1)],
        help_text=_("A customer is new for this many days after their first purchase."),
    )
    active_cycles = models.DecimalField(
        _("active up to (cycles)"),
        max_digits=5,
        decimal_places=2,
        default=Decimal("1.50"),
        validators=[MinValueValidator(Decimal("0.1"))],
        help_text=_("Active while the days since the last purchase are at most this many purchase cycles."),
    )
    at_risk_cycles = models.DecimalField(
        _("at risk up to (cycles)"), max_digits=5, decimal_places=2, default=Decimal("2.50")
    )
    dormant_cycles = models.DecimalField(
        _("dormant up to (cycles)"),
        max_digits=5,
        decimal_places=2,
        default=Decimal("4.00"),
        help_text=_("Beyond this many purchase cycles without a purchase the customer is churned."),
    )
    min_cycle_days = models.PositiveIntegerField(
        _("shortest cycle (days)"),
        default=14,
        validators=[MinValueValidator(1)],
        help_text=_("Purchase cycles are at least this long, so that two orders a day apart do not make a "
                    "customer at risk after three days."),
    )  # fmt: skip
    max_cycle_days = models.PositiveIntegerField(
        _("longest cycle (days)"),
        default=180,
        validators=[MinValueValidator(1)],
        help_text=_("Purchase cycles are at most this long."),
    )
    default_cycle_days = models.PositiveIntegerField(
        _("cycle of one-time buyers (days)"),
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text=_("The cycle used for customers with a single purchase day. Empty: the median cycle of "
                    "the repeat customers."),
    )  # fmt: skip
    active_days = models.PositiveIntegerField(
        _("active up to (days)"), default=90, help_text=_("Fixed mode: days since the last purchase.")
    )
    at_risk_days = models.PositiveIntegerField(_("at risk up to (days)"), default=180)
    dormant_days = models.PositiveIntegerField(_("dormant up to (days)"), default=365)
    high_value_share = models.DecimalField(
        _("high-value share"),
        max_digits=4,
        decimal_places=3,
        default=Decimal("0.200"),
        validators=[MinValueValidator(Decimal("0.001")), MaxValueValidator(Decimal("1"))],
        help_text=_("The top share of buyers by net spend that is high value (0.2 = the top 20%)."),
    )
    medium_value_share = models.DecimalField(
        _("medium-value share"),
        max_digits=4,
        decimal_places=3,
        default=Decimal("0.300"),
        validators=[MinValueValidator(Decimal("0")), MaxValueValidator(Decimal("1"))],
        help_text=_("The next share of buyers that is medium value; the rest is low value."),
    )
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("lifecycle settings")
        verbose_name_plural = _("lifecycle settings")
        constraints = [models.CheckConstraint(condition=Q(pk=1), name="crm_lifecyclesettings_singleton")]

    def __str__(self) -> str:
        return str(_("Lifecycle settings"))

    def save(self, *args, **kwargs):
        self.pk = 1
        super().save(*args, **kwargs)

    def clean(self):
        errors = {}
        if not self.active_cycles < self.at_risk_cycles < self.dormant_cycles:
            errors["at_risk_cycles"] = _("Cycles must increase: active < at risk < dormant.")
        if not self.active_days < self.at_risk_days < self.dormant_days:
            errors["at_risk_days"] = _("Days must increase: active < at risk < dormant.")
        if self.min_cycle_days > self.max_cycle_days:
            errors["max_cycle_days"] = _("The longest cycle must not be shorter than the shortest.")
        if self.high_value_share + self.medium_value_share > 1:
            errors["medium_value_share"] = _("High and medium shares together must not exceed 1.")
        if errors:
            raise ValidationError(errors)

    @classmethod
    def load(cls) -> "LifecycleSettings":
        obj, _created = cls.objects.get_or_create(pk=1)
        return obj


class CustomerMetrics(models.Model):
    """A customer's metrics as of `as_of` (orders placed up to the end of that UTC day count).

    Conventions of the BG/NBD paper: `frequency` is the number of repeat purchase days, `recency_days`
    the days from the first to the last purchase, `tenure_days` the days from the first purchase to
    `as_of`; `monetary_value` is the mean net value of the repeat purchase days."""

    customer = models.OneToOneField(
        "crm.Customer",
        primary_key=True,
        on_delete=models.CASCADE,
        related_name="metrics",
        verbose_name=_("customer"),
    )
    as_of = models.DateField(_("as of"))
    computed_at = models.DateTimeField(_("computed at"))
    # Aggregates
    order_count = models.PositiveIntegerField(_("orders"), default=0)
    first_order_date = models.DateField(_("first order"), null=True, blank=True)
    last_order_date = models.DateField(_("last order"), null=True, blank=True)
    total_value = models.DecimalField(_("net spend"), max_digits=16, decimal_places=2, default=0)
    average_order_value = models.DecimalField(
        _("average order value"), max_digits=14, decimal_places=2, null=True, blank=True
    )
    purchase_cycle_days = models.FloatField(
        _("purchase cycle (days)"),
        null=True,
        blank=True,
        help_text=_("Mean days between purchase days; empty with fewer than two."),
    )
    days_since_last_order = models.PositiveIntegerField(_("days since last order"), null=True, blank=True)
    # BG/NBD inputs
    frequency = models.PositiveIntegerField(_("repeat purchase days"), default=0)
    recency_days = models.PositiveIntegerField(_("recency (days)"), default=0)
    tenure_days = models.PositiveIntegerField(_("tenure (days)"), default=0)
    monetary_value = models.DecimalField(
        _("mean repeat purchase value"), max_digits=14, decimal_places=2, default=0
    )
    # RFM
    r_score = models.PositiveSmallIntegerField(_("R"), null=True, blank=True)
    f_score = models.PositiveSmallIntegerField(_("F"), null=True, blank=True)
    m_score = models.PositiveSmallIntegerField(_("M"), null=True, blank=True)
    rfm_segment = models.CharField(_("RFM segment"), max_length=24, choices=RfmSegment.choices, blank=True)
    # Lifecycle
    lifecycle_stage = models.CharField(
        _("lifecycle stage"), max_length=16, choices=LifecycleStage.choices, default=LifecycleStage.PROSPECT
    )
    stage_since = models.DateField(_("in stage since"))
    # Predictions
    p_alive = models.FloatField(_("probability alive"), null=True, blank=True)
    expected_purchases_90d = models.FloatField(_("expected purchases, next 90 days"), null=True, blank=True)
    predicted_clv_365d = models.DecimalField(
        _("predicted value, next 365 days"), max_digits=16, decimal_places=2, null=True, blank=True
    )
    expected_next_purchase_date = models.DateField(_("expected next purchase"), null=True, blank=True)
    churn_risk = models.FloatField(_("churn risk"), null=True, blank=True)
    value_tier = models.CharField(
        _("value tier"), max_length=8, choices=ValueTier.choices, default=ValueTier.NONE
    )
    sleeping_high_value = models.BooleanField(
        _("sleeping high value"),
        default=False,
        help_text=_("High value and dormant: the customers a win-back campaign goes after."),
    )

    class Meta:
        verbose_name = _("customer metrics")
        verbose_name_plural = _("customer metrics")
        indexes = [
            # Segments select by stage or RFM segment and join on the customer: covering, so the join
            # reads the customer ids from the index, not from the wide metrics rows.
            models.Index(fields=["lifecycle_stage"], include=["customer"], name="crm_metrics_stage_cov_idx"),
            models.Index(fields=["rfm_segment"], include=["customer"], name="crm_metrics_rfm_cov_idx"),
            models.Index(
                fields=["customer"], condition=Q(sleeping_high_value=True), name="crm_metrics_sleeping_hv_idx"
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.customer_id} {self.lifecycle_stage} @ {self.as_of}"


class MetricsRun(Leased):
    """One computation of the metrics: when, as of which date, how long, and the fitted models.

    Parameters are in days (production's time unit); `alpha_weeks` is α/7 for comparison with papers."""

    class Status(models.TextChoices):
        RUNNING = "running", _("Running")
        DONE = "done", _("Done")
        FAILED = "failed", _("Failed")

    as_of = models.DateField(_("as of"))
    started_at = models.DateTimeField(_("started at"), default=timezone.now)
    finished_at = models.DateTimeField(_("finished at"), null=True, blank=True)
    status = models.CharField(_("status"), max_length=8, choices=Status.choices, default=Status.RUNNING)
    message = models.TextField(_("message"), blank=True)
    customers = models.PositiveIntegerField(_("customers"), default=0)
    buyers = models.PositiveIntegerField(_("customers with orders"), default=0)
    repeat_buyers = models.PositiveIntegerField(_("repeat customers"), default=0)
    stage_changes = models.PositiveIntegerField(_("stage changes"), default=0)
    duration_seconds = models.FloatField(_("duration (s)"), null=True, blank=True)
    timings = models.JSONField(_("timings (s)"), default=dict, blank=True)
    # BG/NBD
    bgnbd_r = models.FloatField("r", null=True, blank=True)
    bgnbd_alpha = models.FloatField(_("α (days)"), null=True, blank=True)
    bgnbd_a = models.FloatField("a", null=True, blank=True)
    bgnbd_b = models.FloatField("b", null=True, blank=True)
    bgnbd_log_likelihood = models.FloatField(_("BG/NBD log-likelihood"), null=True, blank=True)
    bgnbd_converged = models.BooleanField(_("BG/NBD converged"), null=True, blank=True)
    # Gamma-Gamma
    gg_p = models.FloatField("p", null=True, blank=True)
    gg_q = models.FloatField("q", null=True, blank=True)
    gg_gamma = models.FloatField("γ", null=True, blank=True)
    gg_log_likelihood = models.FloatField(_("Gamma-Gamma log-likelihood"), null=True, blank=True)
    gg_converged = models.BooleanField(_("Gamma-Gamma converged"), null=True, blank=True)

    class Meta:
        verbose_name = _("metrics run and model fit")
        verbose_name_plural = _("metrics runs and model fits")
        ordering = ["-started_at"]
        get_latest_by = "started_at"

    def __str__(self) -> str:
        return f"{self.as_of} ({self.get_status_display()})"

    @property
    def alpha_weeks(self) -> float | None:
        return None if self.bgnbd_alpha is None else self.bgnbd_alpha / 7.0
