"""Addresses per channel: checked and written one way (E.164 phones, lower-case email domains), found for a
whole batch of customers in one query."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from campaigns.addresses import (
    InvalidAddress,
    address_check,
    address_normalise,
    addresses_for,
    email_normalise,
    phone_normalise,
    valid_addresses_for,
)
from crm.models import CustomerIdentity
from tests.factories import CustomerFactory


@pytest.mark.parametrize(
    "raw",
    [
        "13812345678",
        "138 1234 5678",
        "138-1234-5678",
        "+86 138 1234 5678",
        "0086 13812345678",
        "8613812345678",
    ],
)
def test_chinese_mobiles_written_any_way_come_out_in_e164(raw):
    assert address_normalise("sms", raw) == "+8613812345678"


@pytest.mark.parametrize(
    "raw, e164",
    [
        ("+44 7911 123456", "+447911123456"),  # a UK mobile
        ("+852 6123 4567", "+85261234567"),  # a Hong Kong mobile
        ("+1 650 253 0000", "+16502530000"),  # North America: mobiles and landlines share the plan
        ("0044 7911 123456", "+447911123456"),  # China's international prefix
    ],
)
def test_international_mobiles_are_accepted_for_sms(raw, e164):
    assert address_normalise("sms", raw) == e164


@pytest.mark.parametrize("raw", ["010-12345678", "021 1234 5678", "+86 10 1234 5678", "+44 20 7946 0958"])
def test_landlines_are_phone_numbers_but_cannot_receive_sms(raw):
    assert phone_normalise(raw).startswith("+")  # a valid number...
    with pytest.raises(InvalidAddress) as caught:
        address_normalise("sms", raw)  # ...but not a mobile
    assert caught.value.problem == "not_mobile"
    assert raw in str(caught.value)


@pytest.mark.parametrize(
    "raw", ["12345", "+86 138 1234 567", "1381234567890", "not a phone", "", "+999 1234"]
)
def test_numbers_that_are_not_numbers_are_refused(raw):
    assert address_check("sms", raw) == (raw, "invalid_phone")


def test_email_domain_is_lower_cased_and_the_local_part_kept():
    assert email_normalise("  Wang.Fang@Example.COM ") == "Wang.Fang@example.com"
    assert address_check("email", "wang@例子.中国")[1] == ""  # an internationalised domain is a domain
    for raw in ["wang.fang", "wang@", "@example.com", "a b@example.com"]:
        assert address_check("email", raw) == (raw, "invalid_email")


def test_openids_and_push_tokens_are_checked_for_their_shape():
    assert address_normalise("wechat", " o6_bmjrPTlm6_2sgVt7hMZOPfL2M ") == "o6_bmjrPTlm6_2sgVt7hMZOPfL2M"
    assert address_check("wechat", "+8613812345678")[1] == "invalid_openid"
    assert address_check("wechat", "o6_bmjr PTlm6")[1] == "invalid_openid"
    apns = "a" * 64
    fcm = "dGVzdA:APA91bH" + "x" * 140
    assert address_normalise("push", apns) == apns
    assert address_normalise("push", fcm) == fcm
    assert address_check("push", "token with spaces")[1] == "invalid_push_token"
    assert address_check("push", "x" * 255)[1] == "invalid_push_token"  # longer than the outbox column


def test_an_unknown_channel_is_a_programming_error():
    with pytest.raises(ValueError, match="fax"):
        address_normalise("fax", "1")


@pytest.mark.django_db
def test_addresses_for_a_batch_come_from_profile_then_identities_in_one_query(django_assert_num_queries):
    profile = CustomerFactory(email="Li.Na@Example.cn", phone="138 0000 0001")
    fallback = CustomerFactory(email="", phone="")
    bare = CustomerFactory(email="", phone="")
    CustomerIdentity.objects.create(customer=fallback, kind="email", value="li.na@example.com")
    CustomerIdentity.objects.create(customer=fallback, kind="phone", value="+8613800000002")
    CustomerIdentity.objects.create(customer=profile, kind="email", value="older@example.com")
    CustomerIdentity.objects.create(customer=fallback, kind="wechat_openid", value="o" + "A" * 27)
    CustomerIdentity.objects.create(customer=fallback, kind="wechat_openid", value="o" + "B" * 27)  # newer
    CustomerIdentity.objects.create(customer=profile, kind="push_token", value="f" * 64)
    ids = [profile.pk, fallback.pk, bare.pk]

    with django_assert_num_queries(1):
        emails = addresses_for(ids, "email")
    assert emails == {profile.pk: "Li.Na@Example.cn", fallback.pk: "li.na@example.com"}
    assert addresses_for(ids, "sms") == {profile.pk: "138 0000 0001", fallback.pk: "+8613800000002"}
    assert addresses_for(ids, "wechat") == {fallback.pk: "o" + "B" * 27}
    assert addresses_for(ids, "push") == {profile.pk: "f" * 64}
    assert valid_addresses_for(ids, "sms") == {profile.pk: "+8613800000001", fallback.pk: "+8613800000002"}
    assert addresses_for([], "sms") == {}


@given(
    prefix=st.sampled_from(["", "+86", "0086", "86", "+86 ", "+86-"]),
    digits=st.from_regex(r"1[0-9]{10}", fullmatch=True),
    spaced=st.booleans(),
)
def test_the_fast_path_for_chinese_mobiles_agrees_with_phonenumbers(prefix, digits, spaced):
    from campaigns.addresses import _cn_mobile_fast, _phone_normalise_general

    raw = prefix + (f"{digits[:3]} {digits[3:7]} {digits[7:]}" if spaced else digits)
    try:
        general = _phone_normalise_general(raw, mobile_only=True, region="CN")
    except InvalidAddress:
        general = None
    fast = _cn_mobile_fast(raw)
    # The fast path may pass a number on to the general one (None), never answer differently.
    assert fast is None or fast == general
    if general is not None and not prefix.startswith("86"):
        assert fast == general  # and it does answer for the usual spellings of a valid mobile
