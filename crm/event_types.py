"""The catalogue of behaviour-event types: what each type means (a translatable label) and the shape of
its properties.

crm owns the log, so crm owns the catalogue; the apps to its right add their own types with
`event_type_register` from their AppConfig.ready() (loyalty: tier_changed, points_expiring), so crm never
names them. Internal writers (`crm.services.event_log.events_append`) may append only catalogued types
with properties that fit; the public events API also accepts a brand's own types (a shop's custom
`coupon_viewed`), and checks the properties of the catalogued ones.

A property schema is deliberately small: a name, a kind and whether it is required. Properties not named
in the schema are kept as they are: the log records what happened, and a brand's tracking often adds
context fields we do not know about.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from django.utils.functional import Promise
from django.utils.translation import gettext_lazy as _
from django.utils.translation import pgettext_lazy

TYPE_CODE_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")

# The kinds a property may have, with what they accept. "decimal" is money or a measure: a JSON number or
# a decimal string ("199.00"), since writers keep Decimal exact by sending it as text.
PROPERTY_KINDS = ("string", "integer", "decimal", "boolean", "datetime", "object", "array")


@dataclass(frozen=True, slots=True)
class PropertySpec:
    kind: str
    required: bool = False
    label: str | Promise = ""

    def __post_init__(self):
        if self.kind not in PROPERTY_KINDS:
            raise ValueError(f"unknown property kind {self.kind!r}; one of {', '.join(PROPERTY_KINDS)}")


@dataclass(frozen=True, slots=True)
class EventType:
    code: str
    label: str | Promise
    properties: Mapping[str, PropertySpec] = field(default_factory=dict)
    # Who writes it: "behaviour" types arrive from shops and tracking (API, CSV); "system" types are
    # written only by the product itself (orders, stage and tier changes).
    source: str = "behaviour"


class EventPropertiesInvalid(ValueError):
    """The properties of an event do not fit its type's schema; `field` names the property."""

    def __init__(self, field: str, message: str | Promise):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


_CATALOGUE: dict[str, EventType] = {}


def event_type_register(event_type: EventType) -> EventType:
    """Add a type to the catalogue. Registering the same definition twice (a module imported again) is
    harmless; two different definitions of one code is a programming error."""
    if not TYPE_CODE_RE.fullmatch(event_type.code):
        raise ValueError(f"event type code {event_type.code!r} is not a slug")
    existing = _CATALOGUE.get(event_type.code)
    if existing is not None and existing != event_type:
        raise ValueError(f"event type {event_type.code!r} is already registered differently")
    _CATALOGUE[event_type.code] = event_type
    return event_type


def event_type_get(code: str) -> EventType | None:
    return _CATALOGUE.get(code)


def event_types() -> list[EventType]:
    """Every catalogued type, by code."""
    return [_CATALOGUE[code] for code in sorted(_CATALOGUE)]


def event_type_label(code: str) -> str | Promise:
    """The translatable label of a type; a brand's own type shows as its code."""
    known = _CATALOGUE.get(code)
    return known.label if known else code


def event_properties_check(code: str, properties: Mapping[str, Any]) -> None:
    """Raise EventPropertiesInvalid if `properties` do not fit the schema of catalogued type `code`;
    types outside the catalogue are not checked here."""
    known = _CATALOGUE.get(code)
    if known is None:
        return
    for name, spec in known.properties.items():
        if name not in properties or properties[name] is None:
            if spec.required:
                raise EventPropertiesInvalid(name, _("This property is required for this event type."))
            continue
        problem = _kind_problem(spec.kind, properties[name])
        if problem:
            raise EventPropertiesInvalid(name, problem)


def _kind_problem(kind: str, value: Any) -> str | Promise | None:
    # bool is an int in Python: neither integer nor decimal accepts it.
    if kind == "string":
        return None if isinstance(value, str) else _("Expected a string.")
    if kind == "integer":
        ok = isinstance(value, int) and not isinstance(value, bool)
        return None if ok else _("Expected an integer.")
    if kind == "decimal":
        if isinstance(value, bool):
            return _("Expected a number or a decimal string.")
        if isinstance(value, int | float | Decimal):
            return None
        if isinstance(value, str):
            try:
                Decimal(value)
            except InvalidOperation:
                return _("Expected a number or a decimal string.")
            return None if Decimal(value).is_finite() else _("Expected a finite number.")
        return _("Expected a number or a decimal string.")
    if kind == "boolean":
        return None if isinstance(value, bool) else _("Expected true or false.")
    if kind == "datetime":
        if isinstance(value, datetime):
            return None
        if isinstance(value, str):
            try:
                datetime.fromisoformat(value)
            except ValueError:
                return _("Expected an ISO 8601 date-time.")
            return None
        return _("Expected an ISO 8601 date-time.")
    if kind == "object":
        return None if isinstance(value, dict) else _("Expected a JSON object.")
    return None if isinstance(value, list) else _("Expected a JSON array.")


# --- crm's own types -------------------------------------------------------------------------------------

PAGE_VIEW = "page_view"
PRODUCT_VIEW = "product_view"
SEARCH = "search"
APP_OPEN = "app_open"
WECHAT_ARTICLE_READ = "wechat_article_read"
COUPON_CLAIMED = "coupon_claimed"
ADD_TO_CART = "add_to_cart"
CHECKOUT_STARTED = "checkout_started"
ORDER_PLACED = "order_placed"
ORDER_REFUNDED = "order_refunded"
# Registered by campaigns (campaigns/event_types.py), which writes it; named here for attribution.
MESSAGE_CLICKED = "message_clicked"
SIGNUP = "signup"
LIFECYCLE_STAGE_CHANGED = "lifecycle_stage_changed"

_S, _I, _D = PropertySpec("string"), PropertySpec("integer"), PropertySpec("decimal")

for _type in (
    EventType(
        PAGE_VIEW, pgettext_lazy("event type", "Page viewed"), {"url": _S, "title": _S, "referrer": _S}
    ),
    EventType(
        PRODUCT_VIEW,
        pgettext_lazy("event type", "Product viewed"),
        {"sku": _S, "product_id": _I, "price": _D},
    ),
    EventType(SEARCH, pgettext_lazy("event type", "Searched"), {"query": _S}),
    EventType(APP_OPEN, pgettext_lazy("event type", "App opened")),
    EventType(
        WECHAT_ARTICLE_READ,
        pgettext_lazy("event type", "WeChat article read"),
        {"title": _S, "article_id": _S, "url": _S},
    ),
    EventType(COUPON_CLAIMED, pgettext_lazy("event type", "Coupon claimed"), {"coupon": _S, "code": _S}),
    EventType(
        ADD_TO_CART,
        pgettext_lazy("event type", "Added to cart"),
        {"sku": _S, "product_id": _I, "quantity": _I, "price": _D, "currency": _S},
    ),
    EventType(
        CHECKOUT_STARTED,
        pgettext_lazy("event type", "Checkout started"),
        {"cart_value": _D, "currency": _S, "items": _I},
    ),
    EventType(
        ORDER_PLACED,
        pgettext_lazy("event type", "Order placed"),
        {"order_id": _I, "order_external_id": _S, "total": _D, "currency": _S, "channel": _S},
        source="system",
    ),
    EventType(
        ORDER_REFUNDED,
        pgettext_lazy("event type", "Order refunded"),
        {
            "order_id": _I,
            "order_external_id": _S,
            "refund_external_id": _S,
            "amount": _D,
            "refunded_amount": _D,
            "total": _D,
            "currency": _S,
            "status": _S,
            "channel": _S,
        },
        source="system",
    ),
    EventType(SIGNUP, pgettext_lazy("event type", "Signed up"), {"source": _S}),
    EventType(
        LIFECYCLE_STAGE_CHANGED,
        pgettext_lazy("event type", "Lifecycle stage changed"),
        {
            "from": _S,
            "to": PropertySpec("string", required=True),
            "as_of": PropertySpec("string"),
        },
        source="system",
    ),
):
    event_type_register(_type)
