"""The customer 360's "Journeys" slot, filled by journeys through crm's registry: the customer's win-back
history (selected when, by which programme, in which arm, what was sent, whether they came back)."""

from __future__ import annotations

from django.utils.translation import gettext_lazy as _

from crm.admin.customer_360 import Customer360Panel, customer_360_panel_register
from journeys.selectors import customer_winback_history

WINBACK_HISTORY_SHOWN = 10


def _winback_context(request, customer) -> dict:
    """One query (the selector's)."""
    if not request.user.has_perm("journeys.view_winbackassignment"):
        return {"forbidden": True}
    return {"rows": customer_winback_history(customer_id=customer.pk, limit=WINBACK_HISTORY_SHOWN)}


customer_360_panel_register(
    Customer360Panel(
        slot="journeys",
        title=_("Journeys and win-back"),
        template_name="admin/journeys/customer_360_winback.html",
        context=_winback_context,
    )
)
