"""The "Messages" panel of the customer 360 page (crm's page; campaigns fills the slot through crm's
registry, so crm never imports campaigns): every message considered for the customer, newest first, and
for one not sent, why."""

from __future__ import annotations

from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from campaigns.selectors import customer_messages
from crm.admin.customer_360 import Customer360Panel, customer_360_panel_register

MESSAGES_PAGE_SIZE = 10
# Page links go this deep at most; the Messages list (filtered by customer) reaches every message.
MESSAGES_MAX_PAGE = 200
PAGE_PARAMETER = "messages"


def _page(request) -> int:
    try:
        page = int(request.GET.get(PAGE_PARAMETER, 1))
    except (TypeError, ValueError):
        return 1
    return min(max(page, 1), MESSAGES_MAX_PAGE)


def _messages_context(request, customer) -> dict:
    """One query: the page of messages (the customer's time zone comes with the customer); none for a
    user who may not see messages."""
    if not request.user.has_perm("campaigns.view_message"):
        return {"forbidden": True}
    page = _page(request)
    data = customer_messages(
        customer_id=customer.pk,
        limit=MESSAGES_PAGE_SIZE,
        offset=(page - 1) * MESSAGES_PAGE_SIZE,
        time_zone=customer.time_zone,
        now=timezone.now(),
    )
    return {
        "messages": data,
        "page": page,
        "previous_page": page - 1 if page > 1 else None,
        "next_page": page + 1 if data.has_more and page < MESSAGES_MAX_PAGE else None,
        "parameter": PAGE_PARAMETER,
        "list_url": reverse("admin:campaigns_message_changelist") + f"?customer__id__exact={customer.pk}",
    }


customer_360_panel_register(
    Customer360Panel(
        slot="messages",
        title=_("Messages"),
        template_name="admin/campaigns/customer_360_messages.html",
        context=_messages_context,
    )
)
