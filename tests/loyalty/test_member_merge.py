"""When crm merges two customers, the one-per-customer member rows (login, referral code, being referred)
fold into the survivor instead of breaking the merge on a unique constraint."""

import pytest

from crm.services import customers as crm_customers
from crm.services.customers import customer_merge
from loyalty.models.rewards import MemberLogin, Referral, ReferralCode
from loyalty.services.members import member_erase, members_merge, referral_code_for, referral_record
from tests.factories import CustomerFactory
from tests.loyalty.test_member_support import (
    member_make,
    member_test_setup,  # noqa: F401
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def merge_handler(monkeypatch):
    """Registered the way loyalty's AppConfig.ready should (see the report): crm calls it by label."""
    monkeypatch.setitem(crm_customers._merge_handlers, "loyalty.members", members_merge)


def test_merging_two_members_keeps_the_survivors_login_and_code(merge_handler):
    survivor, merged = member_make(), member_make()
    survivor_code = referral_code_for(customer=survivor.customer).code
    referral_code_for(customer=merged.customer)

    customer_merge(survivor=survivor.customer, merged=merged.customer)

    assert list(MemberLogin.objects.values_list("email", flat=True)) == [survivor.email]
    assert list(ReferralCode.objects.values_list("code", flat=True)) == [survivor_code]


def test_a_login_of_the_merged_customer_moves_to_a_survivor_without_one(merge_handler):
    survivor = CustomerFactory()
    merged = member_make()

    customer_merge(survivor=survivor, merged=merged.customer)

    assert MemberLogin.objects.get(email=merged.email).customer_id == survivor.pk


def test_a_referral_between_the_two_merged_customers_is_dropped(merge_handler):
    referrer = member_make()
    referee = CustomerFactory()
    referral_record(referee=referee, code=referral_code_for(customer=referrer.customer).code)
    assert Referral.objects.count() == 1

    customer_merge(survivor=referrer.customer, merged=referee)

    assert Referral.objects.count() == 0


def test_erasing_a_member_removes_their_credentials():
    login = member_make()

    assert member_erase(customer=login.customer)["loyalty.MemberLogin"] == 1
    assert not MemberLogin.objects.exists()
