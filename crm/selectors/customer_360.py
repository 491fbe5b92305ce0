"""The reads behind a customer's 360 page: profile records, consent, tags, orders, the behaviour timeline,
merges, privacy requests and the audit history, in a fixed number of queries whatever the customer's size
(the page's query count is pinned by a test)."""

from __future__ import annotations

from django.db.models import Prefetch
from django.utils.translation import gettext

from crm.models import (
    ConsentChange,
    ConsentChannel,
    Customer,
    CustomerIdentity,
    CustomerTag,
    Order,
    OrderLine,
    Refund,
    Tag,
)
from crm.selectors.customers import customer_timeline

TIMELINE_PAGE_SIZE = 50
TIMELINE_MAX_PAGE = 2_000
ORDERS_SHOWN = 10
CONSENT_CHANGES_SHOWN = 20
HISTORY_SHOWN = 12
RECORDS_SHOWN = 20
TAG_CHOICES_MAX = 300


def field_label(model, name: str) -> str:
    try:
        return str(model._meta.get_field(name).verbose_name)
    except Exception:
        return name


def _recent_changes(customer: Customer) -> list[dict]:
    """The latest audit history of the customer, its identifiers and its tags, newest first, each with
    who did it and (for the customer) the fields before and after. Three queries."""
    records = list(
        Customer.history.filter(id=customer.pk)
        .select_related("history_user")
        .order_by("-history_date", "-history_id")[: HISTORY_SHOWN + 1]
    )
    changes = []
    for index, newer in enumerate(records[:HISTORY_SHOWN]):
        # The record after the last one shown is fetched only to diff against.
        older = records[index + 1] if index + 1 < len(records) else None
        fields = []
        if older is not None and newer.history_type == "~":
            delta = newer.diff_against(older)
            fields = [
                {"field": field_label(Customer, c.field), "old": c.old, "new": c.new} for c in delta.changes
            ]
        changes.append(
            {
                "at": newer.history_date,
                "user": newer.history_user,
                "what": gettext("Profile"),
                "type": newer.history_type,
                "fields": fields,
            }
        )
    identity_history = CustomerIdentity.history.filter(customer_id=customer.pk)
    for record in identity_history.select_related("history_user").order_by("-history_date")[:HISTORY_SHOWN]:
        changes.append(
            {
                "at": record.history_date,
                "user": record.history_user,
                "what": gettext("Identifier %(kind)s: %(value)s")
                % {"kind": record.kind, "value": record.value},
                "type": record.history_type,
                "fields": [],
            }
        )
    tag_history = CustomerTag.history.filter(customer_id=customer.pk).select_related("history_user", "tag")
    for record in tag_history.order_by("-history_date")[:HISTORY_SHOWN]:
        changes.append(
            {
                "at": record.history_date,
                "user": record.history_user,
                "what": gettext("Tag %(name)s") % {"name": record.tag.name if record.tag else record.tag_id},
                "type": record.history_type,
                "fields": [],
            }
        )
    changes.sort(key=lambda c: c["at"], reverse=True)
    return changes[:HISTORY_SHOWN]


def customer_360(*, customer: Customer, timeline_page: int, with_tag_choices: bool) -> dict:
    """What the 360 page shows of `customer`: page `timeline_page` of the behaviour timeline (clamped to
    the pages there may be), the latest orders, consent and its history, tags (and, with
    `with_tag_choices`, the manual tags the customer could be given), merges, privacy requests and the
    audit history."""
    timeline_page = min(max(timeline_page, 1), TIMELINE_MAX_PAGE)
    offset = (timeline_page - 1) * TIMELINE_PAGE_SIZE
    # One row more than a page tells whether there is an older page, without counting the timeline.
    events = list(customer_timeline(customer_id=customer.pk)[offset : offset + TIMELINE_PAGE_SIZE + 1])

    orders_qs = Order.objects.filter(customer=customer)
    orders = list(
        orders_qs.order_by("-placed_at", "-id").prefetch_related(
            Prefetch("lines", queryset=OrderLine.objects.order_by("line_no")),
            Prefetch("refunds", queryset=Refund.objects.order_by("refunded_at", "id")),
        )[:ORDERS_SHOWN]
    )
    current = {c.channel: c for c in customer.consents.all()}
    tags = list(customer.customer_tags.select_related("tag").order_by("tag__name"))
    tag_choices = []
    if with_tag_choices:
        tagged = {t.tag_id for t in tags}
        tag_choices = [
            t
            for t in Tag.objects.filter(kind=Tag.Kind.MANUAL).order_by("name")[:TAG_CHOICES_MAX]
            if t.pk not in tagged
        ]
    return {
        "identities": list(customer.identities.order_by("kind", "value")),
        "consents": [
            {"channel": value, "label": label, "consent": current.get(value)}
            for value, label in ConsentChannel.choices
        ],
        "consent_changes": list(
            ConsentChange.objects.filter(customer=customer)
            .select_related("changed_by")
            .order_by("-occurred_at", "-id")[:CONSENT_CHANGES_SHOWN]
        ),
        "tags": tags,
        "tag_choices": tag_choices,
        "orders": orders,
        "orders_total": orders_qs.count(),
        "events": events[:TIMELINE_PAGE_SIZE],
        "timeline_page": timeline_page,
        "timeline_has_older": len(events) > TIMELINE_PAGE_SIZE and timeline_page < TIMELINE_MAX_PAGE,
        "merges": list(
            customer.merges_absorbed.select_related("performed_by").order_by("-performed_at")[:RECORDS_SHOWN]
        ),
        "privacy_requests": list(
            customer.privacy_requests.select_related("requested_by").order_by("-created_at")[:RECORDS_SHOWN]
        ),
        "changes": _recent_changes(customer),
    }
