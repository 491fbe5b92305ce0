"""Suppressing an address and withdrawing consent in answer to a message: recorded at once, the customer's
queued marketing on that channel cancelled, and the next screen says why nothing goes."""

import pytest
from django.db.models import Q

from campaigns.models import Message, Suppression
from campaigns.services import outbox, suppression
from campaigns.services.rules import SUPPRESS, messages_screen
from crm.models import Consent, ConsentChange, CustomerIdentity
from tests.campaigns.rules.helpers import customer, message, utc

pytestmark = pytest.mark.django_db

NOW = utc(2026, 12, 7, 6, 0)


@pytest.fixture
def cancels(monkeypatch):
    """The outbox's real messages_cancel, with each call recorded (which customers a suppression reached)."""
    calls = []

    def recorded(**kwargs):
        calls.append(
            {
                "customer_ids": sorted(kwargs["customer_ids"]),
                "channel": kwargs["channel"],
                "reason": kwargs["reason"],
                "params": kwargs.get("params"),
            }
        )
        return outbox.messages_cancel(**kwargs)

    monkeypatch.setattr(suppression, "messages_cancel", recorded)
    return calls


def statuses(*rows):
    return [Message.objects.get(pk=row.pk).status for row in rows]


def test_a_suppressed_phone_cancels_queued_marketing_of_everyone_with_it(template, cancels):
    wang = customer(phone="138 0000 1111")
    spouse = customer(phone="+8613800001111")
    other = customer()
    queued = message(template, wang, due_at=NOW)
    deferred = message(template, spouse, due_at=NOW, status="deferred")
    receipt = message(template, wang, due_at=NOW, purpose="transactional")
    email = message(template, wang, due_at=NOW, channel="email")
    done = message(template, wang, due_at=NOW, status="sent", sent_at=NOW)
    untouched = message(template, other, due_at=NOW)

    entry = suppression.address_suppress(
        channel="sms", address="+86 138-0000-1111", reason="invalid", customer=wang, now=NOW
    )
    assert (entry.address, entry.reason, entry.customer_id) == ("+8613800001111", "invalid", wang.pk)
    assert statuses(queued, deferred, receipt, email, done, untouched) == [
        "cancelled", "cancelled", "queued", "queued", "sent", "queued"
    ]  # fmt: skip
    assert cancels[0]["customer_ids"] == sorted([wang.pk, spouse.pk])
    assert Message.objects.get(pk=queued.pk).reason == "suppressed_address"

    # Idempotent: the first reason stays, nothing doubles.
    again = suppression.address_suppress(channel="sms", address="13800001111", reason="manual", now=NOW)
    assert again.pk == entry.pk and again.reason == "invalid"
    assert Suppression.objects.count() == 1


def test_a_suppressed_openid_cancels_its_owners_queue(template, cancels):
    wang = customer()
    CustomerIdentity.objects.create(customer=wang, kind="wechat_openid", value="o6_bmjrPTlm6_2sgVt7hMZOPfL2M")
    queued = message(template, wang, due_at=NOW, channel="wechat")
    suppression.address_suppress(
        channel="wechat", address="o6_bmjrPTlm6_2sgVt7hMZOPfL2M", reason="manual", now=NOW
    )
    assert statuses(queued) == ["cancelled"]


def test_bad_input_is_refused_with_what_is_wrong(cancels):
    with pytest.raises(ValueError, match="fax"):
        suppression.address_suppress(channel="fax", address="1", reason="manual")
    with pytest.raises(ValueError, match="reason"):
        suppression.address_suppress(channel="sms", address="13800001111", reason="bored")
    with pytest.raises(ValueError, match="empty"):
        suppression.address_suppress(channel="sms", address="  ", reason="manual")


def test_an_unsubscribe_link_withdraws_consent_and_cancels_queued_marketing(template, cancels, caps):
    caps()
    wang = customer()
    clicked = message(template, wang, due_at=NOW, channel="email", status="sent", sent_at=NOW)
    tomorrow = message(template, wang, due_at=utc(2026, 12, 8, 1, 0), channel="email", status="deferred")
    sms = message(template, wang, due_at=NOW)

    consent = suppression.consent_withdraw_for_message(message=clicked, why="unsubscribe", now=NOW)

    assert (consent.status, consent.source) == ("opted_out", f"unsubscribe:{clicked.pk}")
    assert consent.source_display == f"unsubscribe link of message #{clicked.pk}"
    change = ConsentChange.objects.get(customer=wang, channel="email")
    assert (change.previous_status, change.status) == ("opted_in", "opted_out")
    assert statuses(tomorrow, sms) == ["cancelled", "queued"]
    assert Message.objects.get(pk=tomorrow.pk).reason_params == {"channel": "email"}
    assert not Suppression.objects.exists()  # an unsubscribe is the customer's choice, not a dead address
    # A message of the same customer created after it does not go either.
    late = message(template, wang, due_at=NOW, channel="email")
    (decision,) = messages_screen(messages=[late], now=NOW)
    assert (decision.action, decision.reason) == (SUPPRESS, "no_consent")


@pytest.mark.parametrize(
    "why, listed, reason",
    [
        ("bounce", "bounced", "bounced"),
        ("complaint", "complained", "complained"),
        ("not_subscribed", None, "unsubscribed"),
    ],
)
def test_bounces_and_complaints_also_list_the_address(template, cancels, why, listed, reason):
    wang = customer(email="Wang.Fang@EXAMPLE.cn")
    handed = message(
        template,
        wang,
        due_at=NOW,
        channel="email",
        status="sent",
        sent_at=NOW,
        address="Wang.Fang@example.cn",
    )
    queued = message(template, wang, due_at=NOW, channel="email")

    suppression.consent_withdraw_for_message(
        message=handed, why=why, detail="550 5.1.1 no such user", now=NOW
    )

    assert Consent.objects.get(customer=wang, channel="email").source == f"{why}:{handed.pk}"
    assert list(Suppression.objects.values_list("address", "reason")) == (
        [("Wang.Fang@example.cn", listed)] if listed else []
    )
    assert (Message.objects.get(pk=queued.pk).status, Message.objects.get(pk=queued.pk).reason) == (
        "cancelled",
        reason,
    )


def test_an_unknown_withdrawal_is_refused(template, cancels):
    wang = customer()
    row = message(template, wang, due_at=NOW)
    with pytest.raises(ValueError, match="unsubscribe"):
        suppression.consent_withdraw_for_message(message=row, why="bored")
    assert Consent.objects.filter(customer=wang, status="opted_in").count() == 4
    assert not Message.objects.filter(~Q(status="queued")).exists()
