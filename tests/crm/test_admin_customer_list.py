"""The customer admin list: targeted search, filters, and counts that never scan the whole table."""

import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from crm import paginators
from crm.admin.search import customer_search_filter
from crm.models import Customer, CustomerIdentity
from crm.paginators import EstimatedCountPaginator
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db

URL = reverse("admin:crm_customer_changelist")


@pytest.fixture
def customers():
    wang = CustomerFactory(name="王芳", email="wang.fang@example.cn", phone="+8613800138000")
    li = CustomerFactory(name="李娜 Li Na", email="lina@example.cn", phone="+8613911112222")
    emily = CustomerFactory(name="Emily Chen", email="emily@example.com", phone="+8613722223333")
    CustomerIdentity.objects.create(customer=li, kind="wechat_openid", value="oWx-openid-42")
    CustomerIdentity.objects.create(customer=emily, kind="tmall_buyer_id", value="tb_998877")
    return {"wang": wang, "li": li, "emily": emily}


def search(client, term):
    response = client.get(URL, {"q": term})
    assert response.status_code == 200
    return {c.pk for c in response.context["cl"].result_list}


@pytest.mark.parametrize(
    ("term", "who"),
    [
        ("王芳", "wang"),  # two characters: a prefix
        ("王", "wang"),
        ("Li Na", "li"),  # three or more: a substring, case-insensitive
        ("chen", "emily"),
        ("wang.fang@example.cn", "wang"),  # email, exact
        ("WANG.FANG@example.cn", "wang"),
        ("lina@", "li"),  # email, beginning
        ("13800138000", "wang"),  # phone without +86
        ("+86 138-0013-8000", "wang"),
        ("1391111", "li"),  # beginning of a phone
        ("oWx-openid-42", "li"),  # any identifier, exact
        ("tb_998877", "emily"),
    ],
)
def test_search_finds_the_customer_by_name_email_phone_or_identifier(admin_client, customers, term, who):
    assert search(admin_client, term) == {customers[who].pk}


def test_search_by_customer_id_and_external_id(admin_client, customers):
    li = customers["li"]
    assert search(admin_client, f"#{li.pk}") == {li.pk}
    assert search(admin_client, li.external_id) == {li.pk}


def test_search_finds_nothing_for_an_unknown_term(admin_client, customers):
    assert search(admin_client, "查无此人") == set()
    assert search(admin_client, "nobody@nowhere.cn") == set()
    assert search(admin_client, "oWx-openid") == set()  # identifiers match whole, not in part


def test_search_and_filters_with_unicode_digits_answer_a_page_not_a_500(admin_client, customers):
    # "²".isdigit() is true and int("²") raises: each of these was a 500.
    assert search(admin_client, "#²") == set()
    assert search(admin_client, "#¹²³") == set()
    assert admin_client.get(URL, {"tag": "²"}).status_code == 200
    assert admin_client.get(URL, {"tier": "²"}).status_code == 200


def test_name_search_uses_ilike_that_the_trigram_index_serves():
    # Django's icontains is UPPER(name) LIKE UPPER('%x%'), which a gin_trgm_ops index on name cannot use.
    sql = str(Customer.objects.filter(customer_search_filter("Emily")).query)
    assert '"crm_customer"."name" ILIKE %Emily%' in sql
    assert 'UPPER("crm_customer"."name"::text)' not in sql


def test_short_name_search_is_a_prefix_served_by_the_upper_prefix_index():
    sql = str(Customer.objects.filter(customer_search_filter("王芳")).query)
    assert 'UPPER("crm_customer"."name"::text) LIKE UPPER(' in sql
    assert "%王芳%" not in sql


def test_search_runs_no_join_and_no_count_of_the_whole_table(admin_client, customers):
    with CaptureQueriesContext(connection) as queries:
        search(admin_client, "Li Na")
    sql = [q["sql"] for q in queries.captured_queries if "crm_customer" in q["sql"]]
    assert not any("JOIN" in s and '"crm_customer"' in s.split("FROM", 1)[1][:40] for s in sql)
    assert not any(
        s.startswith('SELECT COUNT(*) AS "__count" FROM "crm_customer"') and "WHERE" not in s for s in sql
    )
    # The search runs once: its matching ids give both the count and the page.
    assert sum("ILIKE" in s for s in sql) == 1


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"acquisition_channel__exact": "wechat"}, {"wechat_customer"}),
        ({"gender__exact": "female"}, {"wechat_customer"}),
        ({"erased": "yes"}, {"erased_customer"}),
        ({"erased": "no"}, {"wechat_customer"}),
    ],
)
def test_list_filters(admin_client, params, expected):
    from django.utils import timezone

    made = {
        "wechat_customer": CustomerFactory(acquisition_channel="wechat", gender="female"),
        "erased_customer": CustomerFactory(acquisition_channel="store", erased_at=timezone.now()),
    }
    response = admin_client.get(URL, params)
    assert response.status_code == 200
    assert {c.pk for c in response.context["cl"].result_list} == {made[name].pk for name in expected}


def test_created_date_filter_is_offered(admin_client):
    response = admin_client.get(URL)
    titles = [str(spec.title) for spec in response.context["cl"].filter_specs]
    assert {"acquisition channel", "gender", "erased", "created at"} <= set(titles)


def test_unfiltered_list_counts_from_the_table_estimate(admin_client, customers, monkeypatch):
    monkeypatch.setattr(paginators, "table_row_estimate", lambda model, using="default": 1_234_567)
    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(URL)
    assert response.status_code == 200
    assert not any("COUNT(*)" in q["sql"] and "crm_customer" in q["sql"] for q in queries.captured_queries)
    assert response.context["cl"].result_count == 1_234_567
    assert "about 1,234,567 customers" in response.content.decode()


def test_filtered_count_is_capped(admin_client, monkeypatch):
    CustomerFactory.create_batch(5, name="张伟")
    monkeypatch.setattr(EstimatedCountPaginator, "count_cap", 3)
    response = admin_client.get(URL, {"q": "张伟"})
    assert response.context["cl"].result_count == 3
    assert response.context["cl"].paginator.is_capped
    assert "more than 3 customers" in response.content.decode()


def test_small_table_is_counted_exactly():
    CustomerFactory.create_batch(3)
    paginator = EstimatedCountPaginator(Customer.objects.order_by("-id"), 2)
    assert paginator.count == 3
    assert not paginator.is_estimate and not paginator.is_capped


def test_table_row_estimate_reads_pg_class_after_analyze():
    CustomerFactory.create_batch(5)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE crm_customer")
    assert paginators.table_row_estimate(Customer) == 5


def test_analyst_sees_the_list_but_no_merge_or_erase_actions(client, customers, django_user_model):
    analyst = django_user_model.objects.create_user("ana", password="x", is_staff=True)
    analyst.groups.add(Group.objects.get(name="analyst"))
    client.force_login(analyst)
    response = client.get(URL)
    assert response.status_code == 200
    form = response.context["action_form"]
    actions = {name for name, _label in form.fields["action"].choices} if form else set()
    assert not {"merge_selected", "erase_selected", "export_selected"} & actions


def test_filtered_pages_come_back_in_the_lists_order():
    made = [CustomerFactory(name="张伟").pk for _ in range(5)]
    CustomerFactory(name="李娜")
    paginator = EstimatedCountPaginator(Customer.objects.filter(name="张伟").order_by("-id"), 2)
    assert paginator.count == 5 and paginator.num_pages == 3
    assert [c.pk for c in paginator.page(1).object_list] == sorted(made, reverse=True)[:2]
    assert [c.pk for c in paginator.page(2).object_list] == sorted(made, reverse=True)[2:4]
    assert [c.pk for c in paginator.page(3).object_list] == sorted(made, reverse=True)[4:]


@pytest.mark.parametrize(
    "table, column, index, lookups",
    [
        ("crm_customer", "email", "crm_customer_email_like", ["= 'wang.fang@example.cn'", "LIKE 'wang.f%'"]),
        ("crm_customer", "phone", "crm_customer_phone_like", ["= '+8613800000001'", "LIKE '+86138%'"]),
        ("crm_customer", "external_id", "crm_customer_external_id_uniq", ["= 'TM-0001'"]),
        ("crm_order", "external_id", "crm_order_external_id_uniq", ["= 'TM2026-1'", "LIKE 'TM2026%'"]),
    ],
)
def test_one_index_per_looked_up_column_serves_whole_and_prefix_lookups(table, column, index, lookups):
    """Migration crm/0013: each of these columns has exactly one index (a pattern-ops index answers
    equality as well as prefixes), and it serves every kind of lookup made on the column."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexname FROM pg_indexes WHERE tablename = %s AND indexdef ~ %s",
            [table, rf"\({column}( varchar_pattern_ops)?\)$"],
        )
        assert [name for (name,) in cursor.fetchall()] == [index]
        cursor.execute("SET LOCAL enable_seqscan = off")
        for lookup in lookups:
            cursor.execute(f"EXPLAIN SELECT id FROM {table} WHERE {column} {lookup}")
            plan = "\n".join(row[0] for row in cursor.fetchall())
            assert index in plan, plan
