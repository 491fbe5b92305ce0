from datetime import date

import pytest
from django.core.management import CommandError, call_command

from crm.models import Consent, ConsentChange, Customer, CustomerIdentity
from crm.services.imports import ImportFileError, customers_import
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db

HEADER = "external_id,name,email,phone,birthday,gender,city,acquisition_channel,wechat_openid,consent_email,consent_sms\n"


def csv_file(tmp_path, text, name="customers.csv", encoding="utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def test_new_customers_get_profile_identities_consents_and_history(tmp_path):
    path = csv_file(
        tmp_path,
        HEADER
        + "C-1,王芳 Wang Fang,Wang.Fang@Example.cn,138 0013 8000,1992-05-20,女,上海,微信,oWx-1,opted_in,opted_out\n"
        + "C-2,李娜 Li Na,,,,,,tmall,,,\n",
    )

    report = customers_import(source=path)

    assert (report.created, report.updated, report.unchanged, report.error_count) == (2, 0, 0, 0)
    wang = Customer.objects.get(external_id="C-1")
    assert (
        wang.name,
        wang.email,
        wang.phone,
        wang.birthday,
        wang.gender,
        wang.city,
        wang.acquisition_channel,
    ) == (
        "王芳 Wang Fang",
        "wang.fang@example.cn",
        "+8613800138000",
        date(1992, 5, 20),
        "female",
        "上海",
        "wechat",
    )
    assert wang.time_zone == "Asia/Shanghai"
    assert set(wang.identities.values_list("kind", "value")) == {
        ("external_id", "C-1"),
        ("email", "wang.fang@example.cn"),
        ("phone", "+8613800138000"),
        ("wechat_openid", "oWx-1"),
    }
    assert dict(wang.consents.values_list("channel", "status")) == {"email": "opted_in", "sms": "opted_out"}
    assert set(
        ConsentChange.objects.filter(customer=wang).values_list("channel", "status", "previous_status")
    ) == {
        ("email", "opted_in", ""),
        ("sms", "opted_out", ""),
    }
    assert wang.history.count() == 1
    assert not Consent.objects.filter(customer__external_id="C-2").exists()


def test_update_changes_only_given_cells_and_counts_updated_and_unchanged(tmp_path):
    customers_import(
        source=csv_file(tmp_path, HEADER + "C-1,王芳,,,,,上海,,,opted_in,\nC-2,李娜,,,,,北京,,,,\n", "a.csv")
    )

    report = customers_import(
        source=csv_file(
            tmp_path, HEADER + "C-1,,,,,,杭州,,,,\nC-2,李娜,,,,,,,,,\nC-3,张伟,,,,,,,,,\n", "b.csv"
        )
    )

    assert (report.created, report.updated, report.unchanged) == (1, 1, 1)
    wang = Customer.objects.get(external_id="C-1")
    assert (wang.name, wang.city) == ("王芳", "杭州")  # an empty cell leaves the field as it is
    assert wang.history.count() == 2
    assert Consent.objects.get(customer=wang).status == "opted_in"


def test_consent_change_is_recorded_with_the_previous_status(tmp_path):
    customers_import(source=csv_file(tmp_path, HEADER + "C-1,,,,,,,,,opted_in,\n", "a.csv"))

    report = customers_import(source=csv_file(tmp_path, HEADER + "C-1,,,,,,,,,退订,\n", "b.csv"))

    assert report.updated == 1
    assert Consent.objects.get().status == "opted_out"
    assert list(ConsentChange.objects.order_by("id").values_list("status", "previous_status")) == [
        ("opted_in", ""),
        ("opted_out", "opted_in"),
    ]


def test_reimporting_the_same_file_changes_nothing(tmp_path):
    path = csv_file(
        tmp_path,
        HEADER
        + "C-1,王芳,wf@example.cn,13800138000,1992-05-20,female,上海,wechat,oWx-1,opted_in,opted_out\n"
        + "C-2,李娜,ln@example.cn,,,,,,,,\n"
        + "C-3,bad,not-an-email,,,,,,,,\n",
    )
    customers_import(source=path)
    counts = [
        m.objects.count()
        for m in (Customer, CustomerIdentity, Consent, ConsentChange, Customer.history.model)
    ]

    again = customers_import(source=path)

    assert (again.created, again.updated, again.unchanged, again.error_count) == (0, 0, 2, 1)
    assert [
        m.objects.count()
        for m in (Customer, CustomerIdentity, Consent, ConsentChange, Customer.history.model)
    ] == counts


def test_bad_cells_are_reported_by_line_and_column_and_good_rows_kept(tmp_path):
    path = csv_file(
        tmp_path,
        HEADER
        + "C-1,ok,,,,,,,,,\n"
        + "C-2,,not-an-email,,,,,,,,\n"  # line 3
        + "C-3,,,,1992-13-01,,,,,,\n"  # line 4
        + "C-4,,,,,unknown-gender,,,,,\n"  # line 5
        + "C-5,,,,,,,taobao,,maybe,\n"  # line 6: two problems
        + ",no id,,,,,,,,,\n"  # line 7
        + "C-1,again,,,,,,,,,\n"  # line 8: repeated id
        + "C-8,ok,,,2999-01-01,,,,,,\n",  # line 9: birthday in the future
    )

    report = customers_import(source=path)

    assert [(e.line, e.field) for e in report.errors] == [
        (3, "email"),
        (4, "birthday"),
        (5, "gender"),
        (6, "acquisition_channel"),
        (6, "consent_email"),
        (7, "external_id"),
        (8, "external_id"),
        (9, "birthday"),
    ]
    assert report.error_count == 7 and report.created == 1
    assert list(Customer.objects.values_list("external_id", "name")) == [("C-1", "ok")]


def test_customer_known_by_phone_gets_the_external_id_instead_of_a_duplicate(tmp_path):
    known = CustomerFactory(external_id=None, phone="+8613900000001", email="")
    CustomerIdentity.objects.create(customer=known, kind="phone", value="+8613900000001")

    report = customers_import(source=csv_file(tmp_path, HEADER + "C-1,王芳,,139 0000 0001,,,,,,,\n"))

    assert report.error_count == 0
    assert Customer.objects.count() == 1
    known.refresh_from_db()
    assert (known.external_id, known.name) == ("C-1", "王芳")


def test_two_rows_sharing_a_new_phone_end_as_one_customer_as_the_api_would(tmp_path):
    report = customers_import(
        source=csv_file(tmp_path, HEADER + "C-1,王芳,,13900000002,,,,,,,\nC-2,王芳,,13900000002,,,,,,,\n")
    )
    assert report.error_count == 0
    assert CustomerIdentity.objects.get(kind="phone").customer.external_id == "C-2"
    assert CustomerIdentity.objects.filter(kind="external_id").count() == 2


def test_dry_run_writes_nothing(tmp_path):
    path = csv_file(tmp_path, HEADER + "C-1,王芳,,,,,,,,opted_in,\n")

    report = customers_import(source=path, dry_run=True)

    assert report.created == 1
    assert (
        not Customer.objects.exists() and not Consent.objects.exists() and not ConsentChange.objects.exists()
    )


def test_gbk_customer_file(tmp_path):
    path = csv_file(tmp_path, "external_id,name,city\nC-1,陈静,成都\n", encoding="gbk")
    report = customers_import(source=path)
    assert report.encoding == "gb18030" and report.notes
    assert Customer.objects.get().name == "陈静"


def test_unknown_columns_are_ignored_and_listed(tmp_path):
    report = customers_import(source=csv_file(tmp_path, "External ID,Name,Shoe Size\nC-1,王芳,37\n"))
    assert Customer.objects.get().name == "王芳"
    assert "shoe_size" in report.summary()


def test_missing_external_id_column_refuses_the_file(tmp_path):
    with pytest.raises(ImportFileError, match="external_id"):
        customers_import(source=csv_file(tmp_path, "name,email\n王芳,a@b.cn\n"))


def test_import_customers_command(tmp_path, capsys):
    path = csv_file(tmp_path, HEADER + "C-1,王芳,,,,,,,,,\nC-2,,bad,,,,,,,,\n")
    with pytest.raises(CommandError, match="1 rows were rejected"):
        call_command("import_customers", str(path))
    out, err = capsys.readouterr()
    assert "Customers created: 1," in out and "line 3 [email]" in err
