"""Ledger reasons are stored as codes (`sys:<code>[:<param>]`) and shown in the reader's language;
staff members' own words and the English sentences of rows written before the codes are handled too.
And the last day a lot of points can be spent, on the business calendar."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from django.utils import translation

from loyalty.ledger_reasons import REASONS, reason_code, reason_text
from loyalty.models import EntryKind, LedgerEntry
from loyalty.selectors import lot_last_day


def test_reason_code_is_the_code_and_its_parameter():
    assert reason_code("order", "TM-1001") == "sys:order:TM-1001"
    assert reason_code("expired") == "sys:expired"
    assert len(reason_code("reward", "券" * 400)) == 300  # the column's length


def test_reason_code_refuses_an_unknown_code_naming_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown ledger reason 'oops'; known: order, refund"):
        reason_code("oops")


@pytest.mark.parametrize(
    ("stored", "kind", "en", "zh"),
    [
        ("sys:order:TM-1001", EntryKind.EARN, "Order TM-1001", "订单 TM-1001"),
        ("sys:expired", EntryKind.EXPIRE, "Points expired", "积分已过期"),
        ("sys:rule:双十一", EntryKind.EARN, "Bonus: 双十一", "奖励：双十一"),
        # Written before the codes: the English sentence, recognised for the kind that carried it.
        ("Order TM-9", EntryKind.EARN, "Order TM-9", "订单 TM-9"),
        ("Points expired", EntryKind.EXPIRE, "Points expired", "积分已过期"),
        # A staff member's words are theirs, even when they read like a job's.
        ("Points expired", EntryKind.ADJUST, "Points expired", "Points expired"),
        ("客服补偿", EntryKind.ADJUST, "客服补偿", "客服补偿"),
        ("sys:gone_code", EntryKind.EARN, "sys:gone_code", "sys:gone_code"),
        ("", EntryKind.EARN, "", ""),
    ],
)
def test_reason_display_in_english_and_chinese(stored, kind, en, zh):
    entry = LedgerEntry(reason=stored, kind=kind)
    with translation.override("en"):
        assert entry.reason_display == en == reason_text(stored, kind=kind)
    with translation.override("zh-hans"):
        assert entry.reason_display == zh


def test_every_reason_has_a_chinese_sentence():
    def sentences(language):
        with translation.override(language):
            return {code: str(text) for code, text in REASONS.items()}

    english, chinese = sentences("en"), sentences("zh-hans")
    assert [code for code in REASONS if chinese[code] == english[code]] == []


@pytest.mark.parametrize(
    ("expires_at", "last_day"),
    [
        # End-of-year expiry: gone at midnight opening 2027 in Shanghai (16:00 UTC), spendable all of 31 Dec.
        (datetime(2026, 12, 31, 16, 0, tzinfo=UTC), date(2026, 12, 31)),
        # A microsecond later is already 1 Jan in Shanghai: spendable on 1 Jan.
        (datetime(2026, 12, 31, 16, 0, 0, 1, tzinfo=UTC), date(2027, 1, 1)),
        # Rolling expiry during a day: that day is the last.
        (datetime(2026, 6, 15, 3, 30, tzinfo=UTC), date(2026, 6, 15)),
        # 20:00 UTC on 31 Dec is 04:00 on 1 Jan in Shanghai.
        (datetime(2026, 12, 31, 20, 0, tzinfo=UTC), date(2027, 1, 1)),
    ],
)
def test_lot_last_day_is_the_last_business_day_the_points_can_be_spent(settings, expires_at, last_day):
    settings.TIME_ZONE = "Asia/Shanghai"
    assert lot_last_day(expires_at) == last_day
