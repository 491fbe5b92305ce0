from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from crm.models import Customer, CustomerIdentity, Event, Order, OrderLine, Product
from crm.services import bulk_sql
from crm.services.orders import OrderInput, OrderLineInput, orders_ingest
from tests.factories import CustomerFactory, ProductFactory
from tests.moments import FromNow, resolved

pytestmark = pytest.mark.django_db

PLACED = datetime(2026, 3, 8, 12, 30, tzinfo=UTC)


def order(external_id="TM-1", **overrides) -> OrderInput:
    values = {
        "external_id": external_id,
        "placed_at": PLACED,
        "total": Decimal("258.00"),
        "currency": "CNY",
        "channel": "tmall",
        "customer_external_id": "C-1",
        "lines": (
            OrderLineInput(
                sku="DIAPER-M", quantity=2, unit_price=Decimal("99.00"), name="纸尿裤 M", category="baby"
            ),
            OrderLineInput(sku="WIPES-80", quantity=1, unit_price=Decimal("60.00")),
        ),
    }
    values.update(overrides)
    return OrderInput(**values)


@pytest.fixture(params=["copy", "generic"])
def write_path(request, monkeypatch):
    """Run a test through the PostgreSQL COPY path and through the portable path SQLite uses."""
    if request.param == "generic":
        monkeypatch.setattr(bulk_sql, "use_copy", lambda: False)
    return request.param


def test_ingest_stores_order_lines_products_customer_and_event(write_path):
    result = orders_ingest(orders=[order()], source="test")

    assert result.created == ["TM-1"] and not result.errors and not result.unchanged
    assert result.customers_created == 1 and result.products_created == 2
    saved = Order.objects.get(external_id="TM-1")
    assert result.order_ids == {"TM-1": saved.pk}
    assert saved.customer.external_id == "C-1"
    assert saved.customer.acquisition_channel == "tmall"
    assert (saved.total, saved.currency, saved.status, saved.refunded_amount) == (
        Decimal("258.00"),
        "CNY",
        "paid",
        0,
    )
    assert len(saved.fingerprint) == 64
    lines = list(
        saved.lines.order_by("line_no").values_list(
            "line_no", "sku", "quantity", "line_total", "product__sku"
        )
    )
    assert lines == [
        (1, "DIAPER-M", 2, Decimal("198.00"), "DIAPER-M"),
        (2, "WIPES-80", 1, Decimal("60.00"), "WIPES-80"),
    ]
    assert CustomerIdentity.objects.filter(kind="external_id", value="C-1", customer=saved.customer).exists()
    assert saved.customer.history.count() == 1
    event = Event.objects.get(type="order_placed")
    assert event.customer_id == saved.customer_id
    assert event.occurred_at == PLACED
    assert event.properties == {
        "order_external_id": "TM-1",
        "total": "258.00",
        "currency": "CNY",
        "channel": "tmall",
    }


def test_repeat_of_the_same_order_is_unchanged_and_writes_nothing(write_path):
    orders_ingest(orders=[order()])
    before = (
        Order.objects.count(),
        OrderLine.objects.count(),
        Event.objects.count(),
        Customer.objects.count(),
    )

    # The same order again, written differently: 258 vs 258.00, another time zone, lower-case currency.
    same = order(
        total=Decimal("258"), currency="cny", placed_at=PLACED.astimezone(timezone.get_fixed_timezone(480))
    )
    result = orders_ingest(orders=[same])

    assert result.unchanged == ["TM-1"] and not result.created and not result.errors
    assert result.customers_created == 0
    assert (
        Order.objects.count(),
        OrderLine.objects.count(),
        Event.objects.count(),
        Customer.objects.count(),
    ) == before


@pytest.mark.parametrize(
    "change",
    [
        {"total": Decimal("259.00")},
        {"placed_at": PLACED + timedelta(seconds=1)},
        {"customer_external_id": "C-2"},
        {"lines": (OrderLineInput(sku="DIAPER-M", quantity=3, unit_price=Decimal("86.00")),)},
    ],
    ids=["total", "time", "customer", "lines"],
)
def test_same_id_with_different_content_is_a_conflict_on_external_id(change, write_path):
    orders_ingest(orders=[order()])

    result = orders_ingest(orders=[order(**change), order("TM-2")])

    assert result.created == ["TM-2"]
    [error] = result.errors
    assert (error.index, error.field, error.code) == (0, "external_id", "conflict")
    assert "TM-1" in error.message
    assert Order.objects.get(external_id="TM-1").total == Decimal("258.00")
    assert not Customer.objects.filter(external_id="C-2").exists()  # no stub for a refused order


def test_same_id_twice_in_one_batch(write_path):
    result = orders_ingest(orders=[order(), order(), order(total=Decimal("1.00"))])

    assert result.created == ["TM-1"] and result.unchanged == ["TM-1"]
    assert [(e.index, e.code) for e in result.errors] == [(2, "conflict")]
    assert Order.objects.count() == 1


@pytest.mark.parametrize(
    "bad, field",
    [
        ({"total": Decimal("-1.00")}, "total"),
        ({"total": Decimal("1.005")}, "total"),
        ({"currency": "XYZ"}, "currency"),
        ({"currency": "yuan"}, "currency"),
        ({"placed_at": FromNow(hours=1)}, "placed_at"),
        ({"placed_at": datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC)}, "placed_at"),
        ({"placed_at": datetime(2026, 3, 8, 12, 30)}, "placed_at"),
        ({"status": "shipped"}, "status"),
        ({"status": "partially_refunded"}, "status"),
        ({"channel": "taobao"}, "channel"),
        ({"external_id": " "}, "external_id"),
        ({"customer_external_id": None}, "customer_id"),
        ({"lines": (OrderLineInput(sku="X", quantity=0, unit_price=Decimal("1")),)}, "lines[0].quantity"),
        ({"lines": (OrderLineInput(sku="X", quantity=1, unit_price=Decimal("-1")),)}, "lines[0].unit_price"),
    ],
)
def test_invalid_item_is_reported_by_field_and_good_items_are_stored(bad, field):
    result = orders_ingest(
        orders=[
            order("GOOD-1"),
            order(**{"external_id": "BAD-1", **resolved(bad, iso=False)}),
            order("GOOD-2"),
        ]
    )

    assert sorted(result.created) == ["GOOD-1", "GOOD-2"]
    assert [(e.index, e.field, e.code) for e in result.errors] == [(1, field, "invalid")]
    assert result.errors[0].message
    assert Order.objects.count() == 2


def test_rmb_is_stored_as_cny():
    orders_ingest(orders=[order(currency="rmb")])
    assert Order.objects.get().currency == "CNY"


def test_unknown_customer_id_is_reported_and_known_one_is_used():
    customer = CustomerFactory()
    result = orders_ingest(
        orders=[
            order("A", customer_id=customer.pk, customer_external_id=None),
            order("B", customer_id=customer.pk + 1000, customer_external_id=None),
        ]
    )
    assert result.created == ["A"]
    assert [(e.index, e.field, e.code) for e in result.errors] == [(1, "customer_id", "unknown_customer")]
    assert Order.objects.get().customer == customer


def test_existing_customer_and_product_are_reused_and_product_keeps_its_catalogue_price():
    customer = CustomerFactory(external_id="C-1")
    ProductFactory(sku="DIAPER-M", name="纸尿裤 M 码", price=Decimal("129.00"))

    result = orders_ingest(orders=[order()])

    assert result.customers_created == 0 and result.products_created == 1
    assert Order.objects.get().customer == customer
    assert Product.objects.get(sku="DIAPER-M").price == Decimal("129.00")
    assert Product.objects.get(sku="WIPES-80").price == Decimal("60.00")


def test_customer_merged_away_is_still_found_by_its_old_external_id(write_path):
    orders_ingest(orders=[order()])
    merged = Customer.objects.get(external_id="C-1")
    survivor = CustomerFactory(external_id="C-9")
    # What customer_merge leaves behind: rows and identities re-pointed to the survivor, which keeps its own
    # external id (the merged customer row itself is deleted; here it just loses its external id).
    Order.objects.update(customer=survivor)
    CustomerIdentity.objects.filter(customer=merged).update(customer=survivor)
    Event.objects.update(customer=survivor)
    Customer.objects.filter(pk=merged.pk).update(external_id=None)

    again = orders_ingest(orders=[order(), order("TM-2")])

    assert again.unchanged == ["TM-1"] and again.created == ["TM-2"] and again.customers_created == 0
    assert set(Order.objects.values_list("customer_id", flat=True)) == {survivor.pk}


def test_dry_run_reports_what_would_happen_and_writes_nothing(write_path):
    orders_ingest(orders=[order()])
    before = (Order.objects.count(), Customer.objects.count(), Product.objects.count(), Event.objects.count())

    result = orders_ingest(
        orders=[order(), order("TM-2", customer_external_id="C-NEW"), order("TM-3", total=Decimal("-5"))],
        dry_run=True,
    )

    assert result.unchanged == ["TM-1"] and result.created == ["TM-2"]
    assert result.customers_created == 1
    assert [e.field for e in result.errors] == ["total"]
    assert result.order_ids == {"TM-1": Order.objects.get().pk}
    assert (
        Order.objects.count(),
        Customer.objects.count(),
        Product.objects.count(),
        Event.objects.count(),
    ) == before


def test_order_arriving_refunded_is_stored_refunded_with_both_events(write_path):
    orders_ingest(orders=[order(status="refunded")])

    saved = Order.objects.get()
    assert saved.status == "refunded" and saved.refunded_amount == saved.total
    assert set(saved.lines.values_list("refunded_quantity", flat=True)) == {1, 2}
    assert sorted(Event.objects.values_list("type", flat=True)) == ["order_placed", "order_refunded"]


def test_order_without_lines(write_path):
    result = orders_ingest(orders=[order(lines=())])
    assert result.created == ["TM-1"] and not OrderLine.objects.exists()


def test_ingest_is_set_based(django_assert_max_num_queries):
    batch = [order(f"TM-{n}", customer_external_id=f"C-{n % 40}") for n in range(300)]
    with django_assert_max_num_queries(20):
        result = orders_ingest(orders=batch)
    assert len(result.created) == 300
    assert Customer.objects.count() == 40
    assert Event.objects.filter(type="order_placed").count() == 300


def test_ingest_takes_a_fixed_number_of_statements_whatever_the_batch_size(django_assert_num_queries):
    """The PostgreSQL path: the staging tables, two statements, the foreign-key triggers back on, and the
    savepoint the test's transaction turns the batch's transaction into, for 10 orders as for 1,000 (COPYs
    are not counted as queries)."""
    for size, prefix in ((10, "A"), (1000, "B")):
        batch = [order(f"{prefix}-{n}", customer_external_id=f"{prefix}-C{n % 40}") for n in range(size)]
        with django_assert_num_queries(6):
            result = orders_ingest(orders=batch)
        assert len(result.created) == size and result.customers_created == min(size, 40)


@pytest.mark.parametrize("awkward", ["tab\there", "new\nline", "cr\r\nlf", "back\\slash", "\\N", "汉字"])
def test_values_with_copy_control_characters_are_stored_as_given(write_path, awkward):
    lines = (
        OrderLineInput(sku="S-1", quantity=1, unit_price=Decimal("258.00"), name=awkward, category=awkward),
    )
    result = orders_ingest(
        orders=[order(f"TM-{awkward}", store=awkward, customer_external_id=f"C-{awkward}", lines=lines)]
    )

    assert result.created == [f"TM-{awkward}"] and not result.errors
    saved = Order.objects.get()
    assert (saved.external_id, saved.store, saved.customer.external_id) == (
        f"TM-{awkward}",
        awkward,
        f"C-{awkward}",
    )
    assert saved.lines.get().name == awkward and saved.lines.get().category == awkward
    assert Product.objects.get(sku="S-1").name == awkward
    again = orders_ingest(
        orders=[order(f"TM-{awkward}", store=awkward, customer_external_id=f"C-{awkward}", lines=lines)]
    )
    assert again.unchanged == [f"TM-{awkward}"]


# --- Foreign-key triggers off for the two statements (orders_postgres) ------------------------------------

# Tables the PostgreSQL path writes while the foreign-key triggers are off.
_WRITTEN_WITH_TRIGGERS_OFF = (
    "crm_customer",
    "crm_customeridentity",
    "crm_historicalcustomer",
    "crm_product",
    "crm_order",
    "crm_orderline",
    "crm_event",
)


@contextmanager
def _before_statement_2(run):
    """Call `run(cursor)` with the ingest's own psycopg cursor right before its statement 2 runs."""
    from django.db import connection

    def wrapper(execute, sql, params, many, context):
        if sql.lstrip().startswith("WITH products AS MATERIALIZED"):
            run(context["cursor"].cursor)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(wrapper):
        yield


def _replication_role_seen_by_statement_2(batch) -> tuple[object, str]:
    """Ingest `batch`; return its result and session_replication_role as statement 2 ran."""
    seen = []

    def read_role(cursor):
        cursor.execute("SHOW session_replication_role")
        seen.append(cursor.fetchone()[0])

    with _before_statement_2(read_role):
        result = orders_ingest(orders=batch)
    assert len(seen) == 1
    return result, seen[0]


def _role_now() -> str:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SHOW session_replication_role")
        return cursor.fetchone()[0]


def test_the_statements_run_without_foreign_key_triggers_when_the_role_may_and_turn_them_back_on():
    result, role = _replication_role_seen_by_statement_2(
        [order("TM-1"), order("TM-2", customer_external_id="C-2")]
    )

    assert len(result.created) == 2 and not result.errors
    assert role == "replica"
    assert _role_now() == "origin"  # back on for the rest of the caller's transaction
    # Everything written points at rows that exist.
    assert set(Order.objects.values_list("customer__external_id", flat=True)) == {"C-1", "C-2"}
    assert OrderLine.objects.filter(product__isnull=True).count() == 0
    assert Event.objects.filter(customer__isnull=True).count() == 0


def test_a_role_that_may_not_keeps_the_foreign_key_triggers_and_imports_the_same():
    """A role without SET on session_replication_role (not superuser, no grant) takes the same path with
    PostgreSQL checking every reference at commit."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("CREATE ROLE mo_test_restricted NOLOGIN")  # rolled back with the test's transaction
        cursor.execute("GRANT ALL ON ALL TABLES IN SCHEMA public TO mo_test_restricted")
        cursor.execute("GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO mo_test_restricted")
        cursor.execute(
            f'GRANT TEMPORARY ON DATABASE "{connection.settings_dict["NAME"]}" TO mo_test_restricted'
        )
        cursor.execute("SET LOCAL ROLE mo_test_restricted")
    result, role = _replication_role_seen_by_statement_2(
        [order("TM-1"), order("TM-2", customer_external_id="C-2")]
    )

    assert len(result.created) == 2 and not result.errors
    assert role == "origin"
    assert set(Order.objects.values_list("customer__external_id", flat=True)) == {"C-1", "C-2"}


def test_the_tables_written_without_foreign_key_triggers_have_no_other_triggers():
    """session_replication_role = replica silences ordinary triggers as well: a trigger added to one of
    these tables would be skipped by every order import. Give it an ENABLE ALWAYS, or rethink
    orders_postgres, before adding one."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT tgrelid::regclass::text, tgname FROM pg_trigger "
            "WHERE tgrelid = ANY(%s::regclass[]) AND NOT tgisinternal AND tgenabled <> 'A'",
            [list(_WRITTEN_WITH_TRIGGERS_OFF)],
        )
        assert cursor.fetchall() == []


def test_an_order_whose_customer_went_away_between_the_statements_is_retried_on_the_portable_path(caplog):
    """Statement 1 found the customer; before statement 2 locked it, it was deleted (here by the same
    transaction, as a merge in another one would). Statement 2 writes nothing pointing at it: the order
    comes back without a customer and `_ingest_items_copy` retries it on the portable path, which looks the
    customer up again by external id (and, gone for good, creates it)."""
    import logging

    gone = Customer.objects.create(external_id="C-GONE")
    CustomerIdentity.objects.filter(customer=gone).delete()

    caplog.set_level(logging.INFO, logger="crm.services.orders")
    with _before_statement_2(
        lambda cursor: cursor.execute("DELETE FROM crm_customer WHERE id = %s", [gone.pk])
    ):
        result = orders_ingest(orders=[order("TM-GONE", customer_external_id="C-GONE")])

    assert result.created == ["TM-GONE"] and not result.errors
    assert "retries 1 orders on the portable path" in caplog.text
    saved = Order.objects.get(external_id="TM-GONE")
    assert saved.customer.external_id == "C-GONE" and saved.customer_id != gone.pk
    assert saved.lines.count() == 2 and Event.objects.filter(customer=saved.customer).count() == 1
