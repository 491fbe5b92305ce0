"""The eligibility screen: consent, addresses, the suppression list, frequency caps and priority, quiet hours
and expiry, for a whole batch at once, with time frozen at instants each test names."""

from datetime import time, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from campaigns.models import Suppression
from campaigns.reasons import reason_text
from campaigns.services.rules import DEFER, SEND, SUPPRESS, Decision, messages_screen
from crm.models import Consent, Customer, CustomerIdentity
from tests.campaigns.rules.helpers import customer, message, quiet_hours, sent, utc

pytestmark = pytest.mark.django_db

JOURNEY = "生命周期旅程：新客关怀"


def screen(messages, now):
    decisions = messages_screen(messages=messages, now=now)
    assert [d.message_id for d in decisions] == [m.id for m in messages]
    return {d.message_id: d for d in decisions}


# ---- caps and priority ---------------------------------------------------------------------------------


@pytest.mark.parametrize("on_cap", ["defer", "drop"])
def test_double_11_outranks_a_lifecycle_journey_for_the_last_slot_of_the_day(template, caps, frozen, on_cap):
    # Given 2 marketing messages a day across channels, and one already sent this morning (Shanghai),
    caps(("", "day", 2), ("", "week", 5))
    now = frozen(utc(2026, 11, 11, 2, 0))  # 10:00 in Shanghai
    wang = customer()
    sent(template, wang, utc(2026, 11, 11, 1, 0), channel="email")
    # when the 双11 campaign (priority 10) and a journey step (priority 5) are both due now, the journey first
    journey = message(
        template, wang, due_at=now - timedelta(hours=1), priority=5, source_kind="journey", label=JOURNEY,
        on_cap=on_cap,
    )  # fmt: skip
    promo = message(template, wang, due_at=now, priority=10, label="双11大促")
    decided = screen([journey, promo], now)

    # then the campaign takes the slot and the journey names it as the winner,
    assert decided[promo.id] == Decision(promo.id, SEND, address=wang.phone)
    lost = decided[journey.id]
    assert lost.reason == "lower_priority"
    assert lost.params["than"] == "双11大促"
    assert reason_text(lost.reason, lost.params) == "lower priority than 双11大促"
    if on_cap == "defer":
        # deferred to the next free slot: tomorrow's first minute after quiet hours, 08:00 in Shanghai.
        assert (lost.action, lost.until) == (DEFER, utc(2026, 11, 12, 0, 0))
        assert lost.params["until"] == "2026-11-12 08:00"
    else:
        assert (lost.action, lost.until) == (SUPPRESS, None)


def test_with_room_for_both_colliding_sources_both_go(template, caps, frozen):
    caps(("", "day", 2))
    now = frozen(utc(2026, 11, 11, 2, 0))
    wang = customer()
    journey = message(template, wang, due_at=now, priority=5, source_kind="journey", label=JOURNEY)
    promo = message(template, wang, due_at=now, priority=10)
    assert {d.action for d in screen([journey, promo], now).values()} == {SEND}


def test_a_cap_filled_by_earlier_sends_of_every_source_and_channel_defers_or_drops(template, caps, frozen):
    caps(("", "day", 2))
    now = frozen(utc(2026, 12, 7, 6, 0))  # 14:00 in Shanghai
    wang, li = customer(), customer()
    for person in (wang, li):
        sent(template, person, utc(2026, 12, 7, 1, 0), channel="email", label="journey step")
        sent(template, person, utc(2026, 12, 7, 2, 0), channel="wechat", label="win-back")
        sent(template, person, utc(2026, 12, 7, 3, 0), purpose="transactional")  # does not count
    later = message(template, wang, due_at=now)
    dropped = message(template, li, due_at=now, on_cap="drop")
    decided = screen([later, dropped], now)

    assert decided[later.id].action == DEFER
    assert decided[later.id].until == utc(2026, 12, 8, 0, 0)  # 08:00 tomorrow in Shanghai
    assert decided[later.id].reason == "capped_all_deferred"
    assert reason_text("capped_all_deferred", decided[later.id].params) == (
        "capped: 2 marketing messages today, deferred to 2026-12-08 08:00"
    )
    assert (decided[dropped.id].action, decided[dropped.id].reason) == (SUPPRESS, "capped_all")


def test_a_channel_cap_holds_that_channel_only(template, caps, frozen):
    caps(("sms", "day", 1), ("", "day", 3))
    now = frozen(utc(2026, 12, 7, 6, 0))
    wang = customer()
    sent(template, wang, utc(2026, 12, 7, 1, 0), channel="sms")
    sms = message(template, wang, due_at=now, on_cap="drop")
    email = message(template, wang, due_at=now, channel="email")
    decided = screen([sms, email], now)
    assert (decided[sms.id].action, decided[sms.id].reason) == (SUPPRESS, "capped")
    assert reason_text("capped", decided[sms.id].params) == "capped: 1 marketing SMS today"
    assert decided[email.id].action == SEND


def test_the_batch_counts_what_it_lets_through_highest_priority_first(template, caps, frozen):
    caps(("", "day", 2))
    now = frozen(utc(2026, 12, 7, 6, 0))
    wang = customer()
    low = message(template, wang, due_at=now, priority=1, label="低")
    high = message(template, wang, due_at=now, priority=9, label="高", channel="email")
    mid = message(template, wang, due_at=now, priority=5, label="中", channel="email")
    decided = screen([low, high, mid], now)
    assert [decided[m.id].action for m in (high, mid, low)] == [SEND, SEND, DEFER]
    assert decided[low.id].params["than"] == "高"  # the best of those that took the slots


def test_equal_priorities_share_the_cap_by_due_time_and_the_loser_is_capped(template, caps, frozen):
    caps(("", "day", 1))
    now = frozen(utc(2026, 12, 7, 6, 0))
    wang = customer()
    second = message(template, wang, due_at=now - timedelta(minutes=5))
    first = message(template, wang, due_at=now - timedelta(minutes=10))
    decided = screen([second, first], now)
    assert decided[first.id].action == SEND
    assert (decided[second.id].action, decided[second.id].reason) == (DEFER, "capped_all_deferred")


def test_a_full_week_defers_to_local_monday_and_the_week_starts_at_local_midnight(template, caps, frozen):
    caps(("", "day", 2), ("", "week", 5))
    now = frozen(utc(2026, 12, 10, 4, 0))  # Thursday 12:00 in Shanghai
    wang, li = customer(), customer()
    # Monday 07:30 in Shanghai is still Sunday in UTC: it counts for this (local) week.
    this_week = [
        utc(2026, 12, 6, 23, 30),
        utc(2026, 12, 7, 3, 0),
        utc(2026, 12, 8, 3, 0),
        utc(2026, 12, 8, 5, 0),
    ]
    for at in [*this_week, utc(2026, 12, 9, 3, 0)]:
        sent(template, wang, at)
    # Sunday 23:30 in Shanghai is last week.
    for at in [utc(2026, 12, 6, 15, 30), *this_week]:
        sent(template, li, at)
    capped = message(template, wang, due_at=now)
    room = message(template, li, due_at=now)
    decided = screen([capped, room], now)
    assert decided[capped.id].until == utc(2026, 12, 14, 0, 0)  # Monday 08:00 in Shanghai
    assert decided[capped.id].params == {
        "limit": 5, "period": "week", "until": "2026-12-14 08:00"
    }  # fmt: skip
    assert decided[room.id].action == SEND


def test_a_month_cap_counts_from_the_first(template, caps, frozen):
    caps(("", "month", 2))
    now = frozen(utc(2026, 12, 20, 4, 0))
    wang = customer()
    sent(template, wang, utc(2026, 11, 30, 17, 0))  # December 1st, 01:00 in Shanghai
    sent(template, wang, utc(2026, 12, 10, 4, 0))
    decided = screen([message(template, wang, due_at=now)], now)
    (decision,) = decided.values()
    assert decision.until == utc(2027, 1, 1, 0, 0)  # January 1st, 08:00 in Shanghai


def test_the_day_is_the_customers_own_in_los_angeles(template, caps, frozen):
    caps(("", "day", 2))
    now = frozen(utc(2026, 12, 7, 20, 0))  # 12:00 on the 7th in Los Angeles
    ana = customer(tz="America/Los_Angeles")
    sent(template, ana, utc(2026, 12, 7, 2, 0))  # the 6th, 18:00 in LA (the 7th in UTC): yesterday
    sent(template, ana, utc(2026, 12, 7, 17, 0))  # 09:00 today
    assert screen([message(template, ana, due_at=now)], now).popitem()[1].action == SEND
    sent(template, ana, utc(2026, 12, 7, 19, 0))
    decision = screen([message(template, ana, due_at=now)], now).popitem()[1]
    assert decision.until == utc(2026, 12, 8, 16, 0)  # 08:00 on the 8th in LA (PST, UTC-8)


def test_a_cap_deferral_over_the_spring_forward_night_lands_on_8_local(template, caps, frozen):
    caps(("", "day", 1))
    now = frozen(utc(2026, 3, 7, 20, 0))  # Saturday 12:00 PST; clocks go forward on Sunday 02:00
    ana = customer(tz="America/Los_Angeles")
    sent(template, ana, utc(2026, 3, 7, 18, 0))
    decision = screen([message(template, ana, due_at=now)], now).popitem()[1]
    assert decision.until == utc(2026, 3, 8, 15, 0)  # 08:00 PDT (UTC-7), not 16:00
    assert decision.params["until"] == "2026-03-08 08:00"


# ---- quiet hours -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "now, until",
    [
        (utc(2026, 12, 7, 14, 0), utc(2026, 12, 8, 0, 0)),  # 22:00 -> 08:00 tomorrow
        (utc(2026, 12, 7, 13, 0), utc(2026, 12, 8, 0, 0)),  # 21:00 sharp is quiet
        (utc(2026, 12, 7, 23, 59), utc(2026, 12, 8, 0, 0)),  # 07:59 -> 08:00 the same morning
        (utc(2026, 12, 8, 0, 0), None),  # 08:00 sharp: allowed
        (utc(2026, 12, 7, 12, 59), None),  # 20:59: allowed
    ],
)
def test_quiet_hours_in_shanghai_cross_midnight(template, caps, frozen, now, until):
    caps()
    frozen(now)
    wang = customer()
    decision = screen([message(template, wang, due_at=now)], now).popitem()[1]
    if until is None:
        assert decision.action == SEND
    else:
        assert (decision.action, decision.reason, decision.until) == (DEFER, "quiet_hours", until)
        assert decision.params["time_zone"] == "Asia/Shanghai"
        assert decision.params["until"] == until.astimezone(decision_zone("Asia/Shanghai")).strftime(
            "%Y-%m-%d %H:%M"
        )


def decision_zone(name):
    import zoneinfo

    return zoneinfo.ZoneInfo(name)


@pytest.mark.parametrize(
    "now, until, local_until",
    [
        # Spring forward, Sunday 2026-03-08 02:00 PST -> 03:00 PDT: the night is an hour shorter.
        (utc(2026, 3, 8, 6, 0), utc(2026, 3, 8, 15, 0), "2026-03-08 08:00"),  # Sat 22:00 PST
        (utc(2026, 3, 8, 9, 30), utc(2026, 3, 8, 15, 0), "2026-03-08 08:00"),  # 01:30 PST
        (utc(2026, 3, 8, 10, 30), utc(2026, 3, 8, 15, 0), "2026-03-08 08:00"),  # 03:30 PDT
        (utc(2026, 3, 7, 6, 0), utc(2026, 3, 7, 16, 0), "2026-03-07 08:00"),  # the night before: PST
        # Fall back, Sunday 2026-11-01 02:00 PDT -> 01:00 PST: an hour longer, 01:00-02:00 twice.
        (utc(2026, 11, 1, 5, 0), utc(2026, 11, 1, 16, 0), "2026-11-01 08:00"),  # Sat 22:00 PDT
        (utc(2026, 11, 1, 8, 30), utc(2026, 11, 1, 16, 0), "2026-11-01 08:00"),  # 01:30 PDT
        (utc(2026, 11, 1, 9, 30), utc(2026, 11, 1, 16, 0), "2026-11-01 08:00"),  # 01:30 PST, again
        (utc(2026, 11, 2, 5, 30), utc(2026, 11, 2, 16, 0), "2026-11-02 08:00"),  # Sun 21:30 PST
        (utc(2026, 11, 1, 15, 0), utc(2026, 11, 1, 16, 0), "2026-11-01 08:00"),  # 07:00 PST
    ],
)
def test_quiet_hours_in_los_angeles_across_the_dst_changes(template, caps, frozen, now, until, local_until):
    caps()
    frozen(now)
    ana = customer(tz="America/Los_Angeles")
    decision = screen([message(template, ana, due_at=now)], now).popitem()[1]
    assert (decision.action, decision.until, decision.params["until"]) == (DEFER, until, local_until)
    assert reason_text(decision.reason, decision.params) == f"quiet hours, deferred to {local_until}"


@pytest.mark.parametrize(
    "start, end, now, until",
    [
        (time(22, 0), time(6, 30), utc(2026, 12, 7, 15, 0), utc(2026, 12, 7, 22, 30)),  # 23:00 -> 06:30
        (time(22, 0), time(6, 30), utc(2026, 12, 7, 22, 0), utc(2026, 12, 7, 22, 30)),  # 06:00 -> 06:30
        (time(22, 0), time(6, 30), utc(2026, 12, 7, 13, 30), None),  # 21:30: not yet
        (time(12, 0), time(14, 0), utc(2026, 12, 7, 5, 0), utc(2026, 12, 7, 6, 0)),  # a lunch-time window
        (time(12, 0), time(14, 0), utc(2026, 12, 7, 3, 59), None),  # 11:59
        (time(12, 0), time(14, 0), utc(2026, 12, 7, 6, 0), None),  # 14:00
        (None, None, utc(2026, 12, 7, 15, 0), None),  # start == end: no quiet hours at all
    ],
)
def test_quiet_windows_as_staff_set_them(template, caps, frozen, start, end, now, until):
    caps()
    quiet_hours(start, end)
    frozen(now)
    decision = screen([message(template, customer(), due_at=now)], now).popitem()[1]
    assert decision.until == until
    assert decision.action == (SEND if until is None else DEFER)


def test_a_quiet_end_the_spring_forward_skips_is_the_moment_clocks_jump(template, caps, frozen):
    caps()
    quiet_hours(time(21, 0), time(2, 30))
    now = frozen(utc(2026, 3, 8, 7, 0))  # Saturday 23:00 PST; 02:30 on Sunday never happens
    decision = screen([message(template, customer(tz="America/Los_Angeles"), due_at=now)], now).popitem()[1]
    assert decision.until == utc(2026, 3, 8, 10, 0)  # 03:00 PDT


def test_quiet_hours_hold_only_for_the_channels_they_name(template, caps, frozen):
    caps()
    quiet_hours(time(21, 0), time(8, 0), channels=["sms"])
    now = frozen(utc(2026, 12, 7, 14, 0))  # 22:00 in Shanghai
    wang = customer()
    sms = message(template, wang, due_at=now)
    email = message(template, wang, due_at=now, channel="email")
    decided = screen([sms, email], now)
    assert (decided[sms.id].action, decided[email.id].action) == (DEFER, SEND)


# ---- transactional and test sends ------------------------------------------------------------------------


def test_transactional_messages_bypass_caps_and_quiet_hours_but_never_consent(template, caps, frozen):
    caps(("", "day", 1))
    now = frozen(utc(2026, 12, 7, 15, 0))  # 23:00 in Shanghai
    wang = customer()
    no_sms = customer(consents=("email",))
    sent(template, wang, utc(2026, 12, 7, 2, 0))
    shipped = message(template, wang, due_at=now, purpose="transactional", label="order shipped")
    refused = message(template, no_sms, due_at=now, purpose="transactional", label="order shipped")
    Suppression.objects.create(channel="email", address=no_sms.email, reason="bounced")
    bounced = message(template, no_sms, due_at=now, channel="email", purpose="transactional")
    decided = screen([shipped, refused, bounced], now)
    assert decided[shipped.id] == Decision(shipped.id, SEND, address=wang.phone)
    assert (decided[refused.id].action, decided[refused.id].reason) == (SUPPRESS, "no_consent")
    assert (decided[bounced.id].action, decided[bounced.id].reason) == (SUPPRESS, "suppressed_address")


def test_transactional_sends_do_not_use_up_the_marketing_cap(template, caps, frozen):
    caps(("", "day", 1))
    now = frozen(utc(2026, 12, 7, 6, 0))
    wang = customer()
    sent(template, wang, utc(2026, 12, 7, 1, 0), purpose="transactional")
    sent(template, wang, utc(2026, 12, 7, 2, 0), purpose="transactional")
    assert screen([message(template, wang, due_at=now)], now).popitem()[1].action == SEND


def test_a_test_send_is_only_checked_for_its_address(template, caps, frozen):
    caps(("", "day", 1))
    now = frozen(utc(2026, 12, 7, 15, 0))  # quiet hours
    nobody = customer(consents=(), erased_at=utc(2026, 1, 1))
    sent(template, nobody, utc(2026, 12, 7, 2, 0))
    Suppression.objects.create(channel="sms", address="+8613900000000", reason="manual")
    ok = message(template, nobody, due_at=now, purpose="test", address="139 0000 0000")
    landline = message(template, nobody, due_at=now, purpose="test", address="010-12345678")
    decided = screen([ok, landline], now)
    assert decided[ok.id] == Decision(ok.id, SEND, address="+8613900000000")
    assert (decided[landline.id].action, decided[landline.id].reason) == (SUPPRESS, "invalid_address")


# ---- consent, addresses, suppression, expiry ---------------------------------------------------------------


def test_consent_addresses_and_the_suppression_list(template, caps, frozen):
    caps()
    now = frozen(utc(2026, 12, 7, 6, 0))
    no_row = customer(consents=())
    opted_out = customer()
    Consent.objects.filter(customer=opted_out, channel="sms").update(status="opted_out")
    no_phone = customer(phone="")
    landline = customer(phone="010-12345678")
    short = customer(phone="138 1234 567")
    listed = customer(phone="138 0000 1111")
    Suppression.objects.create(channel="sms", address="+8613800001111", reason="bounced")
    email_listed = customer(email="Li.Na@EXAMPLE.cn")
    Suppression.objects.create(channel="email", address="Li.Na@example.cn", reason="complained")
    other_channel = customer(phone="13800002222", email="zhang@example.cn")
    Suppression.objects.create(channel="email", address="zhang@example.cn", reason="bounced")
    international = customer(phone="+44 7911 123456")
    wechat = customer()
    CustomerIdentity.objects.create(
        customer=wechat, kind="wechat_openid", value="o6_bmjrPTlm6_2sgVt7hMZOPfL2M"
    )
    rows = {
        "no_row": message(template, no_row, due_at=now),
        "opted_out": message(template, opted_out, due_at=now),
        "no_phone": message(template, no_phone, due_at=now),
        "landline": message(template, landline, due_at=now),
        "short": message(template, short, due_at=now),
        "listed": message(template, listed, due_at=now),
        "email_listed": message(template, email_listed, due_at=now, channel="email"),
        "other_channel": message(template, other_channel, due_at=now),
        "international": message(template, international, due_at=now),
        "wechat": message(template, wechat, due_at=now, channel="wechat"),
        "no_openid": message(template, listed, due_at=now, channel="wechat"),
    }
    decided = screen(list(rows.values()), now)
    got = {
        name: (decided[m.id].action, decided[m.id].reason, decided[m.id].address) for name, m in rows.items()
    }
    assert got == {
        "no_row": (SUPPRESS, "no_consent", no_row.phone),
        "opted_out": (SUPPRESS, "no_consent", opted_out.phone),
        "no_phone": (SUPPRESS, "no_address", ""),
        "landline": (SUPPRESS, "invalid_address", "010-12345678"),
        "short": (SUPPRESS, "invalid_address", "138 1234 567"),
        "listed": (SUPPRESS, "suppressed_address", "+8613800001111"),
        "email_listed": (SUPPRESS, "suppressed_address", "Li.Na@example.cn"),
        "other_channel": (SEND, "", "+8613800002222"),
        "international": (SEND, "", "+447911123456"),
        "wechat": (SEND, "", "o6_bmjrPTlm6_2sgVt7hMZOPfL2M"),
        "no_openid": (SUPPRESS, "no_address", ""),
    }
    assert decided[rows["landline"].id].params == {
        "channel": "sms", "address": "010-12345678", "problem": "not_mobile"
    }  # fmt: skip
    assert decided[rows["listed"].id].params == {"why": "bounced"}
    assert reason_text("no_consent", decided[rows["no_row"].id].params) == "no SMS consent"


def test_expired_messages_and_deferrals_past_expiry_are_suppressed(template, caps, frozen):
    caps()
    now = frozen(utc(2026, 12, 7, 14, 0))  # 22:00 in Shanghai
    wang = customer()
    stale = message(template, wang, due_at=now, expires_at=now - timedelta(minutes=1))
    tonight = message(template, wang, due_at=now, expires_at=now + timedelta(hours=1))
    tomorrow = message(template, wang, due_at=now, expires_at=now + timedelta(days=1))
    decided = screen([stale, tonight, tomorrow], now)
    assert (decided[stale.id].action, decided[stale.id].reason) == (SUPPRESS, "expired")
    assert (decided[tonight.id].action, decided[tonight.id].reason) == (SUPPRESS, "expired")
    assert decided[tonight.id].params["deferred_by"] == "quiet_hours"
    assert (decided[tomorrow.id].action, decided[tomorrow.id].reason) == (DEFER, "quiet_hours")


def test_erased_customers_get_nothing(template, caps, frozen):
    caps()
    now = frozen(utc(2026, 12, 7, 6, 0))
    gone = customer(erased_at=utc(2026, 6, 1))
    decision = screen([message(template, gone, due_at=now, purpose="transactional")], now).popitem()[1]
    assert (decision.action, decision.reason) == (SUPPRESS, "customer_erased")


def test_a_time_zone_that_is_not_one_is_counted_in_the_default_zone(template, caps, frozen):
    caps()
    now = frozen(utc(2026, 12, 7, 14, 0))  # 22:00 in Shanghai
    odd = customer()
    Customer.objects.filter(pk=odd.pk).update(time_zone="Mars/Olympus_Mons")
    decision = screen([message(template, odd, due_at=now)], now).popitem()[1]
    assert (decision.action, decision.until) == (DEFER, utc(2026, 12, 8, 0, 0))


def test_an_empty_batch_and_a_naive_now(template):
    assert messages_screen(messages=[], now=utc(2026, 12, 7)) == []
    with pytest.raises(ValueError, match="aware"):
        messages_screen(messages=[], now=utc(2026, 12, 7).replace(tzinfo=None))


# ---- a batch is a fixed number of queries ---------------------------------------------------------------


def _batch(template, size, now):
    people = Customer.objects.bulk_create(
        [
            Customer(
                external_id=f"B{size}-{i}",
                phone=f"+86139{size:03d}{i:05d}",
                email=f"b{size}.{i}@example.cn",
                time_zone="America/Los_Angeles" if i % 2 else "Asia/Shanghai",
            )
            for i in range(size // 2)
        ]
    )
    Consent.objects.bulk_create(
        [
            Consent(customer=p, channel=c, status="opted_in", changed_at=now)
            for p in people
            for c in ("sms", "email")
        ]
    )
    CustomerIdentity.objects.bulk_create(
        [CustomerIdentity(customer=p, kind="wechat_openid", value=f"o{p.pk:027d}") for p in people[::3]]
    )
    Suppression.objects.create(channel="sms", address=people[0].phone, reason="bounced")
    for p in people[::5]:
        sent(template, p, now - timedelta(hours=3), channel="email")
    rows = []
    for i, p in enumerate(people):
        rows.append(message(template, p, due_at=now, priority=i % 3, save=False))
        second = ("email", "wechat", "sms")[i % 3]
        purpose = "transactional" if i % 7 == 0 else "marketing"
        rows.append(message(template, p, due_at=now, channel=second, purpose=purpose, save=False))
    return type(rows[0]).objects.bulk_create(rows)


def test_screening_500_messages_takes_as_many_queries_as_screening_50(template, caps, frozen):
    caps(("", "day", 2), ("", "week", 5), ("sms", "day", 1))
    quiet_hours(time(21, 0), time(8, 0))  # the settings row exists, as it does after the first screen
    now = frozen(utc(2026, 12, 7, 17, 0))  # 01:00 in Shanghai (quiet), 09:00 in Los Angeles (not)
    small, large = _batch(template, 50, now), _batch(template, 500, now)
    counts = []
    for batch in (small, large):
        with CaptureQueriesContext(connection) as queries:
            decisions = messages_screen(messages=batch, now=now)
        assert len(decisions) == len(batch)
        counts.append(len(queries))
    # customers with their addresses, delivery settings, consent, suppression list, caps; then the cap
    # step's transaction (a savepoint here, inside the test's): its two lock statements, sent counts,
    # slots in flight, the savepoint's release
    assert counts == [11, 11]
    actions = {d.action for d in decisions}
    assert actions == {SEND, DEFER, SUPPRESS}
