"""Snapshots, static lists, exports, the live preview and the segment admin."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission, User
from django.urls import reverse

import crm.admin.segments
from crm.models import (
    Consent,
    Customer,
    CustomerIdentity,
    Segment,
    SegmentSnapshot,
    SegmentSnapshotMember,
    StaticList,
    StaticListMember,
    Tag,
)
from crm.segments.fields import RuleInvalid
from crm.segments.selectors import customers_csv_rows, segment_count, segment_preview
from crm.segments.services import (
    UploadRejected,
    segment_snapshot_create,
    static_list_add,
    static_list_remove,
    static_list_upload,
)
from tests.factories import CustomerFactory, OrderFactory

NOW = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
SHANGHAI = {"op": "and", "conditions": [{"field": "profile.city", "operator": "eq", "value": "上海"}]}


@pytest.fixture
def customers(db):
    people = CustomerFactory.create_batch(10, city="上海") + CustomerFactory.create_batch(5, city="北京")
    erased = CustomerFactory(city="上海", erased_at=NOW)
    return people, erased


# --- Snapshots --------------------------------------------------------------------------------------


def test_snapshot_freezes_the_members_of_the_moment_in_one_insert(customers, django_assert_max_num_queries):
    people, erased = customers
    segment = Segment.objects.create(name="Shanghai", rule=SHANGHAI)
    # Savepoint, snapshot row, jit off, INSERT ... SELECT of the members, member count, segment count,
    # release.
    with django_assert_max_num_queries(7):
        snapshot = segment_snapshot_create(segment=segment, purpose="Double 11 SMS", now=NOW)

    members = set(
        SegmentSnapshotMember.objects.filter(snapshot=snapshot).values_list("customer_id", flat=True)
    )
    assert members == {c.pk for c in people if c.city == "上海"}
    assert erased.pk not in members
    assert snapshot.member_count == 10
    segment.refresh_from_db()
    assert (segment.last_count, segment.last_counted_at) == (10, NOW)

    # Later changes to the customers or the rule do not move the snapshot.
    CustomerFactory(city="上海")
    segment.rule = {"op": "and", "conditions": []}
    segment.save()
    snapshot.refresh_from_db()
    assert SegmentSnapshotMember.objects.filter(snapshot=snapshot).count() == 10
    assert snapshot.rule == SHANGHAI and snapshot.segment_name == "Shanghai"


def test_snapshot_of_a_rule_that_no_longer_compiles_is_refused_and_writes_nothing(customers):
    tag = Tag.objects.create(name="vip")
    segment = Segment.objects.create(
        name="VIP",
        rule={
            "op": "and",
            "conditions": [{"field": "tags.tagged", "operator": "has_any", "value": [tag.pk]}],
        },
    )
    tag_id = tag.pk
    tag.delete()
    with pytest.raises(RuleInvalid, match=f"group 1 › condition 1: tag {tag_id} does not exist"):
        segment_snapshot_create(segment=segment)
    assert not SegmentSnapshot.objects.exists()


# --- Static lists -------------------------------------------------------------------------------------


def upload(static_list, text, match_by=None):
    return static_list_upload(
        static_list=static_list, file=io.BytesIO(text.encode("utf-8-sig")), match_by=match_by
    )


def test_upload_matches_by_the_header_column_and_reports_unmatched_lines(customers):
    people, erased = customers
    static_list = StaticList.objects.create(name="Fair visitors")
    for c in people[:3]:
        CustomerIdentity.objects.create(customer=c, kind="email", value=c.email)
    CustomerIdentity.objects.create(customer=erased, kind="email", value=erased.email)
    text = "email\n" + "\n".join(
        [people[0].email.upper(), people[1].email, "", people[2].email, erased.email, "nobody@example.cn"]
    )

    result = upload(static_list, text)

    assert (result.added, result.already_members, result.unmatched_count) == (3, 0, 2)
    assert [(p.line, p.value) for p in result.unmatched] == [(6, erased.email), (7, "nobody@example.cn")]
    assert set(static_list.members.values_list("customer_id", flat=True)) == {c.pk for c in people[:3]}

    again = upload(static_list, text)
    assert (again.added, again.already_members) == (0, 3)


def test_a_malformed_line_rejects_the_whole_file_naming_the_line(customers):
    people, _erased = customers
    static_list = StaticList.objects.create(name="By id")
    text = "\n".join([str(people[0].pk), "12x", str(people[1].pk), "²"])  # "²".isdigit(), int("²") raises
    with pytest.raises(UploadRejected) as raised:
        upload(static_list, text, match_by="customer_id")
    assert [(p.line, p.value) for p in raised.value.problems] == [(2, "12x"), (4, "²")]
    assert "not a customer id" in str(raised.value.problems[0])
    assert not static_list.members.exists()


def test_upload_needs_to_know_what_the_values_are(customers):
    static_list = StaticList.objects.create(name="Unknown")
    with pytest.raises(UploadRejected, match="choose 'match by'"):
        upload(static_list, "C0000001\nC0000002\n")
    with pytest.raises(UploadRejected, match="not UTF-8"):
        static_list_upload(
            static_list=static_list, file=io.BytesIO("姓名".encode("gbk")), match_by="external_id"
        )


def test_upload_by_phone_normalises_like_ingestion(customers):
    people, _erased = customers
    CustomerIdentity.objects.create(customer=people[4], kind="phone", value="+8613912345678")
    static_list = StaticList.objects.create(name="Phones")
    result = upload(static_list, "phone\n+86 139 1234 5678\n")
    assert result.added == 1


def test_hand_picked_members_skip_erased_customers_and_can_be_removed(customers):
    people, erased = customers
    static_list = StaticList.objects.create(name="Picked")
    assert static_list_add(static_list=static_list, customer_ids=[people[0].pk, people[1].pk, erased.pk]) == (
        2,
        0,
    )
    assert static_list_add(static_list=static_list, customer_ids=[people[0].pk]) == (0, 1)
    assert static_list_remove(static_list=static_list, customer_ids=[people[0].pk]) == 1
    assert list(static_list.members.values_list("customer_id", flat=True)) == [people[1].pk]


def test_static_lists_can_be_used_in_rules(customers):
    people, _erased = customers
    static_list = StaticList.objects.create(name="Picked")
    static_list_add(static_list=static_list, customer_ids=[c.pk for c in people[:4]])
    rule = {
        "op": "and",
        "conditions": [{"field": "lists.member", "operator": "member_of_none", "value": [static_list.pk]}],
    }
    assert segment_count(rule=rule) == len(people) - 4


# --- Export and preview ---------------------------------------------------------------------------------


def test_export_streams_a_header_and_every_member(customers):
    people, _erased = customers
    rows = list(csv.reader(io.StringIO("".join(customers_csv_rows(Customer.objects.filter(city="北京"))))))
    assert rows[0][:3] == ["id", "external_id", "name"]
    assert sorted(int(r[0]) for r in rows[1:]) == sorted(c.pk for c in people if c.city == "北京")


def test_preview_counts_and_samples_newest_first(customers):
    people, _erased = customers
    result = segment_preview(rule=SHANGHAI, n=3)
    assert result["count"] == 10
    assert [r["id"] for r in result["sample"]] == sorted(
        (c.pk for c in people if c.city == "上海"), reverse=True
    )[:3]


# --- Admin --------------------------------------------------------------------------------------------


@pytest.fixture
def staff(db):
    user = User.objects.create_user("marketer", password="pw", is_staff=True)
    codenames = [
        "add_segment",
        "change_segment",
        "view_segment",
        "view_segmentsnapshot",
        "add_staticlist",
        "change_staticlist",
        "view_staticlist",
    ]
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label="crm", codename__in=codenames)
    )
    return user


@pytest.fixture
def staff_client(client, staff):
    client.force_login(staff)
    return client


def test_builder_page_renders_the_schema_and_the_preview_url(staff_client):
    response = staff_client.get(reverse("admin:crm_segment_add"))
    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="segment-builder-schema"' in html and "crm/segments/builder.js" in html
    assert reverse("admin:crm_segment_preview") in html
    schema = json.loads(
        html.split('id="segment-builder-schema" type="application/json">')[1].split("</script>")[0]
    )
    assert {"profile.city", "events.performed", "metrics.lifecycle_stage", "orders.count"} <= {
        f["key"] for f in schema["fields"]
    }


def test_preview_endpoint_returns_count_sample_and_errors_naming_the_condition(staff_client, customers):
    url = reverse("admin:crm_segment_preview")
    ok = staff_client.post(url, {"rule": SHANGHAI}, content_type="application/json")
    assert ok.status_code == 200 and ok.json()["count"] == 10 and len(ok.json()["sample"]) == 10

    bad_rule = {
        "op": "and",
        "conditions": [
            {"op": "or", "conditions": [{"field": "orders.count", "operator": "contains", "value": 2}]}
        ],
    }
    bad = staff_client.post(url, {"rule": bad_rule}, content_type="application/json")
    assert bad.status_code == 400
    assert bad.json()["errors"] == [
        {
            "path": "group 1 › group 1 › condition 1",
            "loc": [0, 0],
            "message": "operator 'contains' does not apply to a number field",
            "text": "group 1 › group 1 › condition 1: operator 'contains' does not apply to a number field",
        }
    ]
    garbage = staff_client.post(url, "not json", content_type="application/json")
    assert garbage.status_code == 400 and "must be JSON" in garbage.json()["errors"][0]["message"]
    assert staff_client.get(url).status_code == 405


def test_saving_an_impossible_rule_shows_the_message_and_saves_nothing(staff_client):
    rule = {
        "op": "and",
        "conditions": [
            {
                "field": "orders.count",
                "operator": "gte",
                "value": 1,
                "window": {"kind": "last_days", "days": -3},
            }
        ],
    }
    response = staff_client.post(
        reverse("admin:crm_segment_add"), {"name": "Broken", "description": "", "rule": json.dumps(rule)}
    )
    assert response.status_code == 200
    assert (
        "group 1 › condition 1: the window&#x27;s days must be a whole number between 1 and 3650"
        in response.content.decode()
    )
    assert not Segment.objects.exists()


def test_saving_a_segment_records_its_count(staff_client, customers, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(
            reverse("admin:crm_segment_add"),
            {"name": "Shanghai", "description": "", "rule": json.dumps(SHANGHAI)},
        )
    assert response.status_code == 302
    segment = Segment.objects.get()
    assert segment.rule == SHANGHAI and segment.last_count == 10


def test_snapshot_button_and_export_permission(staff_client, staff, customers):
    segment = Segment.objects.create(name="Shanghai", rule=SHANGHAI)
    response = staff_client.post(
        reverse("admin:crm_segment_snapshot", args=[segment.pk]), {"purpose": "test send"}
    )
    snapshot = SegmentSnapshot.objects.get()
    assert response.status_code == 302 and response.url == reverse(
        "admin:crm_segmentsnapshot_change", args=[snapshot.pk]
    )
    assert snapshot.purpose == "test send" and snapshot.member_count == 10

    export = reverse("admin:crm_segment_export", args=[segment.pk])
    assert staff_client.get(export).status_code == 403  # exporting personal data is its own permission
    staff.user_permissions.add(Permission.objects.get(codename="export_segment"))
    response = staff_client.get(export)
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    body = b"".join(response.streaming_content).decode("utf-8")
    assert body.startswith("\ufeffid,external_id,name")
    assert len(body.strip().splitlines()) == 11


def test_static_list_upload_through_the_admin_reports_and_keeps_the_list(staff_client, customers):
    people, _erased = customers
    upload_file = io.BytesIO(("external_id\n" + people[0].external_id + "\nNOPE\n").encode())
    upload_file.name = "visitors.csv"
    response = staff_client.post(
        reverse("admin:crm_staticlist_add"),
        {"name": "Visitors", "description": "", "upload": upload_file, "paste": "", "match_by": ""},
    )
    assert response.status_code == 302
    static_list = StaticList.objects.get()
    assert list(static_list.members.values_list("customer_id", flat=True)) == [people[0].pk]

    response = staff_client.post(
        reverse("admin:crm_staticlist_change", args=[static_list.pk]),
        {"name": "Visitors", "description": "", "paste": "abc\n", "match_by": "customer_id"},
        follow=True,
    )
    assert "1 lines are not valid; nothing was added." in response.content.decode()
    assert StaticListMember.objects.count() == 1


def test_admin_pages_render(admin_client, customers):
    segment = Segment.objects.create(name="Shanghai", rule=SHANGHAI)
    snapshot = segment_snapshot_create(segment=segment)
    static_list = StaticList.objects.create(name="L")
    for url in [
        reverse("admin:crm_segment_changelist"),
        reverse("admin:crm_segment_change", args=[segment.pk]),
        reverse("admin:crm_segmentsnapshot_changelist"),
        reverse("admin:crm_segmentsnapshot_change", args=[snapshot.pk]),
        reverse("admin:crm_staticlist_changelist"),
        reverse("admin:crm_staticlist_change", args=[static_list.pk]),
        reverse("admin:crm_staticlistmember_changelist"),
        reverse("admin:crm_acquisitioncost_changelist"),
        reverse("admin:crm_acquisitioncost_add"),
        reverse("admin:crm_productaffinity_changelist"),
        reverse("admin:crm_dashboardsummary_changelist"),
    ]:
        assert admin_client.get(url).status_code == 200, url


def test_customer_action_adds_the_selected_customers_to_a_list(admin_user, rf, customers):
    from django.contrib import admin
    from django.contrib.messages.storage.fallback import FallbackStorage

    people, _erased = customers
    static_list = StaticList.objects.create(name="Picked")
    request = rf.post("/", {"apply": "1", "static_list": static_list.pk})
    request.user = admin_user
    request.session = {}
    request._messages = FallbackStorage(request)
    modeladmin = admin.ModelAdmin(Customer, admin.site)
    assert (
        crm.admin.segments.add_to_static_list(
            modeladmin, request, Customer.objects.filter(pk__in=[people[0].pk, people[1].pk])
        )
        is None
    )
    assert static_list.members.count() == 2


def test_orders_and_consent_in_one_rule(customers):
    """A smoke test of a realistic rule: Shanghai, SMS opt-in, spent 100+ in the last 30 days."""
    people, _erased = customers
    buyer, other = people[0], people[1]
    Consent.objects.create(customer=buyer, channel="sms", status="opted_in", changed_at=NOW)
    Consent.objects.create(customer=other, channel="sms", status="opted_in", changed_at=NOW)
    OrderFactory(customer=buyer, total=Decimal("150.00"), placed_at=NOW - timedelta(days=3))
    OrderFactory(customer=other, total=Decimal("150.00"), placed_at=NOW - timedelta(days=40))
    rule = {
        "op": "and",
        "conditions": [
            *SHANGHAI["conditions"],
            {"field": "consent.status", "channel": "sms", "operator": "opted_in"},
            {
                "field": "orders.total_spend",
                "operator": "gte",
                "value": 100,
                "window": {"kind": "last_days", "days": 30},
            },
        ],
    }
    assert list(segment_preview(rule=rule, now=NOW)["sample"][0].values())[0] == buyer.pk
    assert segment_count(rule=rule, now=NOW) == 1


def test_a_preview_that_runs_too_long_is_cut_off_with_a_message(staff_client, customers, monkeypatch):
    from crm.segments import selectors

    def slow(**kwargs):
        return Customer.objects.extra(where=["pg_sleep(0.5) IS NOT NULL"])

    monkeypatch.setattr(selectors, "PREVIEW_STATEMENT_TIMEOUT_MS", 100)
    monkeypatch.setattr(selectors, "segment_customers", slow)
    response = staff_client.post(
        reverse("admin:crm_segment_preview"), {"rule": SHANGHAI}, content_type="application/json"
    )
    assert response.status_code == 200
    assert response.json()["count"] is None
    assert "took longer than 0.1 seconds" in response.json()["warning"]
    assert Customer.objects.count() == 16  # the connection is usable again afterwards
