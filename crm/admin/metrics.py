"""Admin of the customer intelligence: lifecycle thresholds (one editable row, with "recompute now"),
the record of each computation with its fitted BG/NBD and Gamma-Gamma parameters, and the per-customer
metrics, read-only, and the 360 page's "Metrics" panel.

Metrics are only ever written by `crm.services.metrics.metrics_compute`; nothing here edits them."""

from __future__ import annotations

from django.contrib import admin, messages
from django.http import HttpResponseRedirect
from django.template import Template
from django.urls import reverse
from django.utils import timezone
from django.utils.functional import lazy
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _
from unfold.admin import ModelAdmin, StackedInline

from crm.admin.base import JOB_PROGRESS_JS, ReadOnlyAdmin, job_progress_message
from crm.admin.customer_360 import Customer360Panel, customer_360_panel_register
from crm.analytics.sqlbits import reporting_currency
from crm.metrics.notes import run_message_text
from crm.metrics.selectors import customer_metrics_get, metrics_latest_run
from crm.models.metrics import CustomerMetrics, LifecycleSettings, MetricsRun
from crm.paginators import EstimatedCountPaginator
from crm.services.metrics import lifecycle_settings_save

RECOMPUTE = "_recompute_metrics"


def _number(value, digits: int = 4) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _money(value) -> str:
    """An amount in the reporting currency (the metrics add up orders in it), with its code."""
    return "—" if value is None else f"{value:,.2f} {reporting_currency()}"


def _explained(label, explanation):
    """A column header with a plain-language explanation for a marketer, shown on hover."""
    # Not upper-cased like other headers: r and R, α and Α, γ and Γ would read as other symbols.
    return lazy(
        lambda: format_html('<span title="{}" style="text-transform: none">{}</span>', explanation, label),
        SafeString,
    )()


# What the fitted parameters mean, for someone who has not read the papers.
R_HELP = _(
    "Purchase frequency (shape). With α: while active, the average customer buys about r / α times a day."
)
ALPHA_HELP = _("Purchase frequency (scale, in days): the larger α, the less often customers buy.")
AB_HELP = _(
    "Stopping: after each purchase a customer stops buying for good with a chance of about a / (a + b)."
)
LL_HELP = _("Log-likelihood: how well the model fits the orders. Closer to zero is better; compare runs on the "
            "same customers only.")  # fmt: skip
GG_HELP = _("Spend per purchase: the average customer spends about p × γ / (q − 1) per purchase.")
BGNBD_DESCRIPTION = _(
    "How often customers buy again and when they stop, fitted by maximum likelihood on every customer with "
    "an order; time in days (α in weeks for comparison with the paper). r and α: while active, the average "
    "customer buys about r / α times a day. a and b: after each purchase a customer stops buying for good "
    "with a chance of about a / (a + b). The log-likelihood says how well the model fits the orders: closer "
    "to zero is better, and it compares only runs on the same customers."
)
GG_DESCRIPTION = _(
    "How much customers spend per purchase: the average customer spends about p × γ / (q − 1). Together "
    "with BG/NBD it gives each customer's predicted value for the next 365 days."
)


@admin.register(LifecycleSettings)
class LifecycleSettingsAdmin(ModelAdmin):
    fieldsets = [
        (None, {"fields": ["mode", "new_days"]}),
        (
            _("Thresholds in purchase cycles"),
            {
                "fields": [
                    "active_cycles",
                    "at_risk_cycles",
                    "dormant_cycles",
                    "min_cycle_days",
                    "max_cycle_days",
                    "default_cycle_days",
                ]
            },
        ),
        (_("Fixed thresholds in days"), {"fields": ["active_days", "at_risk_days", "dormant_days"]}),
        (_("Value tiers"), {"fields": ["high_value_share", "medium_value_share"]}),
        (_("Computation"), {"fields": ["latest_computation", "recompute"]}),
    ]
    readonly_fields = ["latest_computation", "recompute"]

    def has_add_permission(self, request):
        return False  # the one row is created on first use

    def has_delete_permission(self, request, obj=None):
        return False

    def changelist_view(self, request, extra_context=None):
        settings = LifecycleSettings.load()
        return HttpResponseRedirect(reverse("admin:crm_lifecyclesettings_change", args=[settings.pk]))

    @admin.display(description=_("latest computation"))
    def latest_computation(self, obj):
        run = metrics_latest_run()
        if run is None:
            return gettext("Never computed.")
        return format_html(
            '<a href="{}">{}</a>',
            reverse("admin:crm_metricsrun_change", args=[run.pk]),
            gettext("As of %(as_of)s: %(customers)s customers, %(changes)s stage changes, %(seconds)s s")
            % {
                "as_of": run.as_of,
                "customers": f"{run.customers:,}",
                "changes": f"{run.stage_changes:,}",
                "seconds": _number(run.duration_seconds, 1),
            },
        )

    @admin.display(description=_("recompute"))
    def recompute(self, obj):
        return format_html(
            '<input type="submit" name="{}" value="{}">',
            RECOMPUTE,
            gettext("Save and recompute all metrics now"),
        )

    class Media:
        js = [JOB_PROGRESS_JS]

    def save_model(self, request, obj, form, change):
        recompute = RECOMPUTE in request.POST
        # Before queueing: the run the worker starts afterwards is the first one started since.
        request._recompute_requested_at = timezone.now()
        lifecycle_settings_save(settings=obj, recompute=recompute)

    def response_change(self, request, obj):
        if RECOMPUTE in request.POST:
            if not self.has_change_permission(request, obj):
                return super().response_change(request, obj)
            self.message_user(
                request,
                job_progress_message(
                    text=gettext(
                        "The settings are saved; the metrics of every customer are being recomputed."
                    ),
                    status_url=reverse("crm_analytics:metrics_job"),
                    since=getattr(request, "_recompute_requested_at", None) or timezone.now(),
                ),
                messages.SUCCESS,
            )
            return HttpResponseRedirect(request.path)
        return super().response_change(request, obj)


@admin.register(MetricsRun)
class MetricsRunAdmin(ReadOnlyAdmin):
    list_display = [
        "as_of",
        "status",
        "started_at",
        "duration_seconds",
        "customers",
        "stage_changes",
        "r",
        "alpha_days",
        "alpha_weeks",
        "a",
        "b",
        "bgnbd_ll",
        "p",
        "q",
        "gamma",
        "gg_ll",
    ]
    list_filter = ["status"]
    date_hierarchy = "started_at"
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "as_of",
                    "status",
                    "started_at",
                    "finished_at",
                    "duration_seconds",
                    "customers",
                    "buyers",
                    "repeat_buyers",
                    "stage_changes",
                    "message_text",
                    "timings",
                ]
            },
        ),
        (
            _("BG/NBD (Fader, Hardie & Lee 2005): repeat purchases"),
            {
                "fields": [
                    "bgnbd_r",
                    "bgnbd_alpha",
                    "alpha_weeks",
                    "bgnbd_a",
                    "bgnbd_b",
                    "bgnbd_log_likelihood",
                    "bgnbd_converged",
                ],
                "description": BGNBD_DESCRIPTION,
            },
        ),
        (
            _("Gamma-Gamma (Fader & Hardie 2013): spend per purchase"),
            {
                "fields": ["gg_p", "gg_q", "gg_gamma", "gg_log_likelihood", "gg_converged"],
                "description": GG_DESCRIPTION,
            },
        ),
    ]

    readonly_fields = ["message_text"]

    @admin.display(description=_("message"))
    def message_text(self, obj):
        return run_message_text(obj.message)  # stored as codes, put into words in the reader's language

    @admin.display(description=_explained("r", R_HELP))
    def r(self, obj):
        return _number(obj.bgnbd_r)

    @admin.display(description=_explained(_("α (days)"), ALPHA_HELP))
    def alpha_days(self, obj):
        return _number(obj.bgnbd_alpha)

    @admin.display(description=_explained(_("α (weeks)"), ALPHA_HELP))
    def alpha_weeks(self, obj):
        return _number(obj.alpha_weeks)

    @admin.display(description=_explained("a", AB_HELP))
    def a(self, obj):
        return _number(obj.bgnbd_a)

    @admin.display(description=_explained("b", AB_HELP))
    def b(self, obj):
        return _number(obj.bgnbd_b)

    @admin.display(description=_explained(_("BG/NBD LL"), LL_HELP))
    def bgnbd_ll(self, obj):
        return _number(obj.bgnbd_log_likelihood, 1)

    @admin.display(description=_explained("p", GG_HELP))
    def p(self, obj):
        return _number(obj.gg_p)

    @admin.display(description=_explained("q", GG_HELP))
    def q(self, obj):
        return _number(obj.gg_q)

    @admin.display(description=_explained("γ", GG_HELP))
    def gamma(self, obj):
        return _number(obj.gg_gamma)

    @admin.display(description=_explained(_("Gamma-Gamma LL"), LL_HELP))
    def gg_ll(self, obj):
        return _number(obj.gg_log_likelihood, 1)


@admin.register(CustomerMetrics)
class CustomerMetricsAdmin(ReadOnlyAdmin):
    """A million rows: never counted in full, filters on indexed columns, search by exact external id."""

    paginator = EstimatedCountPaginator
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    list_per_page = 50
    list_select_related = ["customer"]
    list_display = [
        "customer_link",
        "lifecycle_stage",
        "rfm_segment",
        "rfm",
        "value_tier",
        "order_count",
        "total_value_display",
        "last_order_date",
        "p_alive_display",
        "expected_purchases_90d_display",
        "predicted_clv_display",
        "churn_risk_display",
        "expected_next_purchase_date",
    ]
    list_filter = ["lifecycle_stage", "rfm_segment", "value_tier", "sleeping_high_value"]
    search_fields = ["=customer__external_id"]
    search_help_text = _("Exact customer external id.")
    ordering = ["-customer_id"]
    readonly_fields = [f.name for f in CustomerMetrics._meta.fields]

    @admin.display(description=_("customer"), ordering="customer_id")
    def customer_link(self, obj):
        return format_html(
            '<a href="{}">{}</a>', reverse("admin:crm_customer_change", args=[obj.customer_id]), obj.customer
        )

    @admin.display(description="RFM")
    def rfm(self, obj):
        if obj.r_score is None:
            return "—"
        return f"{obj.r_score}{obj.f_score}{obj.m_score}"

    @admin.display(description=_("P(alive)"), ordering="p_alive")
    def p_alive_display(self, obj):
        return _number(obj.p_alive, 3)

    @admin.display(description=_("purchases, next 90 days"))
    def expected_purchases_90d_display(self, obj):
        return _number(obj.expected_purchases_90d, 2)

    @admin.display(description=_("net spend"), ordering="total_value")
    def total_value_display(self, obj):
        return _money(obj.total_value)

    @admin.display(
        description=_explained(
            _("predicted value, next 365 days"),
            _("What the customer is expected to spend in the next 365 days (BG/NBD and Gamma-Gamma models)."),
        ),
        ordering="predicted_clv_365d",
    )
    def predicted_clv_display(self, obj):
        return _money(obj.predicted_clv_365d)

    @admin.display(description=_("churn risk"), ordering="churn_risk")
    def churn_risk_display(self, obj):
        return _number(obj.churn_risk, 2)


class CustomerMetricsInline(StackedInline):
    """For the customer 360 page (CustomerAdmin, crm/admin/customers.py, may add it to its inlines): the metrics row."""

    model = CustomerMetrics
    can_delete = False
    extra = 0
    max_num = 0
    verbose_name_plural = _("metrics")
    readonly_fields = [f.name for f in CustomerMetrics._meta.fields if f.name != "customer"]
    exclude = ["customer"]

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


# --- The "Metrics" panel of the customer 360 page ----------------------------------------------------

# `{% include %}` renders any object with a render() method, so the panel needs no template file.
_PANEL = Template(
    """{% load i18n l10n %}{% with m=panel_context.metrics %}{% if not m %}
<p class="c360-empty">{% translate "Not computed yet: metrics appear after the next nightly computation." %}</p>
{% else %}<dl class="c360-dl">
<dt>{% translate "lifecycle stage" %}</dt><dd>{{ m.get_lifecycle_stage_display }}
 <small>({% blocktranslate with since=m.stage_since %}since {{ since }}{% endblocktranslate %})</small></dd>
{% if m.r_score %}<dt>RFM</dt><dd>{{ m.r_score }}{{ m.f_score }}{{ m.m_score }} · {{ m.get_rfm_segment_display }}</dd>{% endif %}
<dt>{% translate "value tier" %}</dt><dd>{{ m.get_value_tier_display }}{% if m.sleeping_high_value %}
 · <strong>{% translate "sleeping high value" %}</strong>{% endif %}</dd>
<dt>{% translate "orders" %}</dt><dd>{{ m.order_count }} · {{ m.total_value }} {{ panel_context.currency }}{% if m.purchase_cycle_days %}
 · {% blocktranslate with days=m.purchase_cycle_days|floatformat:0 %}every {{ days }} days{% endblocktranslate %}{% endif %}</dd>
{% if m.p_alive is not None %}<dt>{% translate "probability alive" %}</dt><dd>{{ m.p_alive|floatformat:2 }}</dd>
<dt>{% translate "expected purchases, next 90 days" %}</dt><dd>{{ m.expected_purchases_90d|floatformat:2 }}</dd>
<dt>{% translate "predicted value, next 365 days" %}</dt><dd>{% if m.predicted_clv_365d is not None %}{{ m.predicted_clv_365d }} {{ panel_context.currency }}{% else %}—{% endif %}</dd>
<dt>{% translate "expected next purchase" %}</dt><dd>{{ m.expected_next_purchase_date|default:"—" }}</dd>{% endif %}
{% if m.churn_risk is not None %}<dt>{% translate "churn risk" %}</dt><dd>{{ m.churn_risk|floatformat:2 }}</dd>{% endif %}
</dl><p class="c360-empty">{% blocktranslate with as_of=m.as_of %}As of {{ as_of }}.{% endblocktranslate %}</p>
{% endif %}{% endwith %}"""
)


def _panel_context(request, customer) -> dict:
    # Amounts are in the reporting currency: the metrics add up the orders in it.
    return {
        "metrics": customer_metrics_get(customer_id=customer.pk),
        "currency": reporting_currency(),
    }  # one query


customer_360_panel_register(
    Customer360Panel(slot="metrics", title=_("Metrics"), template_name=_PANEL, context=_panel_context)
)
