"""`loyalty_audit`: every invariant of the ledger, checked against the database, each breach named.

Set-based SQL for the per-account and per-lot sums; the per-order recomputation streams earn entries and
checks each against the rates recorded on it and against the rule, promotion and tier as they stood
when the entry was written (django-simple-history keeps every version)."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal

from django.db import connection

from crm.models import Order
from loyalty.models import EarnRule, LedgerEntry, Promotion, Tier
from loyalty.services.accrual import ACCRUAL_CONSUMER
from loyalty.services.earning import PARTS, floor_int


@dataclass(frozen=True)
class Breach:
    check: str
    subject: str
    detail: str

    def __str__(self) -> str:
        return f"[{self.check}] {self.subject}: {self.detail}"


def _rows(sql: str, params=None) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params or [])
        return cursor.fetchall()


def _cached_equals_entries() -> Iterator[Breach]:
    for aid, av, pe, ow, sav, spe, sow in _rows(
        """SELECT a.id, a.available, a.pending, a.owed,
                  COALESCE(s.available, 0), COALESCE(s.pending, 0), COALESCE(s.owed, 0)
             FROM loyalty_loyaltyaccount a
             LEFT JOIN (SELECT account_id, SUM(points) AS available, SUM(pending_delta) AS pending,
                               SUM(owed_delta) AS owed
                          FROM loyalty_ledgerentry GROUP BY account_id) s ON s.account_id = a.id
            WHERE a.available <> COALESCE(s.available, 0) OR a.pending <> COALESCE(s.pending, 0)
               OR a.owed <> COALESCE(s.owed, 0)"""
    ):
        yield Breach(
            "cached_balance",
            f"account {aid}",
            f"cached available/pending/owed {av}/{pe}/{ow} but entries sum to {sav}/{spe}/{sow}",
        )


def _no_negative() -> Iterator[Breach]:
    for aid, av, pe, ow in _rows(
        "SELECT id, available, pending, owed FROM loyalty_loyaltyaccount WHERE available < 0 OR pending < 0 OR owed < 0"
    ):
        yield Breach("negative_balance", f"account {aid}", f"available/pending/owed {av}/{pe}/{ow}")
    for aid, av in _rows(
        """SELECT account_id, SUM(points) FROM loyalty_ledgerentry GROUP BY account_id HAVING SUM(points) < 0"""
    ):
        yield Breach("negative_balance", f"account {aid}", f"entries sum to an available balance of {av}")


def _lots() -> Iterator[Breach]:
    for lot_id, points, remaining, consumed, expired in _rows(
        """SELECT id, points, remaining, consumed, expired FROM loyalty_pointlot
            WHERE remaining < 0 OR consumed < 0 OR expired < 0 OR points <> remaining + consumed + expired"""
    ):
        yield Breach(
            "lot_balance",
            f"lot {lot_id}",
            f"earned {points} but remaining {remaining} + consumed {consumed} + expired {expired}",
        )
    for lot_id, consumed, recorded in _rows(
        """SELECT l.id, l.consumed, COALESCE(c.points, 0) FROM loyalty_pointlot l
             LEFT JOIN (SELECT lot_id, SUM(points) AS points FROM loyalty_lotconsumption GROUP BY lot_id) c
                    ON c.lot_id = l.id
            WHERE l.consumed <> COALESCE(c.points, 0)"""
    ):
        yield Breach(
            "lot_consumption", f"lot {lot_id}", f"consumed {consumed} but consumptions sum to {recorded}"
        )
    for lot_id, points, consumed in _rows(
        """SELECT l.id, l.points, SUM(c.points) FROM loyalty_pointlot l
             JOIN loyalty_lotconsumption c ON c.lot_id = l.id GROUP BY l.id HAVING SUM(c.points) > l.points"""
    ):
        yield Breach("lot_overconsumed", f"lot {lot_id}", f"earned {points} but {consumed} consumed")
    for aid, av, pe, lav, lpe in _rows(
        """SELECT a.id, a.available, a.pending, COALESCE(l.available, 0), COALESCE(l.pending, 0)
             FROM loyalty_loyaltyaccount a
             LEFT JOIN (SELECT account_id,
                               SUM(remaining) FILTER (WHERE state = 'available') AS available,
                               SUM(remaining) FILTER (WHERE state = 'pending') AS pending
                          FROM loyalty_pointlot GROUP BY account_id) l ON l.account_id = a.id
            WHERE a.available <> COALESCE(l.available, 0) OR a.pending <> COALESCE(l.pending, 0)"""
    ):
        yield Breach(
            "lots_match_balance",
            f"account {aid}",
            f"available/pending {av}/{pe} but open lots hold {lav}/{lpe}",
        )
    for lot_id, earned, entry_points in _rows(
        """SELECT l.id, l.points, e.points + e.pending_delta FROM loyalty_pointlot l
             JOIN loyalty_ledgerentry e ON e.id = l.earn_entry_id
            WHERE l.points <> e.points + e.pending_delta OR l.account_id <> e.account_id"""
    ):
        yield Breach(
            "lot_entry", f"lot {lot_id}", f"lot of {earned} points but its entry earned {entry_points}"
        )


def _expired_lots() -> Iterator[Breach]:
    # expire_entry has no database constraint (see PointLot), so the audit checks it.
    for lot_id, expired, entry_id in _rows(
        """SELECT l.id, l.expired, l.expire_entry_id FROM loyalty_pointlot l
             LEFT JOIN loyalty_ledgerentry e ON e.id = l.expire_entry_id
            WHERE (l.expired > 0 AND l.expire_entry_id IS NULL)
               OR (l.expire_entry_id IS NOT NULL
                   AND (e.id IS NULL OR e.kind <> 'expire' OR e.account_id <> l.account_id))"""
    ):
        yield Breach(
            "lot_expiry", f"lot {lot_id}", f"expired {expired} points but names expire entry {entry_id}"
        )


def _owed() -> Iterator[Breach]:
    for aid, owed, debts in _rows(
        """SELECT a.id, a.owed, COALESCE(d.remaining, 0) FROM loyalty_loyaltyaccount a
             LEFT JOIN (SELECT account_id, SUM(remaining) AS remaining FROM loyalty_owedpoints GROUP BY account_id) d
                    ON d.account_id = a.id
            WHERE a.owed <> COALESCE(d.remaining, 0)"""
    ):
        yield Breach("owed_points", f"account {aid}", f"owes {owed} but open debts sum to {debts}")


def _reversals_within_originals() -> Iterator[Breach]:
    for key, earned, reversed_ in _rows(
        """SELECT e.idempotency_key, e.points + e.pending_delta, r.total
             FROM loyalty_ledgerentry e
             JOIN (SELECT reference, SUM(CAST(parts->>'total' AS BIGINT)) AS total FROM loyalty_ledgerentry
                    WHERE kind = 'reverse' GROUP BY reference) r ON r.reference = e.idempotency_key
            WHERE e.kind = 'earn' AND r.total > e.points + e.pending_delta"""
    ):
        yield Breach("reversal_exceeds_original", key, f"earned {earned} but {reversed_} reversed")
    for (key,) in _rows(
        """SELECT r.reference FROM loyalty_ledgerentry r
             LEFT JOIN loyalty_ledgerentry e ON e.idempotency_key = r.reference AND e.kind = 'earn'
            WHERE r.kind = 'reverse' AND e.id IS NULL"""
    ):
        yield Breach("reversal_without_original", key, "a reversal names an earning that does not exist")


class _History:
    """Each rule, promotion and tier as it stood at a moment, from django-simple-history."""

    def __init__(self):
        self.versions: dict[tuple[str, int], list] = defaultdict(list)
        for label, model in (("rule", EarnRule), ("promotion", Promotion), ("tier", Tier)):
            for record in model.history.order_by("history_date", "history_id"):
                self.versions[(label, record.id)].append(record)

    def at(self, label: str, pk: int | None, moment):
        if pk is None:
            return None
        found = None
        for record in self.versions.get((label, pk), []):
            if record.history_date <= moment:
                found = record
        return found


def _order_points() -> Iterator[Breach]:
    history = _History()
    bases: dict[int, int] = defaultdict(int)
    order_base: dict[int, tuple[int, int]] = {}
    capped: set[int] = set()
    entries = (
        LedgerEntry.objects.filter(kind="earn", idempotency_key__startswith="order:")
        .values_list(
            "id", "idempotency_key", "order_id", "points", "pending_delta", "parts", "rule_id", "created_at"
        )
        .order_by("id")
        .iterator(chunk_size=5000)
    )
    for entry_id, key, order_id, points, pending, parts, rule_id, created_at in entries:
        subject = f"{key} (entry {entry_id})"
        try:
            values = {p: int(parts[p]) for p in PARTS}
            if int(parts["total"]) != sum(values.values()) or points + pending != sum(values.values()):
                yield Breach("order_points", subject, f"parts {values} do not add up to {points + pending}")
                continue
            base = values["base"]
            for part, multiplier in (
                ("product", "product_multiplier"),
                ("tier", "tier_multiplier"),
                ("promotion", "promotion_multiplier"),
            ):
                expected = floor_int(Decimal(base) * (Decimal(parts[multiplier]) - 1))
                if values[part] != expected:
                    yield Breach("order_points", subject, f"{part} {values[part]} but rates give {expected}")
            for label, pk_key, rate_key, field in (
                ("rule", None, "rate", "points_per_unit"),
                ("rule", "product_rule", "product_multiplier", "multiplier"),
                ("promotion", "promotion_id", "promotion_multiplier", "multiplier"),
                ("tier", "tier_id", "tier_multiplier", "earn_multiplier"),
            ):
                pk = rule_id if pk_key is None else parts.get(pk_key)
                version = history.at(label, pk, created_at)
                if version is not None and Decimal(getattr(version, field)) != Decimal(parts[rate_key]):
                    yield Breach(
                        "order_points",
                        subject,
                        f"recorded {rate_key} {parts[rate_key]} but {label} {pk} said {getattr(version, field)}",
                    )
            if parts.get("capped"):
                capped.add(order_id)
            bases[order_id] += base
            order_base[order_id] = (int(parts["order_base"]), entry_id)
        except (KeyError, TypeError, ValueError) as exc:
            yield Breach("order_points", subject, f"unreadable parts ({exc!r})")
    if not order_base:
        return
    totals = {}
    ids = list(order_base)
    for start in range(0, len(ids), 5000):
        chunk = ids[start : start + 5000]
        for oid, total, ext in Order.objects.filter(id__in=chunk).values_list("id", "total", "external_id"):
            totals[oid] = (total, ext)
    rates = dict(
        LedgerEntry.objects.filter(id__in=[e for _b, e in order_base.values()]).values_list(
            "order_id", "parts"
        )
    )
    for order_id, (expected_base, _entry) in order_base.items():
        total, external_id = totals.get(order_id, (None, order_id))
        if total is None:
            continue
        rate = Decimal(rates[order_id]["rate"])
        if expected_base != math.floor(total * rate):
            yield Breach(
                "order_points",
                f"order {external_id}",
                f"order base {expected_base} but total × rate gives {math.floor(total * rate)}",
            )
        elif order_id not in capped and bases[order_id] != expected_base:
            yield Breach(
                "order_points",
                f"order {external_id}",
                f"lines earned {bases[order_id]} base points of {expected_base}",
            )


def _orders_missed() -> Iterator[Breach]:
    """Orders the cursor has passed that earned nothing although the base rule of their day pays."""
    # crm names the order by external id; order_id (pk) is accepted too (see accrual._order_ids_of).
    rows = _rows(
        """WITH placed AS (
               SELECT ev.properties->>'order_external_id' AS external_id, ev.properties->>'order_id' AS order_id
                 FROM crm_event ev
                WHERE ev.type = 'order_placed'
                  AND EXISTS (SELECT 1 FROM crm_eventlogcursor c
                               WHERE c.consumer = %s
                                 AND (ev.xact_id, ev.id) <= (c.last_xact_id, c.last_event_id))
           )
           SELECT o.id, o.external_id, o.total, o.placed_at, o.currency
             FROM crm_order o
            WHERE (o.external_id IN (SELECT external_id FROM placed WHERE external_id IS NOT NULL)
                   OR CAST(o.id AS TEXT) IN (SELECT order_id FROM placed WHERE order_id IS NOT NULL))
              AND o.total > 0
              AND NOT EXISTS (SELECT 1 FROM loyalty_ledgerentry e WHERE e.order_id = o.id AND e.kind = 'earn')""",
        [ACCRUAL_CONSUMER],
    )
    if not rows:
        return
    from loyalty.services.programme import ruleset_load

    ruleset = ruleset_load()
    for _oid, external_id, total, placed_at, currency in rows:
        rule = ruleset.base_rule(placed_at, currency)
        if rule is not None and math.floor(total * rule.points_per_unit) > 0:
            yield Breach(
                "order_points", f"order {external_id}", "the order was read from the log but earned nothing"
            )


CHECKS = (
    ("cached balances = sum of entries", _cached_equals_entries),
    ("no negative balance", _no_negative),
    ("lots consumed ≤ earned, lots = balances", _lots),
    ("expired lots name their expire entry", _expired_lots),
    ("owed points = open debts", _owed),
    ("reversals ≤ originals", _reversals_within_originals),
    ("every order's points match its rules", _order_points),
    ("no order read without points", _orders_missed),
)


def ledger_audit(*, max_per_check: int = 1000) -> list[Breach]:
    """Every breach of every invariant (at most `max_per_check` per check); empty when the ledger is sound."""
    breaches: list[Breach] = []
    for _name, check in CHECKS:
        for n, breach in enumerate(check()):
            if n >= max_per_check:
                break
            breaches.append(breach)
    return breaches
