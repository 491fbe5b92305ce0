"""The "Points and tier" panel of the customer 360 page (crm's page; loyalty fills the slot through
crm's registry, so crm never imports loyalty)."""

from __future__ import annotations

from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from crm.admin.customer_360 import Customer360Panel, customer_360_panel_register
from loyalty.selectors import customer_points_overview


def _points_context(request, customer) -> dict:
    overview = customer_points_overview(customer_id=customer.pk, now=timezone.now())
    return {"points": overview, "can_view_ledger": request.user.has_perm("loyalty.view_loyaltyaccount")}


customer_360_panel_register(
    Customer360Panel(
        slot="points",
        title=_("Points and tier"),
        template_name="admin/loyalty/customer_360_points.html",
        context=_points_context,
    )
)
