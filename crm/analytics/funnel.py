"""The conversion funnel from behaviour events: product_view → add_to_cart → checkout_started →
order_placed.

A customer reaches a step when they did it at or after the moment they reached the previous step (the
first time, within the window); so a cart added before any product view does not count. One query: a
chain of CTEs, each joining the previous step's customers to the events of the next type.
"""

from __future__ import annotations

from datetime import datetime

from django.db import connection
from django.utils.translation import gettext_lazy as _

FUNNEL_STEPS = [
    ("product_view", _("Viewed a product")),
    ("add_to_cart", _("Added to cart")),
    ("checkout_started", _("Started checkout")),
    ("order_placed", _("Placed an order")),
]


def funnel(*, start: datetime, end: datetime, steps=FUNNEL_STEPS) -> dict:
    ctes, params = [], []
    for i, (event_type, _label) in enumerate(steps):
        if i == 0:
            ctes.append(
                "s0 AS (SELECT customer_id, MIN(occurred_at) AS t FROM crm_event "
                "WHERE type = %s AND occurred_at >= %s AND occurred_at < %s AND customer_id IS NOT NULL "
                "GROUP BY customer_id)"
            )
            params += [event_type, start, end]
        else:
            ctes.append(
                f"s{i} AS (SELECT e.customer_id, MIN(e.occurred_at) AS t FROM crm_event e "
                f"JOIN s{i - 1} p ON p.customer_id = e.customer_id "
                f"WHERE e.type = %s AND e.occurred_at >= p.t AND e.occurred_at < %s GROUP BY e.customer_id)"
            )
            params += [event_type, end]
    counts_sql = ", ".join(f"(SELECT COUNT(*) FROM s{i})" for i in range(len(steps)))
    with connection.cursor() as cursor:
        cursor.execute(f"WITH {', '.join(ctes)} SELECT {counts_sql}", params)
        counts = list(cursor.fetchone())
    out = []
    # Codes only: the figures are stored and read later in another language (funnel_labelled adds the
    # labels when shown).
    for i, ((event_type, _label), n) in enumerate(zip(steps, counts, strict=True)):
        out.append(
            {
                "type": event_type,
                "customers": n,
                "from_previous": round(n / counts[i - 1], 4) if i and counts[i - 1] else None,
                "from_first": round(n / counts[0], 4) if counts[0] else None,
            }
        )
    return {"steps": out, "from": start.isoformat(), "to": end.isoformat()}


def funnel_labelled(data: dict) -> dict:
    """`data` (funnel()'s, perhaps stored long ago, perhaps with English labels frozen in) with each
    step's label in the current language, from its event type."""
    labels = dict(FUNNEL_STEPS)
    steps = [{**step, "label": str(labels.get(step["type"], step["type"]))} for step in data.get("steps", [])]
    return {**data, "steps": steps}
