"""One readable line per behaviour event, for people: the catalogue's translated label and the
properties that say what happened ("加入购物车 · 保湿面霜 ×1 · ¥299 · 微信小程序"), instead of the type's code
and raw JSON."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from django.utils.formats import number_format

from crm.event_types import event_type_label
from crm.models import LifecycleStage, Product

CURRENCY_SYMBOLS = {"CNY": "¥", "RMB": "¥", "USD": "$", "HKD": "HK$", "EUR": "€", "JPY": "JP¥", "GBP": "£"}
# The properties worth a word, in the order they are read; the rest stays in the raw JSON.
_TEXT_KEYS = ("product_name", "name", "title", "query", "coupon", "order_external_id", "campaign", "source")
_MONEY_KEYS = ("price", "total", "cart_value", "amount")


def money_text(value, currency: str | None) -> str:
    try:
        amount = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return str(value)
    places = 0 if amount == amount.to_integral_value() else 2
    figure = number_format(amount, decimal_pos=places, use_l10n=True, force_grouping=True)
    symbol = CURRENCY_SYMBOLS.get((currency or "CNY").upper())
    return f"{symbol}{figure}" if symbol else f"{figure} {currency}"


def _stage_label(code) -> str:
    try:
        return str(LifecycleStage(code).label)
    except ValueError:
        return str(code)


def event_summaries(*, events) -> list[dict]:
    """For each event: {"label", "details"} with `details` the summary's parts after the label. Product
    names for the events' SKUs are read in one query."""
    skus = {
        str(e.properties.get("sku"))
        for e in events
        if isinstance(e.properties, dict) and e.properties.get("sku")
    }
    names = dict(Product.objects.filter(sku__in=skus).values_list("sku", "name")) if skus else {}
    out = []
    for event in events:
        props = event.properties if isinstance(event.properties, dict) else {}
        parts: list[str] = []
        if "to" in props and event.type == "lifecycle_stage_changed":
            parts.append(
                f"{_stage_label(props.get('from')) if props.get('from') else '—'} → {_stage_label(props['to'])}"
            )
        text = next((str(props[k]) for k in _TEXT_KEYS if props.get(k)), "")
        sku = props.get("sku")
        if sku and not text:
            text = names.get(str(sku), str(sku))
        if text:
            parts.append(text + (f" ×{props['quantity']}" if props.get("quantity") else ""))
        elif props.get("quantity") or props.get("items"):
            parts.append(f"×{props.get('quantity') or props.get('items')}")
        money = next((k for k in _MONEY_KEYS if props.get(k) not in (None, "")), None)
        if money:
            parts.append(money_text(props[money], props.get("currency")))
        if not parts and (props.get("url") or props.get("path")):
            parts.append(str(props.get("path") or props.get("url")))
        if event.channel:
            parts.append(str(event.get_channel_display()))
        out.append({"label": str(event_type_label(event.type)), "details": parts})
    return out
