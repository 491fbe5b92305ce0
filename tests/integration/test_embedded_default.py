"""The embedded default of `make run`, for real: SQLite, the file-system broker and a real Celery worker,
in a temporary directory, driven as scripts/run.sh drives it (migrate, seed_demo, loyalty_seed_demo), then
metrics computed, an order CSV imported, and its points accrued by the worker from the event log.

Everything else in the suite runs on PostgreSQL; this is the one test that the SQLite code paths (the
generic metrics pipeline, the ORM fallbacks of the bulk writers, the id-only event cursor) work end to
end. It needs no test database: every step is a subprocess on its own SQLite file, and the assertions
read that file with the sqlite3 module."""

from __future__ import annotations

import sqlite3
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from tests.integration.conftest import embedded_manage, embedded_sender, embedded_worker

pytestmark = [pytest.mark.embedded, pytest.mark.integration]

IMPORTED = ("SMOKE-1", "SMOKE-2")


def _accounts(db, external_ids) -> dict[str, int]:
    marks = ",".join("?" * len(external_ids))
    rows = db.execute(
        "SELECT c.external_id, a.available FROM loyalty_loyaltyaccount a "
        f"JOIN crm_customer c ON c.id = a.customer_id WHERE c.external_id IN ({marks})",
        external_ids,
    )
    return dict(rows.fetchall())


def _order_points(db) -> dict[str, int]:
    rows = db.execute(
        "SELECT o.external_id, sum(e.points) FROM loyalty_ledgerentry e JOIN crm_order o ON o.id = e.order_id "
        "WHERE e.kind = 'earn' AND o.external_id LIKE 'SMOKE-O-%' GROUP BY o.external_id"
    )
    return dict(rows.fetchall())


def test_the_embedded_default_seeds_computes_imports_and_accrues_in_the_worker(embedded_env, tmp_path):
    env = embedded_env
    embedded_manage(env, "migrate", "--noinput", "--verbosity", "0")
    embedded_manage(env, "seed_demo", "--customers", "200")
    embedded_manage(env, "loyalty_seed_demo")
    embedded_manage(env, "compute_metrics")

    # Orders older than the demo programme's 15-day return window earn available points at once.
    placed = (timezone.now() - timedelta(days=30)).strftime("%Y-%m-%d %H:%M:%S")
    orders = tmp_path / "orders.csv"
    orders.write_text(
        "customer_external_id,order_external_id,ordered_at,amount,channel,sku,quantity\n"
        f"SMOKE-1,SMOKE-O-1,{placed},199.00,tmall,SMOKE-SKU,1\n"
        f"SMOKE-2,SMOKE-O-2,{placed},88.00,jd,SMOKE-SKU,2\n",
        encoding="utf-8",
    )
    embedded_manage(env, "import_orders", str(orders))

    db = sqlite3.connect(tmp_path / "db.sqlite3")
    try:
        assert db.execute("SELECT count(*) FROM crm_customer").fetchone()[0] == 200 + len(IMPORTED)
        assert db.execute("SELECT count(*) FROM crm_customermetrics").fetchone()[0] == 200
        assert (
            db.execute("SELECT count(*) FROM crm_order WHERE external_id LIKE 'SMOKE-O-%'").fetchone()[0] == 2
        )
        seeded = db.execute("SELECT count(*) FROM loyalty_loyaltyaccount WHERE available > 0").fetchone()[0]
        assert seeded > 0
        assert _accounts(db, IMPORTED) == {}  # nothing has read the import's events yet

        broker_dir = tmp_path / "broker"
        worker = embedded_worker(env, broker_dir)
        sender = embedded_sender("embedded-smoke", broker_dir)
        try:
            worker.wait_for_log(r"\bready\.", timeout=60)
            # The reader holds back the youngest events for a moment (late commits), so ask until it
            # has read them, as beat does every 10 s.
            deadline = time.monotonic() + 60
            balances: dict[str, int] = {}
            runs = 0
            while time.monotonic() < deadline:
                result = sender.send_task("loyalty.tasks.accrue_events")
                runs += 1
                worker.wait_for_log(
                    rf"Task loyalty\.tasks\.accrue_events\[{result.id}\] succeeded", timeout=30
                )
                balances = _accounts(db, IMPORTED)
                if len(balances) == len(IMPORTED) and all(balances.values()):
                    break
                time.sleep(1)
        finally:
            worker.stop()
        assert set(balances) == set(IMPORTED), (runs, worker.output()[-3000:])
        # At least 1 point per CNY for each order (the demo's first-order bonus comes on top), and the
        # new members' balances are exactly what their orders earned.
        earned = _order_points(db)
        assert earned["SMOKE-O-1"] >= 199 and earned["SMOKE-O-2"] >= 88, earned
        assert balances == {"SMOKE-1": earned["SMOKE-O-1"], "SMOKE-2": earned["SMOKE-O-2"]}
    finally:
        db.close()
