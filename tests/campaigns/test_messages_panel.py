"""The customer 360's "Messages" panel: every message considered for the customer, newest first, and for one
not sent, why, in the reader's language; one query, paginated without counting."""

from __future__ import annotations

import datetime as dt
import zoneinfo

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone, translation

from campaigns.reasons import REASONS, reason_text
from campaigns.selectors import customer_messages
from tests.campaigns.staff_helpers import message, staff_user
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db

SHANGHAI = zoneinfo.ZoneInfo("Asia/Shanghai")
# 22:30 in Shanghai: quiet hours; the message waits for 08:00 the next morning.
# Years ahead, so that the page (on the real clock) never takes the morning for today.
NOW = dt.datetime(2031, 12, 7, 22, 30, tzinfo=SHANGHAI)
MORNING = dt.datetime(2031, 12, 8, 8, 0, tzinfo=SHANGHAI)


def url_of(customer, **params):
    url = reverse("admin:crm_customer_change", args=[customer.pk])
    return url + ("?" + "&".join(f"{k}={v}" for k, v in params.items()) if params else "")


# (status, reason, params, English, Chinese): the four examples and the others.
WHY = [
    (
        "suppressed",
        "capped",
        {"limit": 2, "channel": "sms", "period": "day"},
        "capped: 2 marketing SMS today",
        "已达频次上限：今日已发 2 条营销短信",
    ),
    ("suppressed", "no_consent", {"channel": "wechat"}, "no WeChat consent", "无微信授权"),
    (
        "deferred",
        "quiet_hours",
        {"until": MORNING.astimezone(dt.UTC).isoformat()},
        "quiet hours, deferred to 8 Dec 2031, 08:00",
        "免打扰时段，延后至 2031年12月8日 08:00",
    ),
    (
        "suppressed",
        "lower_priority",
        {"than": "双11大促"},
        "lower priority than 双11大促",
        "优先级低于双11大促",
    ),
    (
        "suppressed",
        "capped_all",
        {"limit": 5, "period": "week"},
        "capped: 5 marketing messages this week",
        "已达频次上限：本周已发 5 条营销消息",
    ),
    ("suppressed", "no_address", {"channel": "email"}, "no Email address", "无邮箱地址"),
    (
        "suppressed",
        "suppressed_address",
        {"why": "bounced"},
        "address on the suppression list (Bounced)",
        "地址在屏蔽名单中（退信）",
    ),
    ("failed", "provider_rejected", {"error": "43004"}, "provider refused it: 43004", "服务商拒绝：43004"),
    (
        "failed",
        "retries_exhausted",
        {"attempts": 5, "error": "timeout"},
        "gave up after 5 attempts: timeout",
        "尝试 5 次后放弃：timeout",
    ),
    ("cancelled", "unsubscribed", {"channel": "sms"}, "customer unsubscribed from SMS", "客户已退订短信"),
    ("suppressed", "expired", {}, "not sent before it expired", "过期前未能发送"),
    (
        "unknown",
        "no_answer",
        {},
        "handed to the provider, no answer: to reconcile",
        "已交给服务商但无回应：待核对",
    ),
]


@pytest.mark.parametrize("status, reason, params, english, chinese", WHY, ids=[w[1] for w in WHY])
def test_panel_says_why_a_message_was_not_sent_in_english_and_chinese(
    admin_client, status, reason, params, english, chinese
):
    customer = CustomerFactory(time_zone="Asia/Shanghai")
    message(
        customer, status=status, reason=reason, reason_params=params, created_at=NOW - dt.timedelta(hours=1)
    )
    for language, text in (("en", english), ("zh-hans", chinese)):
        with translation.override(language):
            rows = customer_messages(customer_id=customer.pk, time_zone="Asia/Shanghai", now=NOW).rows
        assert [r.why for r in rows] == [text], language
        response = admin_client.get(url_of(customer), HTTP_ACCEPT_LANGUAGE=language)
        html = response.content.decode()
        assert 'data-testid="message-why"' in html and text in html, language


def test_quiet_hours_until_later_today_reads_as_a_clock_time():
    # 01:00 in Shanghai, deferred to 08:00 the same day: the panel says just "08:00".
    customer = CustomerFactory(time_zone="Asia/Shanghai")
    early = dt.datetime(2031, 12, 8, 1, 0, tzinfo=SHANGHAI)
    message(customer, status="deferred", reason="quiet_hours", reason_params={"until": MORNING.isoformat()})
    with translation.override("en"):
        (row,) = customer_messages(customer_id=customer.pk, time_zone="Asia/Shanghai", now=early).rows
    assert row.why == "quiet hours, deferred to 08:00"


def test_times_in_a_reason_are_in_the_customers_time_zone():
    customer = CustomerFactory(time_zone="America/Los_Angeles")
    la = zoneinfo.ZoneInfo("America/Los_Angeles")
    until = dt.datetime(2026, 12, 8, 8, 0, tzinfo=la)
    message(customer, status="deferred", reason="quiet_hours", reason_params={"until": until.isoformat()})
    with translation.override("en"):
        (row,) = customer_messages(customer_id=customer.pk, now=until - dt.timedelta(hours=3)).rows
    assert row.why == "quiet hours, deferred to 08:00"


def test_every_reason_code_has_chinese_words():
    params = {
        "channel": "sms",
        "address": "x",
        "why": "x",
        "limit": 2,
        "period": "day",
        "than": "x",
        "error": "x",
        "until": "08:00",
        "attempts": 3,
        "detail": "x",
        "source": "x",
        "message": 1,
        "by": "x",
        "as": 2,
    }
    for code in REASONS:
        with translation.override("en"):
            english = reason_text(code, params)
        with translation.override("zh-hans"):
            chinese = reason_text(code, params)
        assert chinese != english and not any(
            "a" <= ch <= "z" for ch in chinese.replace("x", "").replace("sms", "")
        ), code


def test_sent_messages_have_no_why_and_show_source_channel_status():
    customer = CustomerFactory()
    message(customer, status="opened", source_label="生日祝福", source_kind="journey", channel="wechat")
    with translation.override("zh-hans"):
        (row,) = customer_messages(customer_id=customer.pk).rows
    assert (row.source, row.source_kind, row.channel_label, row.status_label, row.why) == (
        "生日祝福",
        "旅程",
        "微信",
        "已打开",
        "",
    )


def test_newest_first_in_one_query_whatever_the_number_of_messages():
    customer, other = CustomerFactory(), CustomerFactory()
    now = timezone.now()
    for i in range(25):
        message(customer, created_at=now - dt.timedelta(minutes=i), source_label=f"第{i}条")
    message(other, created_at=now)
    with CaptureQueriesContext(connection) as queries:
        page = customer_messages(customer_id=customer.pk, limit=10, offset=0, time_zone="Asia/Shanghai")
    assert len(queries.captured_queries) == 1
    assert "campaigns_message" in queries.captured_queries[0]["sql"]
    assert [r.source for r in page.rows] == [f"第{i}条" for i in range(10)] and page.has_more
    last = customer_messages(customer_id=customer.pk, limit=10, offset=20, time_zone="Asia/Shanghai")
    assert [r.source for r in last.rows] == [f"第{i}条" for i in range(20, 25)] and not last.has_more
    # Without the customer's time zone at hand the selector reads it: one query more, never one a row.
    with CaptureQueriesContext(connection) as queries:
        customer_messages(customer_id=customer.pk, limit=10)
    assert len(queries.captured_queries) == 2


def test_panel_query_uses_the_customer_index():
    customer = CustomerFactory()
    for _ in range(20):
        message(customer)
    with connection.cursor() as cursor:
        # Statistics of this table as it is now, not as an earlier test left it: on stale ones the
        # planner may take another index over customer_id and sort.
        cursor.execute("ANALYZE campaigns_message")
    with CaptureQueriesContext(connection) as queries:
        customer_messages(customer_id=customer.pk, limit=10, time_zone="UTC")
    sql = queries.captured_queries[0]["sql"]
    with connection.cursor() as cursor:
        cursor.execute("SET enable_seqscan = off")
        cursor.execute("EXPLAIN " + sql)
        plan = " ".join(row[0] for row in cursor.fetchall())
        cursor.execute("RESET enable_seqscan")
    # The index answers both the filter and the order: no sort node.
    assert "campaigns_message_customer" in plan and "Sort" not in plan


def test_panel_pages_by_query_parameter(admin_client):
    customer = CustomerFactory()
    now = timezone.now()
    for i in range(12):
        message(customer, created_at=now - dt.timedelta(minutes=i), source_label=f"活动{i:02d}")
    first = admin_client.get(url_of(customer), HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert "活动00" in first and "活动09" in first and "活动10" not in first
    assert "?messages=2#panel-messages" in first
    second = admin_client.get(url_of(customer, messages=2), HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert "活动10" in second and "活动11" in second and "活动09" not in second
    assert "?messages=1#panel-messages" in second and "?messages=3" not in second
    # Nonsense in the parameter is page 1, never an error page.
    assert admin_client.get(url_of(customer, messages="abc")).status_code == 200
    assert admin_client.get(url_of(customer, messages="-4")).status_code == 200


def test_panel_replaces_coming_soon_and_says_so_when_empty(admin_client):
    customer = CustomerFactory()
    html = admin_client.get(url_of(customer), HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert "Campaigns module" not in html
    assert "No message has been considered for this customer yet." in html
    html = admin_client.get(url_of(customer), HTTP_ACCEPT_LANGUAGE="zh-hans").content.decode()
    assert "尚未为该客户安排过任何消息。" in html


def test_panel_is_withheld_from_a_user_without_the_message_permission(client):
    from django.contrib.auth.models import Permission

    user = staff_user(username="viewer")
    user.user_permissions.add(Permission.objects.get(codename="view_customer"))
    customer = CustomerFactory()
    message(customer, source_label="秘密活动")
    client.force_login(user)
    html = client.get(url_of(customer), HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert "You may not see this customer's messages." in html and "秘密活动" not in html


def test_the_360_page_reads_messages_in_one_query_however_many_there_are(admin_client):
    few, many = CustomerFactory(), CustomerFactory()
    message(few)
    for i in range(30):
        message(many, status=["sent", "suppressed", "deferred"][i % 3], reason="capped")
    admin_client.get(url_of(few))  # warm-up: content types, sessions

    def outbox_queries(customer):
        with CaptureQueriesContext(connection) as queries:
            assert admin_client.get(url_of(customer)).status_code == 200
        return len(queries), [q for q in queries.captured_queries if '"campaigns_message"' in q["sql"]]

    few_total, few_outbox = outbox_queries(few)
    many_total, many_outbox = outbox_queries(many)
    assert many_total == few_total
    assert len(few_outbox) == len(many_outbox) == 1


def test_a_quiet_hours_deferral_from_the_real_screen_reads_as_the_customers_morning():
    # The screen stores the local time with its zone; the panel once read it as UTC (16:00 for 08:00).
    from campaigns.models import DeliverySettings
    from campaigns.services.rules import messages_screen
    from crm.models import Consent

    customer = CustomerFactory(time_zone="Asia/Shanghai", phone="+8613800138000")
    Consent.objects.create(customer=customer, channel="sms", status="opted_in", changed_at=NOW)
    DeliverySettings.current()  # 21:00-08:00 on every channel
    queued = message(customer, status="queued", reason="", due_at=NOW, created_at=NOW)
    (decision,) = messages_screen(messages=[queued], now=NOW)
    assert (decision.action, decision.reason, decision.until) == ("defer", "quiet_hours", MORNING)
    queued.status, queued.reason, queued.reason_params = "deferred", decision.reason, decision.params
    queued.due_at = decision.until
    queued.save()
    with translation.override("en"):
        (row,) = customer_messages(customer_id=customer.pk, now=NOW).rows
    assert row.why.startswith("quiet hours, deferred to ") and row.why.endswith("08:00"), row.why
