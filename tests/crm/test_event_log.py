"""The behaviour-event log's one writer and one reader (crm.services.event_log): catalogued appends, and a
cursor per consumer that returns every committed event once, in log order, even when a transaction
commits long after younger ones; real threads against PostgreSQL where it matters."""

import threading
import time
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from crm.event_types import event_type_label, event_types
from crm.models import Event, EventLogCursor
from crm.services.event_log import (
    EventRejected,
    NewEvent,
    event_log_cursor_reset,
    event_log_read,
    events_append,
)
from tests.factories import CustomerFactory

HOLD_SECONDS = 10  # how long the slow writer keeps its transaction open, as the issue asks
JOIN_TIMEOUT = 120


def _view(customer_id, url, *, now):
    return NewEvent(type="page_view", customer_id=customer_id, occurred_at=now, properties={"url": url})


def _read(consumer, **kwargs):
    with transaction.atomic():
        return event_log_read(consumer=consumer, **kwargs)


# The horizon is cluster-wide: a writing transaction open in another database of the same server (another
# test run, say) holds committed events back until it ends. Tests that wait for the horizon to pass events
# they committed poll, as a consumer's next run would.
HORIZON_WAIT_SECONDS = 60


def _read_until(consumer, *, count):
    events, deadline = [], time.monotonic() + HORIZON_WAIT_SECONDS
    while len(events) < count and time.monotonic() < deadline:
        batch = _read(consumer)
        events += batch
        if not batch:
            time.sleep(0.05)
    return events


# --- Appending -------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_append_refuses_a_type_outside_the_catalogue_and_writes_nothing():
    now = timezone.now()
    customer = CustomerFactory()
    with pytest.raises(EventRejected, match="event 1: type 'made_up' is not in the catalogue"):
        events_append(
            events=[_view(customer.pk, "/a", now=now), NewEvent("made_up", customer.pk, now)], now=now
        )
    assert Event.objects.count() == 0


@pytest.mark.django_db
def test_a_large_append_goes_by_copy_in_order_with_its_transaction_id_and_skips_what_is_stored():
    from crm.services import event_log

    now = timezone.now()
    customer = CustomerFactory()
    n = event_log._COPY_FROM + 50  # the COPY path
    events = [
        NewEvent(
            "page_view",
            customer.pk if i % 2 else None,
            now - timedelta(seconds=i),
            properties={"url": f"/p/{i}", "title": "双11"},
            channel="web",
            external_id=f"x:{i}",
        )
        for i in range(n)
    ]
    with transaction.atomic():
        assert events_append(events=events, now=now) == n
    stored = list(Event.objects.order_by("id"))
    assert [e.external_id for e in stored] == [f"x:{i}" for i in range(n)]
    assert stored[1].properties == {"url": "/p/1", "title": "双11"} and stored[1].customer_id == customer.pk
    assert stored[0].customer_id is None and stored[0].received_at == now and stored[0].channel == "web"
    assert len({e.xact_id for e in stored}) == 1 and stored[0].xact_id > 0
    # A retry of the same batch with skip_existing writes only what is new; without it, it raises.
    more = events + [NewEvent("page_view", None, now, properties={"url": "/new"}, external_id="x:new")]
    with transaction.atomic():
        events_append(events=more, now=now, skip_existing=True)
    assert Event.objects.count() == n + 1
    from django.db import IntegrityError

    with pytest.raises(IntegrityError), transaction.atomic():
        events_append(events=events, now=now)
    assert Event.objects.count() == n + 1


@pytest.mark.django_db
def test_append_refuses_properties_that_do_not_fit_the_type_naming_the_property():
    now = timezone.now()
    bad = NewEvent("add_to_cart", None, now, properties={"sku": "WIPES-80", "quantity": "two"})
    with pytest.raises(EventRejected, match=r"event 0 \(add_to_cart\): quantity"):
        events_append(events=[bad], now=now)
    missing = NewEvent("lifecycle_stage_changed", None, now, properties={"from": "new"})
    with pytest.raises(EventRejected, match="to"):
        events_append(events=[missing], now=now)
    assert Event.objects.count() == 0


@pytest.mark.django_db
def test_append_with_skip_existing_writes_a_named_event_once():
    now = timezone.now()
    named = NewEvent("page_view", None, now, properties={"url": "/"}, external_id="shop:pv:1")
    events_append(events=[named], now=now, skip_existing=True)
    events_append(events=[named], now=now, skip_existing=True)
    assert Event.objects.filter(external_id="shop:pv:1").count() == 1


def test_every_catalogued_type_has_a_label_and_a_chinese_one():
    from django.utils import translation

    codes = {t.code for t in event_types()}
    assert {"order_placed", "order_refunded", "add_to_cart", "lifecycle_stage_changed"} <= codes
    assert {"tier_changed", "points_expiring"} <= codes  # loyalty's, registered from its AppConfig
    with translation.override("zh-hans"):
        assert str(event_type_label("add_to_cart")) == "加入购物车"
    assert event_type_label("a_brands_own_type") == "a_brands_own_type"


# --- Reading ---------------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_each_committed_event_is_read_once_in_log_order_across_batches():
    now = timezone.now()
    customer = CustomerFactory()
    for i in range(7):
        with transaction.atomic():
            events_append(events=[_view(customer.pk, f"/{i}", now=now)], now=now)

    first = _read("test.batches", batch_size=3)
    rest = _read_until("test.batches", count=7 - len(first))

    assert len(first) <= 3
    urls = [e.properties["url"] for e in first + rest]
    assert urls == [f"/{i}" for i in range(7)]
    assert EventLogCursor.objects.get(consumer="test.batches").events_read == 7


def test_reading_outside_a_transaction_is_refused(transactional_db):
    with pytest.raises(RuntimeError, match="inside transaction.atomic"):
        event_log_read(consumer="test.no_transaction")


@pytest.mark.django_db(transaction=True)
def test_a_consumer_that_rolls_back_is_given_the_same_events_again():
    now = timezone.now()
    with transaction.atomic():
        events_append(events=[_view(None, "/a", now=now), _view(None, "/b", now=now)], now=now)

    class ConsumerFailed(Exception):
        pass

    with pytest.raises(ConsumerFailed):
        with transaction.atomic():
            assert len(_read_until("test.rollback", count=2)) == 2
            raise ConsumerFailed  # the consumer fails while handling them
    again = _read_until("test.rollback", count=2)

    assert [e.properties["url"] for e in again] == ["/a", "/b"]


@pytest.mark.django_db(transaction=True)
def test_a_types_filter_returns_only_those_types_and_moves_past_the_others_for_good():
    now = timezone.now()
    with transaction.atomic():
        events_append(
            events=[
                _view(None, "/a", now=now),
                NewEvent("add_to_cart", None, now, properties={"sku": "WIPES-80"}),
                _view(None, "/b", now=now),
            ],
            now=now,
        )

    everything = _read_until("test.everything", count=3)
    carts = _read("test.carts", types={"add_to_cart"})

    assert [e.type for e in carts] == ["add_to_cart"]
    assert [e.type for e in everything] == ["page_view", "add_to_cart", "page_view"]
    with transaction.atomic():
        events_append(events=[NewEvent("add_to_cart", None, now, properties={"sku": "X"})], now=now)
    _read_until("test.everything", count=1)  # the horizon has passed the new event
    assert [e.properties["sku"] for e in _read("test.carts", types={"add_to_cart"})] == ["X"]


@pytest.mark.django_db(transaction=True)
def test_cursor_reset_replays_from_the_given_event_in_log_order():
    now = timezone.now()
    with transaction.atomic():
        events_append(events=[_view(None, f"/{i}", now=now) for i in range(3)], now=now)
    first = _read_until("test.reset", count=3)
    event_log_cursor_reset(consumer="test.reset", from_event_id=first[1].id)
    assert [e.properties["url"] for e in _read_until("test.reset", count=2)] == ["/1", "/2"]
    with pytest.raises(ValueError, match="no event"):
        event_log_cursor_reset(consumer="test.reset", from_event_id=first[-1].id + 1000)


def _in_thread(target, *args):
    """Run `target` in a thread with its own connection; returns (thread, outcome dict)."""
    outcome = {}

    def run():
        try:
            outcome["result"] = target(*args)
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            outcome["error"] = exc
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def _joined(*pairs):
    for thread, outcome in pairs:
        thread.join(JOIN_TIMEOUT)
        assert not thread.is_alive(), "a thread did not finish"
        if "error" in outcome:
            raise outcome["error"]


@pytest.mark.django_db(transaction=True)
def test_a_transaction_held_open_while_others_commit_loses_nothing_and_two_racing_readers_read_each_event_once():
    now = timezone.now()
    customer = CustomerFactory()
    slow_open, fast_done, all_read = threading.Event(), threading.Event(), threading.Event()
    record_lock = threading.Lock()
    read_log: list[
        tuple[int, int, str]
    ] = []  # (xact_id, id, reader) in the order the readers held the cursor
    empty_reads_while_open = []

    def slow_writer():
        with transaction.atomic():
            events_append(events=[_view(customer.pk, "/slow/1", now=now)], now=now)
            slow_open.set()
            started = time.monotonic()
            assert fast_done.wait(JOIN_TIMEOUT)
            # Held open for HOLD_SECONDS at least, while the readers keep polling past the fast events.
            time.sleep(max(0.0, HOLD_SECONDS - (time.monotonic() - started)))
            events_append(events=[_view(customer.pk, "/slow/2", now=now)], now=now)

    def fast_writers():
        assert slow_open.wait(JOIN_TIMEOUT)
        for i in range(20):
            with transaction.atomic():
                events_append(events=[_view(customer.pk, f"/fast/{i}", now=now)], now=now)
        fast_done.set()

    def reader(name):
        while not all_read.is_set():
            with transaction.atomic():
                batch = event_log_read(consumer="test.race", batch_size=3)
                with record_lock:  # still holding the cursor row: the list is in cursor order
                    read_log.extend((e.xact_id, e.id, e.properties["url"]) for e in batch)
                    if not batch and fast_done.is_set() and len(read_log) == 0:
                        empty_reads_while_open.append(name)
                    if len(read_log) >= 22:
                        all_read.set()
            if not batch:
                time.sleep(0.02)

    started = time.monotonic()
    pairs = [
        _in_thread(slow_writer),
        _in_thread(fast_writers),
        _in_thread(reader, "a"),
        _in_thread(reader, "b"),
    ]
    try:
        _joined(*pairs)
    finally:
        all_read.set()
    assert time.monotonic() - started >= HOLD_SECONDS

    urls = [url for _x, _i, url in read_log]
    assert sorted(urls) == sorted(["/slow/1", "/slow/2", *(f"/fast/{i}" for i in range(20))])
    assert len(set(urls)) == len(urls) == 22, "an event was read twice"
    # The slow transaction's first event has the smallest id, so an "id > last id read" cursor would have
    # passed it while it was invisible: this is the case the cursor exists for.
    ids = {url: event_id for _x, event_id, url in read_log}
    assert ids["/slow/1"] == min(ids.values())
    # Commit-safe order: never anything behind a position already read, and nothing of the younger
    # transactions until the slow one had committed.
    positions = [(x, i) for x, i, _url in read_log]
    assert positions == sorted(positions)
    assert urls[:2] == ["/slow/1", "/slow/2"]
    assert empty_reads_while_open, "the readers never polled while the slow transaction was open"


@pytest.mark.django_db(transaction=True)
def test_a_consumer_appending_in_its_own_transaction_reads_those_events_later_and_never_passes_them():
    now = timezone.now()
    with transaction.atomic():
        events_append(events=[_view(None, "/before", now=now)], now=now)
    younger_committed = threading.Event()

    def younger_writer():
        with transaction.atomic():
            events_append(events=[_view(None, "/younger", now=now)], now=now)
        younger_committed.set()

    with transaction.atomic():
        first = _read_until("test.own", count=1)  # this transaction now has an id
        pair = _in_thread(younger_writer)  # a younger transaction commits while this one is open
        _joined(pair)
        assert younger_committed.is_set()
        assert event_log_read(consumer="test.own") == []  # not past this transaction's own future events
        events_append(events=[_view(None, "/own", now=now)], now=now)
        own, deadline = [], time.monotonic() + HORIZON_WAIT_SECONDS
        while not own and time.monotonic() < deadline:  # until older transactions elsewhere have ended
            own = event_log_read(consumer="test.own")
    after = _read_until("test.own", count=1)

    assert [e.properties["url"] for e in first] == ["/before"]
    assert [e.properties["url"] for e in own] == ["/own"]
    assert [e.properties["url"] for e in after] == ["/younger"]


# --- The migration that gave the log its transaction ids ------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_moving_loyalty_onto_the_log_cursor_keeps_its_position():
    executor = MigrationExecutor(connection)
    before = [("crm", "0013_one_index_per_lookup_column"), ("loyalty", "0006_bulk_adjustment_progress")]
    latest = executor.loader.graph.leaf_nodes()
    executor.migrate(before)
    try:
        with connection.cursor() as cursor:
            for n in range(1, 6):
                cursor.execute(
                    "INSERT INTO crm_event (type, properties, occurred_at, channel, received_at) "
                    "VALUES ('order_placed', %s, %s, '', %s)",
                    [f'{{"n": {n}}}', timezone.now() - timedelta(days=1), timezone.now()],
                )
            cursor.execute("SELECT id FROM crm_event ORDER BY id")
            ids = [row[0] for row in cursor.fetchall()]
            cursor.execute(
                "INSERT INTO loyalty_loyaltycursor (name, last_event_id, updated_at) VALUES ('accrual', %s, %s)",
                [ids[2], timezone.now()],
            )
        executor = MigrationExecutor(connection)
        executor.migrate(latest)
        with transaction.atomic():
            events_append(events=[_view(None, "/after-migration", now=timezone.now())], now=timezone.now())

        unread = _read_until("loyalty.accrual", count=3)
        assert [e.id for e in unread[:2]] == ids[3:]
        assert [e.properties.get("url") for e in unread[2:]] == ["/after-migration"]
    finally:
        MigrationExecutor(connection).migrate(latest)


# --- The admin ---------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_event_admin_names_catalogued_types_and_lists_the_consumers_cursors(admin_client):
    now = timezone.now()
    events_append(events=[NewEvent("add_to_cart", None, now, properties={"sku": "WIPES-80"})], now=now)
    Event.objects.create(type="coupon_viewed", occurred_at=now)  # a brand's own type
    EventLogCursor.objects.create(consumer="loyalty.accrual", last_event_id=1, events_read=1)

    events = admin_client.get("/admin/crm/event/").content.decode()
    chinese = admin_client.get("/admin/crm/event/", HTTP_ACCEPT_LANGUAGE="zh-hans").content.decode()
    cursors = admin_client.get("/admin/crm/eventlogcursor/")

    assert "Added to cart (add_to_cart)" in events and "coupon_viewed" in events
    assert "加入购物车 (add_to_cart)" in chinese
    assert cursors.status_code == 200 and "loyalty.accrual" in cursors.content.decode()
