"""Helpers shared by the metrics tests: orders at given dates, CDNOW as crm orders, reading metrics."""

from __future__ import annotations

from datetime import date, datetime, time
from decimal import Decimal
from pathlib import Path

import numpy as np

from crm.clock import business_time_zone
from crm.models import Customer, Order

DATA = Path(__file__).resolve().parent.parent / "data"
CDNOW_SAMPLE = DATA / "CDNOW_sample.txt"
CDNOW_CALIBRATION_END = date(1997, 9, 30)
CDNOW_HOLDOUT_END = date(1998, 6, 30)

_sequence = iter(range(10**9))


def at(day: date, hour: int = 12) -> datetime:
    """`hour` o'clock on `day` in the business time zone, the zone the metrics count days in."""
    return datetime.combine(day, time(hour), tzinfo=business_time_zone())


def place_orders(customer: Customer, *orders: tuple[date, str] | date) -> list[Order]:
    """Orders for `customer` at local noon (business time zone) of each date, each worth 100.00 unless (date, "amount") is given."""
    rows = []
    for item in orders:
        day, amount = (item, "100.00") if isinstance(item, date) else item
        n = next(_sequence)
        rows.append(
            Order(
                external_id=f"T-{customer.pk}-{n}",
                customer=customer,
                placed_at=at(day),
                total=Decimal(amount),
                fingerprint=f"{n:064d}",
            )
        )
    return Order.objects.bulk_create(rows)


def read_cdnow(path: Path = CDNOW_SAMPLE):
    """The CDNOW sample as columns: sample customer id (1..2357), purchase date, dollar value."""
    ids, days, values = [], [], []
    with path.open() as f:
        for line in f:
            _master, sample_id, ymd, _cds, dollars = line.split()
            ids.append(int(sample_id))
            days.append(date(int(ymd[:4]), int(ymd[4:6]), int(ymd[6:])))
            values.append(Decimal(dollars))
    return ids, days, values


def cdnow_summary(end: date = CDNOW_CALIBRATION_END, unit_days: float = 7.0):
    """(x, t_x, T, m, holdout) per customer the way the paper builds them: transactions on the same day
    are one purchase; x = repeat purchase days up to `end`, t_x and T from the first purchase (in
    `unit_days`, weeks by default), m = mean value of the repeat purchase days, holdout = purchase days
    after `end`."""
    ids, days, values = read_cdnow()
    per: dict[int, dict[date, float]] = {}
    for cid, day, value in zip(ids, days, values, strict=True):
        per.setdefault(cid, {})
        per[cid][day] = per[cid].get(day, 0.0) + float(value)
    n = max(per)
    x, t_x, T, m, holdout, first = (np.zeros(n) for _ in range(6))
    for cid, by_day in per.items():
        ordered = sorted(by_day)
        calibration = [d for d in ordered if d <= end]
        i = cid - 1
        x[i] = len(calibration) - 1
        t_x[i] = (calibration[-1] - calibration[0]).days / unit_days
        T[i] = (end - calibration[0]).days / unit_days
        m[i] = np.mean([by_day[d] for d in calibration[1:]]) if x[i] else 0.0
        holdout[i] = sum(1 for d in ordered if d > end)
        first[i] = (calibration[0] - date(1997, 1, 1)).days / unit_days
    return x, t_x, T, m, holdout, first


def load_cdnow_as_orders() -> None:
    """The CDNOW sample as crm customers (external id CDNOW-<sample id>) and orders at noon of each day in
    the business time zone: CDNOW's dates are days, so any time of that local day keeps the published
    figures, and noon stays on the day whatever the zone's offset."""
    ids, days, values = read_cdnow()
    customers = Customer.objects.bulk_create(
        [Customer(external_id=f"CDNOW-{i}", created_at=at(date(1997, 1, 1), 0)) for i in sorted(set(ids))]
    )
    pk = {int(c.external_id.split("-")[1]): c.pk for c in customers}
    Order.objects.bulk_create(
        [
            Order(
                external_id=f"CDNOW-{n}",
                customer_id=pk[cid],
                placed_at=at(day),
                total=value,
                currency="USD",
                fingerprint=f"{n:064d}",
            )
            for n, (cid, day, value) in enumerate(zip(ids, days, values, strict=True))
        ],
        batch_size=5000,
    )
