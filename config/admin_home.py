"""The admin home page (unfold's DASHBOARD_CALLBACK): the figures a marketing lead opens the day with,
each linking to the filtered list behind it. The figures come from each app's selectors (crm's customers
and orders, loyalty's programme); config/ composes them because it is what knows every app (DESIGN.md §4).
Campaigns and journeys have a slot each, filled once those apps exist."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from urllib.parse import urlencode

from django.urls import reverse
from django.utils import timezone
from django.utils.formats import number_format
from django.utils.translation import gettext_lazy as _
from django.utils.translation import pgettext_lazy

from campaigns.models import MessageStatus
from campaigns.selectors import messages_home_figures
from crm.models.metrics import LifecycleStage
from crm.selectors.home import HOME_WINDOW_DAYS, customer_home_figures
from loyalty.models import EntryKind, LoyaltyAccount
from loyalty.selectors import loyalty_home_figures

CURRENCY_SIGNS = {"CNY": "¥", "USD": "$", "EUR": "€", "HKD": "HK$"}


@dataclass(frozen=True)
class Figure:
    label: str
    value: object  # a number, or None when there is nothing to compute from yet
    link: str
    kind: str = "count"  # count, money, percent, points
    detail: str = ""
    change: float | None = None  # against the previous window, as a fraction


def grouped(number) -> str:
    """A whole number in the active language's grouping (¥56,871 in both languages, config/formats)."""
    return number_format(number, 0, force_grouping=True)


def _changelist(model: str, **params) -> str:
    url = reverse(f"admin:{model}_changelist")
    return f"{url}?{urlencode(params)}" if params else url


def _change(current, previous) -> float | None:
    if not previous:
        return None
    return float((Decimal(current) - Decimal(previous)) / Decimal(previous))


def messages_figures(*, now) -> list[Figure]:
    """The outbox today: sent since the business day began, and waiting (queued or deferred)."""
    figures = messages_home_figures(now=now)
    since = figures.day_start.astimezone(timezone.get_default_timezone()).isoformat(sep=" ")
    return [
        Figure(
            _("Messages sent today"),
            figures.sent_today,
            _changelist("campaigns_message", sent_at__gte=since),
            detail=_("%(failed)s failed for good today") % {"failed": grouped(figures.failed_today)},
        ),
        Figure(
            _("Messages waiting to be sent"),
            figures.queued,
            _changelist("campaigns_message", status__in=f"{MessageStatus.QUEUED},{MessageStatus.DEFERRED}"),
            detail=_("queued or deferred (quiet hours, caps, provider retries)"),
        ),
    ]


def home_context(*, now, with_messages: bool = False) -> dict:
    crm = customer_home_figures(now=now)
    loyalty = loyalty_home_figures()
    window = {
        "placed_at__gte": crm.current.start.astimezone(timezone.get_default_timezone()).isoformat(sep=" "),
        "placed_at__lt": crm.current.end.astimezone(timezone.get_default_timezone()).isoformat(sep=" "),
    }
    sign = CURRENCY_SIGNS.get(loyalty.currency, loyalty.currency + " ")
    days = {"days": HOME_WINDOW_DAYS}
    headline = [
        Figure(_("Customers"), crm.customers, _changelist("crm_customer", erased="no")),
        Figure(
            pgettext_lazy("loyalty programme", "Members"),
            loyalty.members,
            _changelist("loyalty_loyaltyaccount", status__exact=LoyaltyAccount.Status.ACTIVE),
        ),
        Figure(
            _("Active customers (%(days)s days)") % days,
            crm.active_customers,
            _changelist("crm_customer", active="30"),
            detail=_("ordered or did something we track"),
        ),
        Figure(
            _("GMV (%(days)s days)") % days,
            crm.gmv,
            _changelist("crm_order", **window),
            kind="money",
            change=_change(crm.gmv, crm.previous_gmv),
            detail=_("previous %(days)s days: %(sign)s%(value)s")
            % {**days, "sign": sign, "value": grouped(crm.previous_gmv)},
        ),
        Figure(
            _("Orders (%(days)s days)") % days,
            crm.orders,
            _changelist("crm_order", **window),
            change=_change(crm.orders, crm.previous_orders),
            detail=_("previous %(days)s days: %(value)s") % {**days, "value": grouped(crm.previous_orders)},
        ),
        Figure(
            _("Repeat-purchase rate"),
            crm.repeat_rate,
            _changelist("crm_customer", purchases="repeat"),
            kind="percent",
            detail=_("%(repeat)s of %(buyers)s buyers ordered twice or more")
            % {"repeat": grouped(crm.repeat_buyers), "buyers": grouped(crm.buyers)},
        ),
        Figure(
            _("Sleeping high-value customers"),
            crm.sleeping_high_value,
            _changelist("crm_customer", metrics__sleeping_high_value__exact="1"),
            detail=_("high value and dormant: win them back"),
        ),
        Figure(
            _("Points liability"),
            loyalty.liability_value,
            _changelist("loyalty_loyaltyaccount", status__exact=LoyaltyAccount.Status.ACTIVE, o="-4"),
            kind="money",
            detail=_("%(points)s points outstanding (%(pending)s pending)")
            % {"points": grouped(loyalty.outstanding_points), "pending": grouped(loyalty.pending_points)},
        ),
        Figure(
            _("Redemption rate"),
            loyalty.redemption_rate,
            _changelist("loyalty_ledgerentry", kind__exact=EntryKind.REDEEM),
            kind="percent",
            detail=_("%(redeemed)s of %(issued)s points issued were redeemed")
            % {"redeemed": grouped(loyalty.redeemed_points), "issued": grouped(loyalty.issued_points)},
        ),
    ]
    stages = [
        Figure(
            stage.label,
            crm.stage_counts[stage.value],
            _changelist("crm_customer", metrics__lifecycle_stage__exact=stage.value),
        )
        for stage in LifecycleStage
    ]
    stage_total = sum(crm.stage_counts.values()) or 1
    return {
        "home_figures": headline,
        "home_stages": [(figure, figure.value / stage_total) for figure in stages],
        "home_uncomputed": crm.uncomputed,
        "home_metrics_as_of": crm.metrics_as_of,
        "home_currency_sign": sign,
        "home_window": crm.current,
        # Filled by the campaigns and journeys apps when they land (their selectors, composed here).
        "home_slots": [
            {
                "id": "campaigns",
                "title": _("Campaigns sending"),
                "note": _("Arrives with the campaigns app"),
                # Until campaigns arrive, what the delivery pipeline did today.
                "figures": messages_figures(now=now) if with_messages else [],
            },
            {"id": "journeys", "title": _("Journeys live"), "note": _("Arrives with the journeys app")},
        ],
    }


def dashboard_callback(request, context: dict) -> dict:
    """unfold's DASHBOARD_CALLBACK: the home page's figures, for a user who may see the customer list."""
    if request.user.has_perm("crm.view_customer"):
        context.update(
            home_context(now=timezone.now(), with_messages=request.user.has_perm("campaigns.view_message"))
        )
    context["title"] = _("Home")
    return context
