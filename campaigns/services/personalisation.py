"""What a template may say about a customer: the context of every message of a batch, built set-based.

A batch of messages costs a fixed handful of queries whatever its size (pinned in
tests/campaigns/test_personalisation.py), and only the parts its templates use are read: a template that
never says `recommendations` costs no recommendation query. Contexts hold plain values only (dict,
list, str, numbers, booleans): dates are ISO strings (the `date` filter formats them), money is a
string with two decimals. Missing values are left out rather than set to None or "", so that
`{{ customer.name | default("亲爱的会员") }}` reads the fallback.

The parts (the names templates.template_save checks against, CONTEXT_SCHEMA):

- customer: profile fields, and the loyalty tier's name
- metrics: lifecycle stage and value tier (codes and labels), predicted value, churn risk, orders
- loyalty: balance, pending points, tier, points expiring within 30 days and their last day
- coupon: a code issued for this very message (once: campaigns.MessageCoupon), when the template shows one
- recommendations: the top products the customer has not bought (crm.recommendations)
- data: the message's own template data (the send API's, a journey's)
- links: the site, and the unsubscribe placeholder the tracking step replaces with the signed link
- today: the customer's local date
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import transaction
from django.utils import translation

from campaigns.models import Message, MessageCoupon, MessagePurpose, MessageTemplate
from crm.db import AnyOf
from crm.models import Customer, CustomerMetrics
from crm.models.metrics import LifecycleStage, RfmSegment, ValueTier
from crm.recommendations.selectors import recommendations_for_customers
from loyalty.models.rewards import Coupon, CouponProgramme
from loyalty.selectors import members_snapshot
from loyalty.services.coupons import code_display, coupons_issue_many

RECOMMENDATIONS_SHOWN = 3
# The tracking step (campaigns.services.tracking) swaps these for the message's signed links.
UNSUBSCRIBE_PLACEHOLDER = "__UNSUBSCRIBE_URL__"
# A code a preview or a test send shows in place of a real one: nothing is issued for them.
SAMPLE_COUPON_CODE = "TEST00000000"

# The variables templates may use: top-level names and their keys; None: any key (free-form).
CONTEXT_SCHEMA: dict[str, frozenset[str] | None] = {
    "customer": frozenset(
        {
            "id",
            "name",
            "email",
            "phone",
            "external_id",
            "city",
            "region",
            "birthday",
            "gender",
            "language",
            "time_zone",
            "tier",
        }
    ),
    "metrics": frozenset(
        {
            "lifecycle_stage",
            "lifecycle_stage_label",
            "value_tier",
            "value_tier_label",
            "rfm_segment",
            "rfm_segment_label",
            "predicted_value",
            "churn_risk",
            "order_count",
            "total_spend",
            "last_order_date",
            "days_since_last_order",
            "expected_next_purchase",
        }
    ),
    "loyalty": frozenset(
        {"member", "balance", "pending", "tier", "tier_code", "expiring_points", "expiring_last_day"}
    ),
    "coupon": frozenset({"code", "code_display", "valid_until", "discount", "programme"}),
    "recommendations": None,  # a list of {name, sku, category, price}
    "data": None,
    "links": frozenset({"site", "unsubscribe"}),
    "today": frozenset(),
}
# Jinja's own globals a template may call.
TEMPLATE_GLOBALS = frozenset({"range", "dict", "cycler", "joiner", "namespace", "loop", "caller", "self"})

_PROFILE = ("name", "email", "phone", "external_id", "city", "region", "gender", "language", "time_zone")


def _plain(value):
    if value is None or value == "":
        return None
    if isinstance(value, Decimal):
        return f"{value:.2f}"
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def _compact(values: dict) -> dict:
    """A dict without its missing values, so that `default()` applies to them."""
    return {k: v for k, v in ((k, _plain(v)) for k, v in values.items()) if v is not None}


def message_language(*, message_language: str, customer_language: str) -> str:
    """The language wanted for a message: its own (the caller chose), the customer's, or the business's
    default; the version falls back to its first variant when it has none in that language."""
    return message_language or customer_language or settings.MESSAGING_DEFAULT_LANGUAGE


def _labels(language: str) -> dict:
    with translation.override(language):
        return {
            "stage": {c.value: str(c.label) for c in LifecycleStage},
            "value": {c.value: str(c.label) for c in ValueTier},
            "rfm": {c.value: str(c.label) for c in RfmSegment},
        }


def versions_for_messages(messages) -> dict[int, int | None]:
    """{message id: the template version id to render it from}: the one it records, or its template's
    current version (one query, for messages not rendered before)."""
    found = {m.pk: m.template_version_id for m in messages}
    missing = {m.template_id for m in messages if m.template_version_id is None}
    if missing:
        current = dict(MessageTemplate.objects.filter(pk__in=missing).values_list("pk", "current_version_id"))
        for m in messages:
            if found[m.pk] is None:
                found[m.pk] = current.get(m.template_id)
    return found


def contexts_build(*, messages, needs: dict[int, frozenset], now: datetime, sample_coupons: bool = False):
    """{message id: (language wanted, context)} for every message of `messages`.

    `needs` gives, per message id, the top-level names its version uses; only those parts are read.
    Coupons are issued (once per message) for messages whose template shows one, except test sends
    and previews (`sample_coupons`), which show SAMPLE_COUPON_CODE."""
    messages = [m for m in messages if m.pk in needs]
    if not messages:
        return {}
    wanted: set[str] = set().union(*needs.values())
    customer_ids = sorted({m.customer_id for m in messages})

    customers = {
        row["pk"]: row
        for row in Customer.objects.filter(AnyOf("id", customer_ids)).values(
            "pk", "birthday", "erased_at", *_PROFILE
        )
    }
    members = members_snapshot(customer_ids=customer_ids, now=now) if wanted & {"customer", "loyalty"} else {}
    metrics = {}
    if "metrics" in wanted:
        metrics = {
            row["customer_id"]: row
            for row in CustomerMetrics.objects.filter(AnyOf("customer_id", customer_ids)).values(
                "customer_id",
                "lifecycle_stage",
                "value_tier",
                "rfm_segment",
                "predicted_clv_365d",
                "churn_risk",
                "order_count",
                "total_value",
                "last_order_date",
                "days_since_last_order",
                "expected_next_purchase_date",
            )
        }
    recommendations = {}
    if "recommendations" in wanted:
        recommendations = {
            customer_id: [
                {"name": p.name, "sku": p.sku, "category": p.category, "price": f"{p.price:.2f}"}
                for p in products
            ]
            for customer_id, products in recommendations_for_customers(
                customer_ids, RECOMMENDATIONS_SHOWN
            ).items()
        }
    coupons = {}
    coupon_messages = [m for m in messages if "coupon" in needs[m.pk]]
    if coupon_messages:
        erased = {pk for pk, row in customers.items() if row["erased_at"]}
        coupons = message_coupons(messages=coupon_messages, now=now, sample=sample_coupons, erased=erased)

    labels: dict[str, dict] = {}
    site = settings.SITE_URL
    unsubscribe_url = _unsubscribe_url_function()
    per_customer: dict[int, dict] = {}
    result = {}
    for message in messages:
        row = customers.get(message.customer_id) or {}
        language = message_language(
            message_language=message.language, customer_language=row.get("language") or ""
        )
        key = (message.customer_id, language)
        parts = per_customer.get(key)
        if parts is None:
            parts = per_customer[key] = _customer_parts(
                row=row,
                member=members.get(message.customer_id),
                metrics=metrics.get(message.customer_id),
                recommendations=recommendations.get(message.customer_id, []),
                labels=labels.setdefault(language, _labels(language)) if metrics else {},
                now=now,
            )
        context = dict(parts)
        context["data"] = message.data if isinstance(message.data, dict) else {}
        context["links"] = {
            "site": site,
            "unsubscribe": unsubscribe_url(message.pk)
            if unsubscribe_url and message.pk
            else UNSUBSCRIBE_PLACEHOLDER,
        }
        if message.pk in coupons:
            context["coupon"] = coupons[message.pk]
        result[message.pk] = (language, context)
    return result


def _unsubscribe_url_function():
    """The tracking step's signed unsubscribe link (campaigns.services.tracking.unsubscribe_url), when it
    is installed: a template's own {{ links.unsubscribe }} is then the real link, which the tracking step
    sees and does not add a second time. Until then the placeholder."""
    try:
        from campaigns.services.tracking import unsubscribe_url
    except ImportError:
        return None
    return unsubscribe_url


def _customer_parts(*, row, member, metrics, recommendations, labels, now) -> dict:
    if row.get("erased_at"):
        row = {"pk": row["pk"]}  # an erased customer's profile is gone; say nothing of them
    try:
        zone = ZoneInfo(row.get("time_zone") or settings.TIME_ZONE)
    except (ValueError, KeyError):
        zone = ZoneInfo(settings.TIME_ZONE)
    customer = _compact({k: row.get(k) for k in _PROFILE})
    customer["id"] = row.get("pk")
    if row.get("birthday"):
        customer["birthday"] = row["birthday"].isoformat()
    loyalty: dict = {"member": member is not None}
    if member is not None:
        if member.tier_name:
            customer["tier"] = member.tier_name
        loyalty.update(
            _compact(
                {
                    "balance": member.available,
                    "pending": member.pending,
                    "tier": member.tier_name,
                    "tier_code": member.tier_code,
                    "expiring_points": member.expiring_soon,
                    "expiring_last_day": member.expiring_last_day,
                }
            )
        )
        loyalty.setdefault("balance", 0)
    parts = {
        "customer": customer,
        "loyalty": loyalty,
        "recommendations": recommendations,
        "today": now.astimezone(zone).date().isoformat(),
    }
    if metrics is not None:
        parts["metrics"] = _compact(
            {
                "lifecycle_stage": metrics["lifecycle_stage"],
                "lifecycle_stage_label": labels["stage"].get(metrics["lifecycle_stage"]),
                "value_tier": metrics["value_tier"],
                "value_tier_label": labels["value"].get(metrics["value_tier"]),
                "rfm_segment": metrics["rfm_segment"],
                "rfm_segment_label": labels["rfm"].get(metrics["rfm_segment"]),
                "predicted_value": metrics["predicted_clv_365d"],
                "churn_risk": round(metrics["churn_risk"], 3) if metrics["churn_risk"] is not None else None,
                "order_count": metrics["order_count"],
                "total_spend": metrics["total_value"],
                "last_order_date": metrics["last_order_date"],
                "days_since_last_order": metrics["days_since_last_order"],
                "expected_next_purchase": metrics["expected_next_purchase_date"],
            }
        )
    else:
        parts["metrics"] = {}
    return parts


def _coupon_context(coupon: Coupon, programme: CouponProgramme) -> dict:
    if programme.discount_kind == CouponProgramme.DiscountKind.PERCENT:
        discount = f"{programme.discount_value.normalize():f}%"
    else:
        discount = f"{programme.discount_value:.2f}"
    _start, until = coupon.effective_window(programme)
    return _compact(
        {
            "code": coupon.code,
            "code_display": code_display(coupon.code),
            "valid_until": until.date() if until else None,
            "discount": discount,
            "programme": programme.name,
        }
    )


def message_coupons(*, messages, now: datetime, sample: bool = False, erased=None) -> dict[int, dict]:
    """{message id: coupon context}: the code issued for each message, issued now for those that have
    none yet, in a few queries for the batch. Idempotent per message (MessageCoupon's primary key is the
    message): a second render, or a second worker racing the first, reads back the code first issued.
    Test sends, previews and erased customers get SAMPLE_COUPON_CODE and nothing is issued."""
    template_ids = {m.template_id for m in messages}
    programmes = {
        t.pk: t.coupon_programme
        for t in MessageTemplate.objects.filter(pk__in=template_ids).select_related("coupon_programme")
    }
    found: dict[int, dict] = {}
    real = []
    for m in messages:
        programme = programmes.get(m.template_id)
        if programme is None:
            continue  # no programme named: templates.template_save refuses such a template
        if sample or m.purpose == MessagePurpose.TEST or not m.pk:
            found[m.pk] = _coupon_context(
                Coupon(code=SAMPLE_COUPON_CODE, valid_until=None, programme=programme), programme
            )
        else:
            real.append(m)
    if not real:
        return found
    with transaction.atomic():
        links = {
            link.message_id: link.coupon
            for link in MessageCoupon.objects.filter(message_id__in=[m.pk for m in real]).select_related(
                "coupon"
            )
        }
        todo = [m for m in real if m.pk not in links]
        if todo and erased is None:
            erased = set(
                Customer.objects.filter(
                    pk__in={m.customer_id for m in todo}, erased_at__isnull=False
                ).values_list("pk", flat=True)
            )
        todo = [m for m in todo if m.customer_id not in (erased or ())]
        by_programme: dict[int, list[Message]] = {}
        for m in todo:
            by_programme.setdefault(programmes[m.template_id].pk, []).append(m)
        new_links = []
        for group in by_programme.values():
            programme = programmes[group[0].template_id]
            issued = coupons_issue_many(
                programme=programme, customer_ids=[m.customer_id for m in group], now=now
            )
            new_links += [
                MessageCoupon(message_id=m.pk, coupon=c, issued_at=now)
                for m, c in zip(group, issued, strict=True)
            ]
        if new_links:
            MessageCoupon.objects.bulk_create(new_links, ignore_conflicts=True)
            # Another worker may have linked a code to the same message first: its code is the one sent,
            # and ours (never shown to anyone) is deleted.
            winners = dict(
                MessageCoupon.objects.filter(
                    message_id__in=[link.message_id for link in new_links]
                ).values_list("message_id", "coupon_id")
            )
            losers = [link.coupon.pk for link in new_links if winners.get(link.message_id) != link.coupon.pk]
            if losers:
                Coupon.objects.filter(pk__in=losers).delete()
                links.update(
                    {
                        link.message_id: link.coupon
                        for link in MessageCoupon.objects.filter(
                            message_id__in=[link.message_id for link in new_links]
                        ).select_related("coupon")
                    }
                )
            for link in new_links:
                links.setdefault(link.message_id, link.coupon)
    for m in real:
        coupon = links.get(m.pk)
        programme = programmes[m.template_id]
        if coupon is None:  # an erased customer
            coupon = Coupon(code=SAMPLE_COUPON_CODE, programme=programme)
        found[m.pk] = _coupon_context(coupon, programme)
    return found


def preview_context(*, template: MessageTemplate, customer: Customer, language: str, data: dict, needs, now):
    """The context a preview renders with: the customer's, with sample coupons (nothing issued)."""
    message = Message(
        pk=0,
        customer_id=customer.pk,
        template_id=template.pk,
        language=language,
        data=data or {},
        purpose=MessagePurpose.TEST,
    )
    message.id = 0
    return contexts_build(messages=[message], needs={0: frozenset(needs)}, now=now, sample_coupons=True)[0]
