"""The "Journeys" panel of the customer 360 page (crm's page; journeys fills the slot through crm's
registry, so crm never imports journeys), built as campaigns' Messages panel is: the customer's
enrollments, newest first, each with its journey, version, state, node and, for one that ended, why."""

from __future__ import annotations

from django.urls import reverse
from django.utils.translation import gettext_lazy as _

from crm.admin.customer_360 import Customer360Panel, customer_360_panel_register
from journeys.selectors import customer_enrollments

ENROLLMENTS_PAGE_SIZE = 10
ENROLLMENTS_MAX_PAGE = 200
PAGE_PARAMETER = "enrollments"


def _page(request) -> int:
    try:
        page = int(request.GET.get(PAGE_PARAMETER, 1))
    except (TypeError, ValueError):
        return 1
    return min(max(page, 1), ENROLLMENTS_MAX_PAGE)


def _journeys_context(request, customer) -> dict:
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


customer_360_panel_register(
    Customer360Panel(
        slot="journeys",
        title=_("Journeys"),
        template_name="admin/journeys/customer_360_journeys.html",
        context=_journeys_context,
    )
)
