"""Data-subject requests (PIPL / GDPR): hand a customer everything held on them, or erase them.

Rows of apps further right (loyalty, campaigns, journeys) are found generically through the foreign keys
that point at Customer, so crm never imports them (DESIGN.md §4).
"""

from __future__ import annotations

import json
import logging
from datetime import datetime

from django.core.serializers.json import DjangoJSONEncoder
from django.db import models, transaction
from django.utils import timezone
from django.utils.translation import gettext

from crm.clock import moment_display
from crm.models import (
    Consent,
    ConsentChange,
    ConsentStatus,
    Customer,
    CustomerIdentity,
    CustomerMerge,
    CustomerTag,
    Event,
    Order,
    PrivacyRequest,
)
from crm.services.consent import consent_set

logger = logging.getLogger(__name__)

EXPORT_FORMAT = "mo-customer-export/1"
ERASED_NAME = "已删除 / Erased"
# Profile fields that identify a person. Blanked on erasure; the rest (time zone, acquisition channel,
# utm fields, dates) only feeds aggregate statistics.
PERSONAL_FIELDS_BLANKED = ("email", "phone", "city", "region", "gender")

# crm models the export and the erasure handle by name; every other relation is handled generically.
_CRM_HANDLED = (
    Consent,
    ConsentChange,
    CustomerIdentity,
    CustomerTag,
    Order,
    Event,
    CustomerMerge,
    PrivacyRequest,
)


class PrivacyRefused(ValueError):
    """The request cannot be carried out (e.g. the customer is already erased)."""


def _history_model(model):
    return model.history.model


def _jsonable(value):
    # Round-trip through Django's encoder so datetimes, dates, decimals and UUIDs become plain JSON.
    return json.loads(json.dumps(value, cls=DjangoJSONEncoder))


def _other_relations():
    """(model, field name) of every foreign key to Customer that this module does not handle by name:
    rows of later apps, and many-to-many tables. Hidden relations (related_name="+") are included."""
    handled = set(_CRM_HANDLED) | {
        _history_model(m) for m in (Customer, CustomerIdentity, Consent, CustomerTag)
    }
    found = []
    for relation in Customer._meta.get_fields(include_hidden=True):
        if not relation.auto_created or relation.concrete or relation.many_to_many:
            continue  # many-to-many rows are reached through their (hidden) through-table relation
        model = relation.related_model
        if model in handled:
            continue
        found.append((model, relation.field.name))
    return found


def _other_rows(customer: Customer) -> dict[str, list[dict]]:
    rows: dict[str, list[dict]] = {}
    for model, field_name in _other_relations():
        values = list(model._default_manager.filter(**{field_name: customer.pk}).values())
        if values:
            rows.setdefault(model._meta.label, []).extend(values)
    return rows


def _customer_fields(customer: Customer) -> dict:
    return {f.attname: getattr(customer, f.attname) for f in Customer._meta.concrete_fields}


def customer_export_data(*, customer: Customer, requested_by=None, via: str = "admin") -> dict:
    """Everything held on `customer`, as JSON-ready data, recorded as a PrivacyRequest(kind=export)."""
    with transaction.atomic():
        customer = Customer.objects.get(pk=customer.pk)
        orders = []
        for order in (
            Order.objects.filter(customer=customer)
            .prefetch_related("lines", "refunds")
            .order_by("placed_at", "id")
        ):
            row = {
                f.attname: getattr(order, f.attname)
                for f in Order._meta.concrete_fields
                if f.name != "fingerprint"
            }
            row["lines"] = [
                {f.attname: getattr(line, f.attname) for f in line._meta.concrete_fields if f.name != "order"}
                for line in sorted(order.lines.all(), key=lambda line: line.line_no)
            ]
            row["refunds"] = [
                {
                    f.attname: getattr(refund, f.attname)
                    for f in refund._meta.concrete_fields
                    if f.name not in {"order", "fingerprint"}
                }
                for refund in order.refunds.all()
            ]
            orders.append(row)

        history = {
            "customer": list(
                _history_model(Customer).objects.filter(id=customer.pk).order_by("history_date").values()
            ),
            "identities": list(
                _history_model(CustomerIdentity)
                .objects.filter(customer_id=customer.pk)
                .order_by("history_date")
                .values()
            ),
            "consents": list(
                _history_model(Consent)
                .objects.filter(customer_id=customer.pk)
                .order_by("history_date")
                .values()
            ),
            "tags": list(
                _history_model(CustomerTag)
                .objects.filter(customer_id=customer.pk)
                .order_by("history_date")
                .values("history_date", "history_type", "tag_id", "source", "added_at")
            ),
        }
        data = {
            "format": EXPORT_FORMAT,
            "exported_at": timezone.now(),
            "customer": _customer_fields(customer),
            "identities": list(
                customer.identities.order_by("id").values("kind", "value", "source", "created_at")
            ),
            "consents": list(
                customer.consents.order_by("channel").values("channel", "status", "changed_at", "source")
            ),
            "consent_history": list(
                ConsentChange.objects.filter(customer=customer)
                .order_by("occurred_at", "id")
                .values("channel", "status", "previous_status", "occurred_at", "source", "recorded_at")
            ),
            "tags": list(
                customer.customer_tags.order_by("tag__name").values("tag__name", "source", "added_at")
            ),
            "orders": orders,
            "events": list(
                Event.objects.filter(customer=customer)
                .order_by("occurred_at", "id")
                .values("id", "type", "occurred_at", "channel", "properties", "external_id", "received_at")
                .iterator(chunk_size=5000)
            ),
            "merges": list(
                CustomerMerge.objects.filter(survivor=customer)
                .order_by("performed_at")
                .values("merged_customer_id", "merged_snapshot", "moved", "trigger", "reason", "performed_at")
            ),
            "privacy_requests": list(
                PrivacyRequest.objects.filter(customer=customer)
                .order_by("created_at")
                .values("kind", "via", "reason", "created_at")
            ),
            "audit_history": history,
            "other": _other_rows(customer),
        }
        data = _jsonable(data)
        summary = {
            "identities": len(data["identities"]),
            "consents": len(data["consents"]),
            "consent_changes": len(data["consent_history"]),
            "tags": len(data["tags"]),
            "orders": len(data["orders"]),
            "events": len(data["events"]),
            "merges": len(data["merges"]),
            "other": {label: len(rows) for label, rows in data["other"].items()},
        }
        request = PrivacyRequest.objects.create(
            customer=customer,
            kind=PrivacyRequest.Kind.EXPORT,
            requested_by=requested_by,
            via=via,
            summary=summary,
        )
    data["privacy_request_id"] = request.pk
    logger.info("customer data exported", extra={"customer": customer.pk, "privacy_request": request.pk})
    return data


def customer_erase_preview(*, customer: Customer) -> dict:
    """What an erasure would remove and what it keeps, for the confirmation page."""
    return {
        "identities": customer.identities.count(),
        "opted_in_consents": customer.consents.filter(status=ConsentStatus.OPTED_IN).count(),
        "tags": customer.customer_tags.count(),
        "events": Event.objects.filter(customer=customer).count(),
        "orders": Order.objects.filter(customer=customer).count(),
        "merges": CustomerMerge.objects.filter(survivor=customer).count(),
    }


def customer_erase(
    *,
    customer: Customer,
    requested_by=None,
    via: str = "admin",
    reason: str = "",
    now: datetime | None = None,
) -> PrivacyRequest:
    """Erase a customer's personal data and keep what accounting and aggregate statistics need.

    Erased: name (replaced by a fixed marker), email, phone, birthday, city, region, gender, external id
    (replaced by an opaque `erased-<id>`), every identifier (so the person cannot be found again by them),
    tags, the merged-customer snapshots, and the audit history that held any of these. Consents become
    opted-out (with history). Behaviour events stay for statistics but no longer point at the customer.
    Kept: the customer row itself (anonymised), orders, refunds, consent history, privacy requests.
    """
    now = now or timezone.now()
    with transaction.atomic():
        customer = Customer.objects.select_for_update().get(pk=customer.pk)
        if customer.is_erased:
            raise PrivacyRefused(
                gettext("Customer #%(id)s was already erased on %(date)s.")
                % {"id": customer.pk, "date": moment_display(customer.erased_at)}
            )
        identity_ids = list(customer.identities.values_list("id", flat=True))
        merged_ids = list(
            CustomerMerge.objects.filter(survivor=customer).values_list("merged_customer_id", flat=True)
        )

        opted_out = []
        for consent in list(customer.consents.exclude(status=ConsentStatus.OPTED_OUT)):
            consent_set(
                customer=customer,
                channel=consent.channel,
                status=ConsentStatus.OPTED_OUT,
                occurred_at=now,
                source="erasure",
                changed_by=requested_by,
            )
            opted_out.append(consent.channel)
        tags_removed, _ = CustomerTag.objects.filter(customer=customer).delete()
        CustomerIdentity.objects.filter(customer=customer).delete()
        # One UPDATE, not a loop: a customer may have millions of events.
        events_detached = Event.objects.filter(customer=customer).update(customer=None)
        merges_scrubbed = CustomerMerge.objects.filter(survivor=customer).update(
            merged_snapshot={"erased": True}
        )

        # Audit history holds the old personal values: drop the customer's (and the customers merged
        # into it) and their identifiers'. The save below writes one fresh, anonymised history row.
        history_purged = (
            _history_model(Customer).objects.filter(id__in=[customer.pk, *merged_ids]).delete()[0]
        )
        history_purged += (
            _history_model(CustomerIdentity)
            .objects.filter(
                models.Q(id__in=identity_ids) | models.Q(customer_id__in=[customer.pk, *merged_ids])
            )
            .delete()[0]
        )

        customer.name = ERASED_NAME
        for name in PERSONAL_FIELDS_BLANKED:
            setattr(customer, name, "")
        customer.birthday = None
        customer.external_id = f"erased-{customer.pk}"
        customer.erased_at = now
        customer._history_user = requested_by  # recorded even outside a request (management command)
        customer.save()

        other_kept = {}
        for model, field_name in _other_relations():
            count = model._default_manager.filter(**{field_name: customer.pk}).count()
            if count:
                other_kept[model._meta.label] = other_kept.get(model._meta.label, 0) + count
        summary = {
            "identities_deleted": len(identity_ids),
            "consents_opted_out": opted_out,
            "tags_removed": tags_removed,
            "events_detached": events_detached,
            "merge_snapshots_scrubbed": merges_scrubbed,
            "history_rows_purged": history_purged,
            "orders_kept": Order.objects.filter(customer=customer).count(),
            "other_rows_kept": other_kept,
        }
        request = PrivacyRequest.objects.create(
            customer=customer,
            kind=PrivacyRequest.Kind.ERASE,
            requested_by=requested_by,
            via=via,
            reason=reason,
            summary=summary,
            created_at=now,
        )
    logger.info("customer erased", extra={"customer": customer.pk, "privacy_request": request.pk})
    return request
