"""The customer 360 page (the customer's change view): its data comes from the selector
crm.selectors.customer_360.customer_360; this module adds what depends on the request (permissions,
forms, links) and the panels that apps to the right of crm register into its slots."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from django.urls import reverse
from django.utils.translation import gettext_lazy as _

from crm.admin.forms import ConsentSetForm
from crm.models import Customer
from crm.selectors.customer_360 import customer_360
from crm.selectors.event_summaries import event_summaries


@dataclass(frozen=True)
class Customer360Panel:
    """A panel a later app adds to the customer 360 page, in one of the slots below.

    `context(request, customer)` must run a fixed number of queries (the page's query count is pinned);
    its result is available to `template_name` as `panel_context`."""

    slot: str
    title: str
    template_name: str
    context: Callable | None = None


CUSTOMER_360_SLOTS = {
    "points": _("Points and tier"),
    "messages": _("Messages"),
    "journeys": _("Journeys"),
    "metrics": _("Metrics"),
}

# What an empty slot says: which module fills it and with what, so nobody takes it for missing data.
CUSTOMER_360_PLACEHOLDERS = {
    "points": _("Filled in by the Loyalty module: balance, tier and ledger."),
    "messages": _(
        "Filled in by the Campaigns module: the messages sent to this customer and how they responded."
    ),
    "journeys": _("Filled in by the Journeys module: the automated journeys this customer is in."),
    "metrics": _("Filled in by the customer metrics: lifecycle stage, RFM and predicted value."),
}


_customer_360_panels: dict[str, Customer360Panel] = {}


def customer_360_panel_register(panel: Customer360Panel) -> None:
    """Fill a slot of the customer 360 page. Apps to the right of crm call this from their AppConfig.ready()
    or admin module, so crm never imports them."""
    if panel.slot not in CUSTOMER_360_SLOTS:
        raise ValueError(f"unknown customer 360 slot {panel.slot!r}; slots: {', '.join(CUSTOMER_360_SLOTS)}")
    _customer_360_panels[panel.slot] = panel


def _page_number(value) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 1


def _properties_json(properties) -> str:
    """The raw properties, shown on demand under the readable line."""
    if not properties:
        return ""
    return json.dumps(properties, ensure_ascii=False, indent=1, sort_keys=True, default=str)


def customer_360_context(request, customer: Customer, *, model_admin) -> dict:
    """The 360 page's template context: the selector's data, what this user may do with it, and the panels."""
    user = request.user
    can_edit_tags = not customer.is_erased and user.has_perm("crm.add_customertag")
    data = customer_360(
        customer=customer,
        timeline_page=_page_number(request.GET.get("timeline")),
        with_tag_choices=can_edit_tags,
    )
    slots = {}
    for key, title in CUSTOMER_360_SLOTS.items():
        panel = _customer_360_panels.get(key)
        slots[key] = {
            "key": key,
            "title": panel.title if panel else title,
            "panel": panel,
            "placeholder": CUSTOMER_360_PLACEHOLDERS[key],
            "panel_context": panel.context(request, customer) if panel and panel.context else {},
        }
    return {
        **data,
        "customer": customer,
        "consent_form": ConsentSetForm(),
        "can_set_consent": not customer.is_erased and model_admin.has_consent_permission(request),
        "can_add_tags": can_edit_tags,
        "can_remove_tags": not customer.is_erased and user.has_perm("crm.delete_customertag"),
        "orders_url": reverse("admin:crm_order_changelist") + f"?customer__id__exact={customer.pk}",
        "events": [
            {"event": e, "summary": summary, "json": _properties_json(e.properties)}
            for e, summary in zip(data["events"], event_summaries(events=data["events"]), strict=True)
        ],
        "events_url": reverse("admin:crm_event_changelist") + f"?customer__id__exact={customer.pk}",
        "can_export": model_admin.has_export_permission(request),
        "can_erase": not customer.is_erased and model_admin.has_erase_permission(request),
        "slots": slots,
    }
