"""The "Journeys" slot of the customer 360 page (crm's page; journeys fills the slot through crm's
registry, so crm never imports journeys), built as campaigns' Messages panel is: the customer's
enrollments, newest first, each with its journey, version, state, node and, for one that ended, why; then
their win-back history (selected when, by which programme, in which arm, what was sent, whether they came
back)."""

from __future__ import annotations

from django.urls import reverse
from django.utils.translation import gettext_lazy as _

from crm.admin.customer_360 import Customer360Panel, customer_360_panel_register
from journeys.selectors import customer_enrollments, customer_winback_history

ENROLLMENTS_PAGE_SIZE = 10
ENROLLMENTS_MAX_PAGE = 200
PAGE_PARAMETER = "enrollments"
WINBACK_HISTORY_SHOWN = 10


def _page(request) -> int:
    try:
        page = int(request.GET.get(PAGE_PARAMETER, 1))
    except (TypeError, ValueError):
        return 1
    return min(max(page, 1), ENROLLMENTS_MAX_PAGE)


def _enrollments_context(request, customer) -> dict:
    """One query: the page of enrollments; none for a user who may not see enrollments."""
    if not request.user.has_perm("journeys.view_enrollment"):
        return {"forbidden": True}
    page = _page(request)
    data = customer_enrollments(
        customer_id=customer.pk, limit=ENROLLMENTS_PAGE_SIZE, offset=(page - 1) * ENROLLMENTS_PAGE_SIZE
    )
    return {
        "enrollments": data,
        "page": page,
        "previous_page": page - 1 if page > 1 else None,
        "next_page": page + 1 if data.has_more and page < ENROLLMENTS_MAX_PAGE else None,
        "parameter": PAGE_PARAMETER,
        "list_url": reverse("admin:journeys_enrollment_changelist") + f"?customer__id__exact={customer.pk}",
    }


def _winback_context(request, customer) -> dict:
    """One query (the selector's); none for a user who may not see win-back assignments."""
    if not request.user.has_perm("journeys.view_winbackassignment"):
        return {"forbidden": True}
    return {"rows": customer_winback_history(customer_id=customer.pk, limit=WINBACK_HISTORY_SHOWN)}


def _journeys_context(request, customer) -> dict:
    return {
        "enrollments": _enrollments_context(request, customer),
        "winback": _winback_context(request, customer),
    }


customer_360_panel_register(
    Customer360Panel(
        slot="journeys",
        title=_("Journeys and win-back"),
        template_name="admin/journeys/customer_360_journeys_panel.html",
        context=_journeys_context,
    )
)
