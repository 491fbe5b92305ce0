from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from crm.models import (
    Consent,
    ConsentChange,
    Customer,
    CustomerIdentity,
    CustomerMerge,
    CustomerTag,
    Event,
    Order,
    Tag,
)
from crm.services.consent import consent_set
from crm.services.customers import customer_merge, customer_upsert
from tests.factories import CustomerFactory, EventFactory, OrderFactory

pytestmark = pytest.mark.django_db


def test_upsert_creates_customer_with_every_identifier_it_carries():
    result = customer_upsert(
        external_id="C-1",
        profile={"name": "王芳 Wang Fang", "email": " Wang.Fang@Example.CN ", "phone": "138 0013 8000"},
        identities=[("wechat_openid", "oWX-123")],
        source="test",
    )
    assert result.created
    customer = result.customer
    assert customer.email == "wang.fang@example.cn"
    assert customer.phone == "+8613800138000"
    assert customer.time_zone == "Asia/Shanghai"
    assert set(customer.identities.values_list("kind", "value")) == {
        ("external_id", "C-1"),
        ("email", "wang.fang@example.cn"),
        ("phone", "+8613800138000"),
        ("wechat_openid", "oWX-123"),
    }


def test_upsert_finds_customer_by_any_identifier_written_differently():
    first = customer_upsert(profile={"phone": "+86 138-0013-8000"}).customer
    again = customer_upsert(profile={"phone": "008613800138000", "city": "上海"})
    assert not again.created
    assert again.customer.pk == first.pk
    assert again.changed_fields == ["city"]
    assert Customer.objects.count() == 1


def test_identifiers_of_two_customers_merge_them_into_the_older_one():
    older = customer_upsert(profile={"email": "li.na@example.cn", "name": "李娜"}).customer
    newer = customer_upsert(identities=[("wechat_openid", "oLN-9")], profile={"city": "杭州"}).customer
    OrderFactory(customer=newer, total=Decimal("88.00"))
    EventFactory(customer=newer, type="add_to_cart")
    consent_set(customer=newer, channel="sms", status="opted_in", source="wechat form")
    tag = Tag.objects.create(name="母婴")
    CustomerTag.objects.create(customer=newer, tag=tag)
    CustomerTag.objects.create(customer=older, tag=tag)

    result = customer_upsert(profile={"email": "li.na@example.cn"}, identities=[("wechat_openid", "oLN-9")])

    assert result.customer.pk == older.pk
    assert result.merged_customer_ids == [newer.pk]
    assert not Customer.objects.filter(pk=newer.pk).exists()
    assert Order.objects.get().customer_id == older.pk
    assert Event.objects.get().customer_id == older.pk
    assert Consent.objects.get(channel="sms").customer_id == older.pk
    assert ConsentChange.objects.filter(customer=older).count() == 1
    assert CustomerTag.objects.filter(customer=older).count() == 1
    assert CustomerIdentity.objects.filter(customer=older, kind="wechat_openid").exists()
    older.refresh_from_db()
    assert older.city == "杭州"  # blank field filled from the merged customer
    merge = CustomerMerge.objects.get()
    assert merge.merged_customer_id == newer.pk
    assert merge.merged_snapshot["city"] == "杭州"
    assert merge.moved["crm.Order"] == 1


def test_merge_keeps_the_most_recent_consent_decision_per_channel():
    survivor, merged = CustomerFactory(), CustomerFactory()
    now = timezone.now()
    consent_set(customer=survivor, channel="email", status="opted_in", occurred_at=now - timedelta(days=10))
    consent_set(customer=merged, channel="email", status="opted_out", occurred_at=now - timedelta(days=1))
    customer_merge(survivor=survivor, merged=merged)
    assert Consent.objects.get(customer=survivor, channel="email").status == "opted_out"
    assert ConsentChange.objects.filter(customer=survivor, channel="email").count() == 2


def test_merge_into_itself_is_refused():
    customer = CustomerFactory()
    with pytest.raises(ValueError):
        customer_merge(survivor=customer, merged=customer)


def test_upsert_refuses_a_bad_identifier_kind_and_writes_nothing():
    with pytest.raises(ValidationError):
        customer_upsert(profile={"name": "x"}, identities=[("Not A Kind!", "v")])
    assert Customer.objects.count() == 0


def test_upsert_refuses_an_unknown_time_zone():
    with pytest.raises(ValidationError):
        customer_upsert(external_id="tz", profile={"time_zone": "Mars/Olympus"})
    assert Customer.objects.count() == 0


def test_consent_history_keeps_every_decision_and_late_arrivals_do_not_win():
    customer = CustomerFactory()
    now = timezone.now()
    consent_set(customer=customer, channel="wechat", status="opted_in", occurred_at=now - timedelta(days=3))
    consent_set(customer=customer, channel="wechat", status="opted_out", occurred_at=now - timedelta(days=1))
    # A delayed import of an older opt-in is history, not the current state.
    consent_set(customer=customer, channel="wechat", status="opted_in", occurred_at=now - timedelta(days=2))
    assert Consent.objects.get(customer=customer, channel="wechat").status == "opted_out"
    assert list(
        ConsentChange.objects.filter(customer=customer)
        .order_by("occurred_at")
        .values_list("status", flat=True)
    ) == ["opted_in", "opted_in", "opted_out"]


def test_repeating_the_current_consent_records_nothing_new():
    customer = CustomerFactory()
    when = timezone.now()
    consent_set(customer=customer, channel="sms", status="opted_in", occurred_at=when)
    consent_set(customer=customer, channel="sms", status="opted_in", occurred_at=when)
    assert ConsentChange.objects.filter(customer=customer).count() == 1


def test_merge_moves_rows_of_hidden_relations_and_drops_only_true_duplicates():
    from crm.models.segments import StaticList, StaticListMember

    survivor, merged = CustomerFactory(), CustomerFactory()
    both = StaticList.objects.create(name="VIP 双11")
    only_merged = StaticList.objects.create(name="孕妈 2026")
    StaticListMember.objects.create(static_list=both, customer=survivor)
    StaticListMember.objects.create(static_list=both, customer=merged)
    StaticListMember.objects.create(static_list=only_merged, customer=merged)

    customer_merge(survivor=survivor, merged=merged)

    assert sorted(StaticListMember.objects.values_list("static_list__name", "customer_id")) == sorted(
        [("VIP 双11", survivor.pk), ("孕妈 2026", survivor.pk)]
    )


def test_erased_customers_cannot_be_merged():
    from crm.services.customers import MergeRefused

    survivor, merged = CustomerFactory(), CustomerFactory(erased_at=timezone.now())
    with pytest.raises(MergeRefused):
        customer_merge(survivor=survivor, merged=merged)
