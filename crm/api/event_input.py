"""Validation of a bulk-event body in plain Python.

The shape is the one EventInSerializer documents (a test keeps the two in step), checked without DRF's
per-field machinery: a serializer's cost per event, at 1,000 events a request, was a large share of the
ingestion budget (see BENCHMARKS.md, HTTP bulk event ingestion). Identifier normalisation, property size and
customer lookups are the service's (crm.services.events); this module checks types, lengths and formats only.
"""

import re
from dataclasses import dataclass, field
from datetime import datetime

from django.utils.translation import gettext as _

from crm.api.fields import parse_moment, text_problem
from crm.event_types import EventPropertiesInvalid, event_properties_check
from crm.models import Channel
from crm.services.events import CustomerRef, EventInput

EVENT_FIELDS = frozenset({"external_id", "type", "occurred_at", "channel", "properties", "customer"})
CUSTOMER_FIELDS = frozenset({"id", "external_id", "identities"})
IDENTITY_FIELDS = frozenset({"kind", "value"})
TYPE_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
MAX_IDENTITIES = 20
MAX_ID = 2**63 - 1  # bigint
_CHANNELS = frozenset(Channel.values)


class _Invalid(Exception):
    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field, self.message = field, message


@dataclass
class ParsedEvents:
    items: list[EventInput] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)  # request index of each item
    errors: list[dict] = field(default_factory=list)


def parse_events(raw_items: list, *, now: datetime) -> ParsedEvents:
    parsed = ParsedEvents()
    for index, raw in enumerate(raw_items):
        try:
            item = _event(raw, now=now)
        except _Invalid as invalid:
            parsed.errors.append({"index": index, "field": invalid.field, "message": invalid.message})
            continue
        parsed.items.append(item)
        parsed.positions.append(index)
    return parsed


def _object(raw, fields: frozenset, path: str) -> dict:
    if not isinstance(raw, dict):
        raise _Invalid(path or "non_field_errors", _("Expected a JSON object."))
    if not fields.issuperset(raw):
        unknown = sorted(str(k) for k in raw if k not in fields)[0]
        raise _Invalid(f"{path}.{unknown}" if path else unknown, _("Unknown field."))
    return raw


def _text(raw: dict, name: str, path: str, *, max_length: int, required: bool = False) -> str | None:
    value = raw.get(name)
    if value is None:
        if required or name in raw:  # an explicit null is a mistake too, not an absent value
            raise _Invalid(path, _("This field is required.") if name not in raw else _("May not be null."))
        return None
    if not isinstance(value, str):
        raise _Invalid(path, _("Expected a string."))
    if not value.strip():
        raise _Invalid(path, _("May not be blank."))
    if len(value) > max_length:
        raise _Invalid(path, _("At most %(n)d characters.") % {"n": max_length})
    problem = text_problem(value)
    if problem:
        raise _Invalid(path, problem)
    return value


def _event(raw, *, now: datetime) -> EventInput:
    raw = _object(raw, EVENT_FIELDS, "")
    event_type = _text(raw, "type", "type", max_length=64, required=True)
    if not TYPE_PATTERN.fullmatch(event_type):
        raise _Invalid(
            "type", _("Use a slug: lowercase letters, digits, _ and -, starting with a letter or digit.")
        )
    if "occurred_at" not in raw:
        raise _Invalid("occurred_at", _("This field is required."))
    try:
        occurred_at = parse_moment(raw["occurred_at"], now=now)
    except ValueError as exc:
        raise _Invalid("occurred_at", str(exc))
    channel = raw.get("channel", "")
    if channel not in _CHANNELS and channel != "":
        raise _Invalid(
            "channel", _("Unknown channel; one of %(choices)s.") % {"choices": ", ".join(Channel.values)}
        )
    properties = raw.get("properties", {})
    if not isinstance(properties, dict):
        raise _Invalid("properties", _("Expected a JSON object."))
    try:
        event_properties_check(event_type, properties)
    except EventPropertiesInvalid as exc:
        raise _Invalid(f"properties.{exc.field}", str(exc.message))
    if "customer" not in raw:
        raise _Invalid("customer", _("This field is required."))
    return EventInput(
        type=event_type,
        occurred_at=occurred_at,
        customer=_customer(raw["customer"]),
        properties=properties,
        channel=channel,
        external_id=_text(raw, "external_id", "external_id", max_length=100),
    )


def _customer(raw) -> CustomerRef:
    raw = _object(raw, CUSTOMER_FIELDS, "customer")
    customer_id = raw.get("id")
    if customer_id is not None and (type(customer_id) is not int or not 1 <= customer_id <= MAX_ID):
        raise _Invalid("customer.id", _("Expected a positive integer."))
    external_id = _text(raw, "external_id", "customer.external_id", max_length=64)
    identities = raw.get("identities", [])
    if not isinstance(identities, list):
        raise _Invalid("customer.identities", _("Expected a list of objects."))
    if len(identities) > MAX_IDENTITIES:
        raise _Invalid("customer.identities", _("At most %(n)d identities.") % {"n": MAX_IDENTITIES})
    pairs = []
    for position, identity in enumerate(identities):
        path = f"customer.identities[{position}]"
        identity = _object(identity, IDENTITY_FIELDS, path)
        kind = _text(identity, "kind", f"{path}.kind", max_length=40, required=True)
        value = _text(identity, "value", f"{path}.value", max_length=200, required=True)
        pairs.append((kind, value))
    if customer_id is not None and (external_id is not None or pairs):
        raise _Invalid("customer", _("Give either the customer's id or identifiers, not both."))
    if customer_id is None and external_id is None and not pairs:
        raise _Invalid("customer", _("Give the customer's id, external_id or identities."))
    return CustomerRef(id=customer_id, external_id=external_id, identities=tuple(pairs))
