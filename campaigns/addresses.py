"""Where a message goes on each channel, and whether it can go there.

A customer's address on a channel comes from (`addresses_for`):

- email: `Customer.email`, else their most recent `email` identity;
- sms: `Customer.phone`, else their most recent `phone` identity;
- wechat: their most recent `wechat_openid` identity (an openid belongs to one official account; the
  brand has one);
- push: their most recent `push_token` identity (the app re-registers a token when it changes; the last one
  is the one that works).

Addresses are checked and normalised here (`address_normalise`), so that the suppression list, the
providers and the 360 panel all see one spelling of an address: an email with its domain in lower case
(the local part is the mail server's business: RFC 5321 lets it be case-sensitive), a phone number in
E.164, read as a Chinese number unless it says otherwise (`+44 …`, `0044 …`), and for SMS only a mobile
number (a landline cannot receive one; phonenumbers knows the numbering plans, so a new +86 mobile prefix
arrives with a library update, not a code change).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import phonenumbers
from django.core.exceptions import ValidationError
from django.core.validators import EmailValidator
from django.db.models import Case, CharField, F, OuterRef, Subquery, When
from django.utils.translation import gettext_lazy as _

from campaigns.models import Channel
from crm.models import Customer, CustomerIdentity

DEFAULT_PHONE_REGION = "CN"  # +86: a number written without a country code is a Chinese one

# Identity kinds addresses are read from (crm.models.CustomerIdentity.kind).
EMAIL_IDENTITY = "email"
PHONE_IDENTITY = "phone"
WECHAT_OPENID_IDENTITY = "wechat_openid"
PUSH_TOKEN_IDENTITY = "push_token"

# An official account's openid is 28 URL-safe base64 characters (o6_bmjrPTlm6_2sgVt7hMZOPfL2M); WeChat does
# not promise the length, so any run of those characters of a plausible length passes. The check is there
# to catch a phone number or a unionid stored in the wrong column, not to second-guess WeChat.
_OPENID_RE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
# APNs device tokens are 64 hex digits, FCM registration tokens ~150 characters of [A-Za-z0-9_:-], JPush
# and the Chinese vendor channels shorter ids: one printable token without spaces, no longer than the
# outbox's address column.
_PUSH_TOKEN_RE = re.compile(r"^[A-Za-z0-9_:.\-]{8,254}$")

_email_validator = EmailValidator()
_MOBILE_TYPES = frozenset(
    {phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE}
)


class InvalidAddress(ValueError):
    """The address cannot receive the channel's messages. `problem` is a code a reason can carry
    (`invalid_email`, `invalid_phone`, `not_mobile`, `invalid_openid`, `invalid_push_token`); str() is
    the sentence for a person."""

    def __init__(self, problem: str, message: str) -> None:
        super().__init__(message)
        self.problem = problem


def email_normalise(raw: str) -> str:
    value = (raw or "").strip()
    try:
        _email_validator(value)
    except ValidationError:
        raise InvalidAddress("invalid_email", str(_("%(value)s is not an email address.") % {"value": value}))
    local, _at, domain = value.rpartition("@")
    return f"{local}@{domain.lower()}"


def _cn_mobile_patterns():
    """The +86 numbering plan's own patterns (phonenumbers' metadata, so they follow library updates): a
    number is a mobile when it matches the plan and the mobile pattern and none of the types phonenumbers
    tries before mobile (premium, toll-free, shared cost, ...)."""
    metadata = phonenumbers.PhoneMetadata.metadata_for_region("CN")

    def compiled(desc):
        if desc is None or not desc.national_number_pattern:
            return None
        return re.compile(f"(?:{desc.national_number_pattern})")

    before_mobile = [
        compiled(getattr(metadata, name))
        for name in (
            "premium_rate",
            "toll_free",
            "shared_cost",
            "voip",
            "personal_number",
            "pager",
            "uan",
            "voicemail",
        )
    ]
    return compiled(metadata.general_desc), compiled(metadata.mobile), [p for p in before_mobile if p]


_CN_GENERAL, _CN_MOBILE, _CN_BEFORE_MOBILE = _cn_mobile_patterns()
_SEPARATORS = re.compile(r"[\s\-().]")
_CN_MOBILE_SHAPE = re.compile(r"(?:\+86|0086|86)?(1\d{10})")


def _cn_mobile_fast(value: str) -> str | None:
    """E.164 for a +86 mobile written the usual ways (13812345678, +86 138-1234-5678), without
    phonenumbers' general parser, which costs a large part of a batch screen (see BENCHMARKS.md, delivery
    rules screen); None sends the number down the general path. tests/campaigns/test_addresses.py checks
    that both paths agree."""
    match = _CN_MOBILE_SHAPE.fullmatch(_SEPARATORS.sub("", value))
    if match is None:
        return None
    national = match.group(1)
    if not (_CN_GENERAL.fullmatch(national) and _CN_MOBILE.fullmatch(national)):
        return None
    if any(pattern.fullmatch(national) for pattern in _CN_BEFORE_MOBILE):
        return None
    return "+86" + national


def phone_normalise(raw: str, *, mobile_only: bool = False, region: str = DEFAULT_PHONE_REGION) -> str:
    """`raw` in E.164. Without a country code the number is read in `region` (+86)."""
    value = (raw or "").strip()
    if region == "CN" and _CN_MOBILE is not None:
        fast = _cn_mobile_fast(value)
        if fast is not None:
            return fast
    return _phone_normalise_general(value, mobile_only=mobile_only, region=region)


def _phone_normalise_general(value: str, *, mobile_only: bool, region: str) -> str:
    try:
        number = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException:
        number = None
    if number is None or not phonenumbers.is_valid_number(number):
        raise InvalidAddress(
            "invalid_phone", str(_("%(value)s is not a valid phone number.") % {"value": value})
        )
    if mobile_only and phonenumbers.number_type(number) not in _MOBILE_TYPES:
        raise InvalidAddress(
            "not_mobile",
            str(_("%(value)s is not a mobile number: it cannot receive SMS.") % {"value": value}),
        )
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def openid_normalise(raw: str) -> str:
    value = (raw or "").strip()
    if not _OPENID_RE.match(value):
        raise InvalidAddress(
            "invalid_openid", str(_("%(value)s does not look like a WeChat openid.") % {"value": value})
        )
    return value


def push_token_normalise(raw: str) -> str:
    value = (raw or "").strip()
    if not _PUSH_TOKEN_RE.match(value):
        raise InvalidAddress(
            "invalid_push_token", str(_("%(value)s does not look like a push token.") % {"value": value})
        )
    return value


def address_normalise(channel: str, raw: str) -> str:
    """The address in its one spelling for `channel`, or InvalidAddress."""
    if channel == Channel.EMAIL:
        return email_normalise(raw)
    if channel == Channel.SMS:
        return phone_normalise(raw, mobile_only=True)
    if channel == Channel.WECHAT:
        return openid_normalise(raw)
    if channel == Channel.PUSH:
        return push_token_normalise(raw)
    raise ValueError(f"unknown channel {channel!r}")


def address_check(channel: str, raw: str) -> tuple[str, str]:
    """(normalised address, "") or (raw, problem code); never raises for a bad address."""
    try:
        return address_normalise(channel, raw), ""
    except InvalidAddress as exc:
        return raw, exc.problem


def _latest_identity(kind: str) -> Subquery:
    return Subquery(
        CustomerIdentity.objects.filter(customer_id=OuterRef("pk"), kind=kind)
        .order_by("-created_at", "-id")
        .values("value")[:1]
    )


# Per channel: (Customer field or None, identity kind).
_SOURCES: dict[str, tuple[str | None, str]] = {
    Channel.EMAIL: ("email", EMAIL_IDENTITY),
    Channel.SMS: ("phone", PHONE_IDENTITY),
    Channel.WECHAT: (None, WECHAT_OPENID_IDENTITY),
    Channel.PUSH: (None, PUSH_TOKEN_IDENTITY),
}


def address_annotations(channel: str) -> dict:
    """Annotations for a Customer queryset that give each customer's raw address on `channel` as
    `address_<channel>`: one subquery per channel, so one query gives a whole batch its addresses."""
    if channel not in _SOURCES:
        raise ValueError(f"unknown channel {channel!r}")
    field, kind = _SOURCES[channel]
    identity = _latest_identity(kind)
    if field is None:
        return {f"address_{channel}": identity}
    # The profile field wins; the identity is the fallback for a customer whose field is blank.
    return {
        f"address_{channel}": Case(
            When(**{field: ""}, then=identity), default=F(field), output_field=CharField()
        )
    }


def addresses_for(customer_ids: Iterable[int], channel: str) -> dict[int, str]:
    """{customer id: raw address on `channel`} for the customers that have one, in one query. Raw: as
    stored, not yet checked (`address_check`), so that a caller can tell "no address" from "a bad one"."""
    ids = list(set(customer_ids))
    if not ids:
        return {}
    key = f"address_{channel}"
    rows = Customer.objects.filter(pk__in=ids).annotate(**address_annotations(channel)).values_list("pk", key)
    return {pk: value for pk, value in rows if value}


def valid_addresses_for(customer_ids: Iterable[int], channel: str) -> dict[int, str]:
    """{customer id: normalised address} for the customers whose address on `channel` is valid."""
    found = {}
    for pk, raw in addresses_for(customer_ids, channel).items():
        address, problem = address_check(channel, raw)
        if not problem:
            found[pk] = address
    return found
