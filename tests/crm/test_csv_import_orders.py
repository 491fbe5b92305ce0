from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.core.management import CommandError, call_command

from crm.models import Customer, Event, Order, OrderLine, Product
from crm.services import imports
from crm.services.imports import ImportFileError, orders_import
from crm.services.imports import orders as order_imports
from crm.services.imports import report as import_report
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db

HEADER = "customer_external_id,order_external_id,ordered_at,amount,currency,channel,sku,quantity\n"


def csv_file(tmp_path, text, name="orders.csv", encoding="utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def test_good_rows_are_kept_and_bad_rows_reported_by_line(tmp_path):
    path = csv_file(
        tmp_path,
        HEADER
        + "C-1,TM-1,2026-03-08 20:15:00,199.00,CNY,tmall,DIAPER-M,1\n"  # line 2
        + "C-1,TM-2,08/03/2026,50.00,CNY,tmall,WIPES,1\n"  # line 3: bad date
        + "C-2,TM-3,2026-03-09 10:00:00,-5.00,CNY,jd,WIPES,1\n"  # line 4: negative amount
        + "C-2,TM-4,2026-03-09 10:00:00,abc,CNY,jd,WIPES,1\n"  # line 5: not an amount
        + "C-3,TM-5,2026-03-10 09:00:00,88.00,XYZ,app,,\n"  # line 6: bad currency
        + "C-3,TM-6,2026-03-10 09:00:00,88.00,CNY,app,SERUM,0\n"  # line 7: quantity 0
        + "C-3,TM-7,2026-03-11 09:00:00,88.00,CNY,小程序,,\n",  # line 8: good, Chinese channel name
    )

    report = orders_import(source=path)

    assert sorted(Order.objects.values_list("external_id", flat=True)) == ["TM-1", "TM-7"]
    assert Order.objects.get(external_id="TM-7").channel == "wechat"
    assert [(e.line, e.field) for e in report.errors] == [
        (3, "ordered_at"),
        (4, "amount"),
        (5, "amount"),
        (6, "currency"),
        (7, "quantity"),
    ]
    assert "cannot be negative" in report.errors[1].message
    assert (report.processed_rows, report.created, report.unchanged, report.error_count) == (7, 2, 0, 5)


def test_rows_of_one_order_become_its_lines(tmp_path):
    path = csv_file(
        tmp_path,
        "customer_external_id,order_external_id,ordered_at,amount,sku,quantity,unit_price,name,category\n"
        "C-1,JD-9,2026-04-01T12:00:00+08:00,300.00,FORMULA-1,2,120.00,婴儿奶粉 1段,baby\n"
        "C-1,JD-9,2026-04-01T12:00:00+08:00,300.00,BOTTLE,3,,奶瓶,baby\n",
    )

    report = orders_import(source=path)

    assert report.created == 1 and report.processed_rows == 2
    order = Order.objects.get()
    assert order.total == Decimal("300.00")
    lines = list(order.lines.order_by("line_no").values_list("sku", "quantity", "unit_price", "name"))
    # The unpriced units share what the priced line leaves: (300 - 240) / 3.
    assert lines == [
        ("FORMULA-1", 2, Decimal("120.00"), "婴儿奶粉 1段"),
        ("BOTTLE", 3, Decimal("20.00"), "奶瓶"),
    ]
    assert Product.objects.get(sku="FORMULA-1").category == "baby"


def test_a_bad_row_rejects_its_whole_order_and_names_every_row(tmp_path):
    path = csv_file(
        tmp_path,
        HEADER
        + "C-1,TM-1,2026-03-08 20:15:00,199.00,CNY,tmall,A,1\n"
        + "C-1,TM-1,2026-03-08 20:15:00,199.00,CNY,tmall,B,x\n"
        + "C-1,TM-1,2026-03-08 20:15:00,199.00,CNY,tmall,C,1\n"
        + "C-1,TM-2,2026-03-08 20:15:00,10.00,CNY,tmall,A,1\n"
        + "C-1,TM-2,2026-03-08 20:15:00,11.00,CNY,tmall,B,1\n",
    )

    report = orders_import(source=path)

    assert not Order.objects.exists()
    assert [(e.line, e.field) for e in report.errors] == [
        (2, "order_external_id"),
        (3, "quantity"),
        (4, "order_external_id"),
        (5, "order_external_id"),
        (6, "order_external_id"),
    ]
    assert "see line 3" in report.errors[0].message
    assert "differs from line 5" in report.errors[4].message
    assert report.error_count == 5


def test_conflict_with_a_stored_order_is_reported_on_its_rows(tmp_path):
    orders_import(source=csv_file(tmp_path, HEADER + "C-1,TM-1,2026-03-08 20:15:00,199.00,CNY,tmall,A,1\n"))
    changed = (
        HEADER
        + "C-1,TM-1,2026-03-08 20:15:00,99.00,CNY,tmall,A,1\nC-1,TM-1,2026-03-08 20:15:00,99.00,CNY,tmall,B,1\n"
    )

    report = orders_import(source=csv_file(tmp_path, changed, "changed.csv"))

    assert [(e.line, e.field) for e in report.errors] == [(2, "order_external_id"), (3, "order_external_id")]
    assert "already exists with different content" in report.errors[0].message
    assert report.error_count == 2
    assert Order.objects.get().total == Decimal("199.00")


def test_missing_required_column_refuses_the_whole_file(tmp_path):
    path = csv_file(tmp_path, "customer_external_id,order_external_id,amount\nC-1,TM-1,10\n")

    with pytest.raises(ImportFileError, match="Missing required column.*ordered_at"):
        orders_import(source=path)

    assert not Order.objects.exists() and not Customer.objects.exists()


def test_semicolon_separated_file_gets_a_hint(tmp_path):
    path = csv_file(
        tmp_path, "customer_external_id;order_external_id;ordered_at;amount\nC-1;TM-1;2026-01-01;10\n"
    )
    with pytest.raises(ImportFileError, match="separated by commas"):
        orders_import(source=path)


def test_unknown_customer_is_created_with_just_its_id_and_counted(tmp_path):
    known = CustomerFactory(external_id="C-KNOWN")
    path = csv_file(
        tmp_path,
        HEADER
        + "C-KNOWN,TM-1,2026-03-08 20:15:00,199.00,CNY,tmall,A,1\n"
        + "C-NEW,TM-2,2026-03-08 20:15:00,99.00,CNY,jd,A,1\n"
        + "C-NEW,TM-3,2026-03-09 20:15:00,99.00,CNY,jd,A,1\n",
    )

    report = orders_import(source=path)

    assert report.created == 3 and report.customers_created == 1
    assert "New customers created for unknown customer ids: 1" in report.summary()
    new = Customer.objects.get(external_id="C-NEW")
    assert (new.name, new.acquisition_channel) == ("", "jd")
    assert Order.objects.get(external_id="TM-1").customer == known
    assert Order.objects.filter(customer=new).count() == 2


def test_reimporting_the_same_file_changes_nothing(tmp_path):
    path = csv_file(
        tmp_path,
        HEADER
        + "C-1,TM-1,2026-03-08 20:15:00,199.00,CNY,tmall,A,1\n"
        + "C-1,TM-1,2026-03-08 20:15:00,199.00,CNY,tmall,B,2\n"
        + "C-2,TM-2,2026-03-08 21:15:00,50.00,,,,\n"
        + "C-2,TM-3,2030-01-01 00:00:00,50.00,,,,\n",  # always rejected: in the future
    )
    first = orders_import(source=path)
    counts = (
        Order.objects.count(),
        OrderLine.objects.count(),
        Event.objects.count(),
        Customer.objects.count(),
    )

    again = orders_import(source=path)

    assert (first.created, first.unchanged, first.error_count) == (2, 0, 1)
    assert (again.created, again.updated, again.unchanged, again.error_count) == (0, 0, 2, 1)
    assert again.customers_created == 0 and again.products_created == 0
    assert (
        Order.objects.count(),
        OrderLine.objects.count(),
        Event.objects.count(),
        Customer.objects.count(),
    ) == counts


def test_dry_run_reports_exactly_what_a_real_run_does_and_writes_nothing(tmp_path):
    orders_import(
        source=csv_file(tmp_path, HEADER + "C-1,TM-1,2026-03-08 20:15:00,199.00,CNY,tmall,A,1\n", "old.csv")
    )
    path = csv_file(
        tmp_path,
        HEADER
        + "C-1,TM-1,2026-03-08 20:15:00,199.00,CNY,tmall,A,1\n"
        + "C-9,TM-2,2026-03-08 20:15:00,20.00,CNY,tmall,NEW-SKU,1\n"
        + "C-9,TM-3,2026-03-08 20:16:00,20.00,CNY,tmall,NEW-SKU,1\n"
        + "C-9,TM-4,not a date,20.00,CNY,tmall,NEW-SKU,1\n",
    )
    before = (Order.objects.count(), Customer.objects.count(), Product.objects.count(), Event.objects.count())

    dry = orders_import(source=path, dry_run=True, batch_rows=2)

    assert (
        Order.objects.count(),
        Customer.objects.count(),
        Product.objects.count(),
        Event.objects.count(),
    ) == before
    real = orders_import(source=path, batch_rows=2)

    def summary(r):
        return (r.created, r.updated, r.unchanged, r.error_count, r.customers_created, r.products_created)

    # Across batches too: C-9 and NEW-SKU are created once, in the dry run as in the real one.
    assert summary(dry) == summary(real) == (2, 0, 1, 1, 1, 1)
    assert [e.as_dict() for e in dry.errors] == [e.as_dict() for e in real.errors]
    assert dry.summary().startswith("Dry run")


def test_gbk_file_from_excel_is_decoded_and_the_user_told(tmp_path):
    path = csv_file(
        tmp_path,
        "customer_external_id,order_external_id,ordered_at,amount,channel,sku,name\n"
        "C-1,TM-1,2026-03-08 20:15:00,199.00,天猫,SKU-1,孕妇叶酸片\n",
        encoding="gbk",
    )

    report = orders_import(source=path)

    assert report.encoding == "gb18030"
    assert "GBK" in report.summary()
    assert Order.objects.get().channel == "tmall"
    assert OrderLine.objects.get().name == "孕妇叶酸片"


def test_utf8_with_bom_is_read(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes(
        b"\xef\xbb\xbf" + (HEADER + "C-1,TM-1,2026-03-08 20:15:00,1.00,CNY,tmall,A,1\n").encode()
    )
    report = orders_import(source=path)
    assert report.created == 1 and report.encoding == "utf-8-sig" and not report.notes


@pytest.mark.parametrize(
    "content, message",
    [
        (b"\xff\xfec\x00u\x00", "UTF-16"),
        (b"customer_external_id,order_external_id\n\x80\xff\x80\n", "neither UTF-8 nor GBK"),
        (b"", "empty"),
    ],
)
def test_file_that_is_not_text_is_refused_clearly(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    with pytest.raises(ImportFileError, match=message):
        orders_import(source=path)


def test_a_time_without_offset_is_shanghai_time(tmp_path):
    orders_import(source=csv_file(tmp_path, HEADER + "C-1,TM-1,2026/03/08 20:15,1.00,CNY,tmall,A,1\n"))
    assert Order.objects.get().placed_at == datetime(2026, 3, 8, 20, 15, tzinfo=ZoneInfo("Asia/Shanghai"))


def test_batches_never_cut_an_order_in_two(tmp_path):
    rows = "".join(f"C-1,TM-1,2026-03-08 20:15:00,60.00,CNY,tmall,SKU-{n},1\n" for n in range(3))
    rows += "C-1,TM-2,2026-03-08 20:15:00,10.00,CNY,tmall,SKU-0,1\n"
    report = orders_import(source=csv_file(tmp_path, HEADER + rows), batch_rows=2)
    assert report.created == 2 and not report.errors
    assert Order.objects.get(external_id="TM-1").lines.count() == 3


def test_line_numbers_count_physical_lines_of_quoted_multiline_cells(tmp_path):
    path = csv_file(
        tmp_path,
        "customer_external_id,order_external_id,ordered_at,amount,sku,name\n"
        'C-1,TM-1,2026-03-08 20:15:00,1.00,A,"two\nlines"\n'  # lines 2-3
        "C-1,TM-2,yesterday,1.00,A,x\n",  # line 4
    )
    report = orders_import(source=path)
    assert [(e.line, e.field) for e in report.errors] == [(4, "ordered_at")]
    assert OrderLine.objects.get().name == "two\nlines"


def test_error_list_is_capped_but_every_rejected_row_is_counted(tmp_path, monkeypatch):
    monkeypatch.setattr(import_report, "MAX_ERRORS_KEPT", 3)
    rows = "".join(f"C-1,TM-{n},bad,1.00,CNY,tmall,A,1\n" for n in range(10))
    report = orders_import(source=csv_file(tmp_path, HEADER + rows))
    assert len(report.errors) == 3 and report.error_count == 10
    assert "first 3 errors" in report.summary()


def test_command_prints_a_summary_and_exits_non_zero_when_rows_were_rejected(tmp_path, capsys):
    path = csv_file(
        tmp_path,
        HEADER
        + "C-1,TM-1,2026-03-08 20:15:00,199.00,CNY,tmall,A,1\nC-1,TM-2,2026-03-08 20:15:00,-1,CNY,tmall,A,1\n",
    )

    with pytest.raises(CommandError, match="1 rows were rejected") as caught:
        call_command("import_orders", str(path))

    assert caught.value.returncode == 1
    out, err = capsys.readouterr()
    assert "2 / 2 rows" in out and "Orders created: 1," in out
    assert "line 3 [amount]" in err
    assert Order.objects.filter(external_id="TM-1").exists()


def test_command_succeeds_quietly_on_a_clean_file_and_dry_run_writes_nothing(tmp_path, capsys):
    path = csv_file(tmp_path, HEADER + "C-1,TM-1,2026-03-08 20:15:00,199.00,CNY,tmall,A,1\n")

    call_command("import_orders", str(path), "--dry-run")
    assert not Order.objects.exists()
    call_command("import_orders", str(path))

    assert Order.objects.count() == 1
    assert "Dry run" in capsys.readouterr().out


def test_command_reports_a_whole_file_problem(tmp_path):
    path = csv_file(tmp_path, "order_external_id\nTM-1\n")
    with pytest.raises(CommandError, match="Missing required column"):
        call_command("import_orders", str(path))


def test_an_order_sent_by_the_api_and_then_in_a_csv_with_chinese_labels_is_unchanged(tmp_path):
    from crm.services.orders import OrderInput, OrderLineInput, orders_ingest

    orders_ingest(
        orders=[
            OrderInput(
                external_id="WX-1",
                placed_at=datetime(2026, 3, 8, 20, 15, tzinfo=ZoneInfo("Asia/Shanghai")),
                total=Decimal("88.00"),
                channel="wechat",
                status="paid",
                customer_external_id="C-1",
                lines=(OrderLineInput(sku="SERUM", quantity=1, unit_price=Decimal("88.00")),),
            )
        ]
    )
    path = csv_file(
        tmp_path,
        "customer_external_id,order_external_id,ordered_at,amount,channel,status,sku\n"
        "C-1,WX-1,2026-03-08 20:15:00,88,小程序,已付款,SERUM\n",
    )

    report = orders_import(source=path)

    assert (report.created, report.unchanged, report.error_count) == (0, 1, 0)


def test_command_batches_orders_by_the_order_batch_size_and_customers_by_theirs(tmp_path, monkeypatch):
    from crm.management.commands import import_customers, import_orders

    seen = []

    def importer(name):
        def run(**kwargs):
            seen.append((name, kwargs["batch_rows"]))
            return imports.ImportReport(kind="orders")

        return staticmethod(run)

    monkeypatch.setattr(import_orders.Command, "importer", importer("orders"))
    monkeypatch.setattr(import_customers.Command, "importer", importer("customers"))
    path = csv_file(tmp_path, HEADER)

    call_command("import_orders", str(path))
    call_command("import_customers", str(path))
    call_command("import_orders", str(path), "--batch-size", "7")

    assert seen == [
        ("orders", imports.ORDER_BATCH_ROWS),
        ("customers", imports.BATCH_ROWS),
        ("orders", 7),
    ]


def test_the_reader_thread_leaves_the_process_gil_switch_interval_alone():
    """The import runs in Celery workers among other tasks: its reader thread must not change the
    process-wide switch interval, also when two readers overlap or one fails."""
    import sys
    import threading

    before = sys.getswitchinterval()
    seen = []

    def producer(fail=False):
        seen.append(sys.getswitchinterval())
        yield 1
        if fail:
            raise ValueError("bad batch")
        yield 2

    outer = order_imports._in_thread(producer())
    assert next(outer) == 1
    assert list(order_imports._in_thread(producer())) == [1, 2]  # a second one, nested
    assert sys.getswitchinterval() == before  # the outer one still runs
    assert list(outer) == [2]
    with pytest.raises(ValueError):
        list(order_imports._in_thread(producer(fail=True)))
    assert sys.getswitchinterval() == before
    assert seen == [before] * 3

    results = []
    threads = [
        threading.Thread(target=lambda: results.append(list(order_imports._in_thread(producer()))))
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [[1, 2]] * 4 and sys.getswitchinterval() == before


def test_the_import_orders_command_shortens_the_switch_interval_of_its_own_process_while_it_runs(
    tmp_path, monkeypatch
):
    """manage.py import_orders owns its process, so its writing thread may win the GIL back from the
    reader within 0.1 ms instead of 5 ms; the interval is restored afterwards, also when the import fails
    (call_command can run it inside a longer-lived process)."""
    import sys

    from crm.management.commands import import_orders

    before = sys.getswitchinterval()
    seen = []

    def run(**kwargs):
        seen.append(sys.getswitchinterval())
        return imports.ImportReport(kind="orders")

    monkeypatch.setattr(import_orders.Command, "importer", staticmethod(run))
    path = csv_file(tmp_path, HEADER)
    call_command("import_orders", str(path))
    assert seen == [pytest.approx(import_orders.GIL_HANDOFF_INTERVAL)]  # Python stores microseconds
    assert sys.getswitchinterval() == before

    def fail(**kwargs):
        raise ValueError("database went away")

    monkeypatch.setattr(import_orders.Command, "importer", staticmethod(fail))
    with pytest.raises(ValueError):
        call_command("import_orders", str(path))
    assert sys.getswitchinterval() == before
