"""Lifetime value against acquisition cost, per acquisition channel.

The CAC model: staff enter, per channel and month, what one acquired customer cost (`AcquisitionCost`).
A channel's CAC over a period is the average of its monthly CACs weighted by the customers it brought in
each month. Its LTV is the net revenue to date of those same customers divided by their number (every
acquired customer counts, buyer or not, because CAC is paid for each of them); the predicted LTV adds
the metrics' predicted value of the next 365 days. Only months that have a CAC entry enter the ratio,
so cost and value describe the same customers.
"""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal

from crm.models import AcquisitionCost, Channel


def ltv_by_channel(acquisition: dict, *, months: set[str] | None = None) -> dict:
    """`acquisition` is compute.acquisition_value()'s output; `months` limits the sign-up months."""
    labels = dict(Channel.choices)
    totals = defaultdict(lambda: {"customers": 0, "buyers": 0, "revenue": 0.0, "predicted": 0.0})
    costed = defaultdict(lambda: {"customers": 0, "revenue": 0.0, "predicted": 0.0, "cost": 0.0})
    cac = {
        (c.channel, f"{c.month:%Y-%m}"): c.cac
        for c in AcquisitionCost.objects.filter(currency=acquisition.get("currency", "CNY"))
    }
    for row in acquisition["rows"]:
        if months is not None and row["month"] not in months:
            continue
        t = totals[row["channel"]]
        t["customers"] += row["customers"]
        t["buyers"] += row["buyers"]
        t["revenue"] += row["revenue"]
        t["predicted"] += row["predicted_365d"]
        monthly_cac = cac.get((row["channel"], row["month"]))
        if monthly_cac is not None:
            k = costed[row["channel"]]
            k["customers"] += row["customers"]
            k["revenue"] += row["revenue"]
            k["predicted"] += row["predicted_365d"]
            k["cost"] += float(Decimal(monthly_cac) * row["customers"])
    channels = sorted(totals, key=lambda ch: -totals[ch]["customers"])
    out = []
    for ch in channels:
        t, k = totals[ch], costed.get(ch)
        n = t["customers"]
        ltv = t["revenue"] / n if n else None
        predicted = (t["revenue"] + t["predicted"]) / n if n else None
        row = {
            "channel": ch,
            "label": str(labels.get(ch, ch or "—")),
            "customers": n,
            "buyers": t["buyers"],
            "ltv": _round(ltv),
            "predicted_ltv": _round(predicted),
            "cac": None,
            "ltv_cac": None,
            "predicted_ltv_cac": None,
        }
        if k and k["customers"] and k["cost"]:
            cac_value = k["cost"] / k["customers"]
            row["cac"] = _round(cac_value)
            row["ltv_cac"] = _round(k["revenue"] / k["customers"] / cac_value)
            row["predicted_ltv_cac"] = _round((k["revenue"] + k["predicted"]) / k["customers"] / cac_value)
        out.append(row)
    everyone = sum(t["customers"] for t in totals.values())
    return {
        "channels": out,
        "overall": {
            "customers": everyone,
            "ltv": _round(sum(t["revenue"] for t in totals.values()) / everyone) if everyone else None,
            "predicted_ltv": _round(sum(t["revenue"] + t["predicted"] for t in totals.values()) / everyone)
            if everyone
            else None,
        },
        "currency": acquisition.get("currency"),
    }


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 2)
