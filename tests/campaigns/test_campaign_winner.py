"""The automatic winner: a run with a test fraction sends only to its test recipients, then, after the
wait, picks the winner on the campaign's metric and sends it to the rest, through the real outbox (every
stage, the sink provider); a tie or too small a sample keeps A; the decision is taken once."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.conf import settings as django_settings
from django.utils import timezone

from campaigns.experiment_statistics import WinnerReason
from campaigns.models import Campaign, CampaignRecipient, CampaignRun, CampaignVariant, Message
from campaigns.providers.sink import SinkProvider
from campaigns.schedule import WINNERS_TASK
from campaigns.services.campaigns import campaign_run_settle, campaign_run_start
from campaigns.services.dispatch import dispatch_run
from campaigns.services.experiments import campaign_winner_pick, campaign_winners_pick_due
from campaigns.tasks import campaign_winners_pick
from tests.campaigns.campaign_helpers import consent_sql, customers_sql, run_make, segment_make
from tests.campaigns.helpers import template_make

pytestmark = pytest.mark.django_db

SMS = {"zh-hans": {"text": "双11预热 {{ customer.name }}"}, "en": {"text": "Pre-sale {{ customer.name }}"}}


@pytest.fixture
def sink(settings):
    settings.MESSAGING_PROVIDERS = {
        channel: {"BACKEND": "campaigns.providers.sink.SinkProvider", "OPTIONS": {}, "RATE": 0}
        for channel in ("email", "sms", "wechat", "push")
    }
    SinkProvider.reset()
    yield SinkProvider
    SinkProvider.reset()


@pytest.fixture
def start_at():
    # 11:00 in Shanghai tomorrow: outside quiet hours whenever the test runs, and after every lease the
    # pipeline takes from the wall clock.
    tomorrow = timezone.now().astimezone(timezone.get_default_timezone()).date() + timedelta(days=1)
    return timezone.make_aware(
        timezone.datetime.combine(tomorrow, timezone.datetime.min.time()).replace(hour=11),
        timezone.get_default_timezone(),
    )


def _campaign(*, n=600, holdout="10", test="50", metric="clicked", min_sample=20):
    ids = customers_sql(n)
    consent_sql(ids, "sms")
    campaign = Campaign.objects.create(
        name="双11预热",
        channel="sms",
        audience_kind="segment",
        segment=segment_make(),
        holdout_percent=Decimal(holdout),
        test_percent=Decimal(test),
        winner_metric=metric,
        winner_wait=timedelta(hours=2),
        winner_min_sample=min_sample,
    )
    for key in ("A", "B"):
        template = template_make(code=f"presale-{key}", channel="sms", content=SMS)
        CampaignVariant.objects.create(campaign=campaign, key=key, template=template, weight=50)
    return campaign


def _messages(run):
    return Message.objects.filter(source_kind="campaign", occurrence=str(run.pk))


def _drain(at):
    return dispatch_run(worker="test", now_fn=lambda: at, limit_seconds=120)


def _click(run, arm, share):
    """Stand in for the click webhooks: `share` of the arm's delivered messages were clicked."""
    customers = list(
        CampaignRecipient.objects.filter(run=run, arm=arm, phase="test")
        .order_by("customer_id")
        .values_list("customer_id", flat=True)
    )
    chosen = customers[: round(len(customers) * share)]
    _messages(run).filter(customer_id__in=chosen).update(status="clicked", clicked_at=timezone.now())
    return len(chosen)


def test_the_winner_is_chosen_on_the_metric_and_sent_to_the_rest(sink, start_at):
    campaign = _campaign()
    run = run_make(campaign, now=start_at)
    campaign_run_start(run=run, now=start_at)
    run.refresh_from_db()
    assert run.phase == "test"
    recipients = CampaignRecipient.objects.filter(run=run)
    test_ids = set(
        recipients.filter(phase="test").exclude(arm="holdout").values_list("customer_id", flat=True)
    )
    rest_ids = set(
        recipients.filter(phase="rest").exclude(arm="holdout").values_list("customer_id", flat=True)
    )
    assert test_ids and rest_ids
    # Only the test fraction is queued, and sent through the outbox.
    assert set(_messages(run).values_list("customer_id", flat=True)) == test_ids
    _drain(start_at)
    assert len(sink.delivered) == len(test_ids)
    assert campaign_run_settle(run=run, now=start_at) == "sending"  # waiting for its winner, not over

    # B's recipients clicked far more: 40 % against A's 5 %.
    _click(run, "A", 0.05)
    _click(run, "B", 0.40)

    # Before the wait is over nothing happens.
    assert campaign_winner_pick(run=run, now=start_at + timedelta(minutes=119)) is None
    decided_at = start_at + timedelta(hours=2, minutes=1)
    assert campaign_winners_pick_due(now=decided_at) == [run.pk]
    run.refresh_from_db()
    assert run.winner_key == "B" and run.winner_decided_at == decided_at
    decision = run.winner_decision
    assert decision["reason"] == WinnerReason.BEATS_A and decision["metric"] == "clicked"
    assert decision["rest_enqueued"] == len(rest_ids)
    arms = {a["key"]: a for a in decision["arms"]}
    assert arms["A"]["n"] + arms["B"]["n"] == len(test_ids)
    (comparison,) = decision["comparisons"]
    assert comparison["low"] > 0

    # The rest got B's template, and the outbox sends it.
    b_template = campaign.variants.get(key="B").template_id
    rest = _messages(run).filter(customer_id__in=rest_ids)
    assert set(rest.values_list("template_id", flat=True)) == {b_template}
    assert set(recipients.filter(phase="rest").exclude(arm="holdout").values_list("arm", flat=True)) == {"B"}
    _drain(decided_at)
    assert len(sink.delivered) == len(test_ids) + len(rest_ids)
    assert not _messages(run).filter(status__in=["queued", "deferred"]).exists()
    # A second pass (the beat again, a redelivered task) decides and sends nothing more.
    assert campaign_winners_pick_due(now=decided_at + timedelta(minutes=1)) == []
    assert campaign_winner_pick(run=run, now=decided_at + timedelta(minutes=1)) is None
    assert _messages(run).count() == len(test_ids) + len(rest_ids)
    assert campaign_run_settle(run=run, now=decided_at) == "sent"


def test_a_difference_the_test_cannot_tell_from_noise_keeps_a(sink, start_at):
    campaign = _campaign()
    run = run_make(campaign, now=start_at)
    campaign_run_start(run=run, now=start_at)
    _click(run, "A", 0.10)
    _click(run, "B", 0.12)
    decision = campaign_winner_pick(run=run, now=start_at + timedelta(hours=3))
    assert decision["winner_key"] == "A" and decision["reason"] == WinnerReason.NO_CLEAR_WINNER
    a_template = campaign.variants.get(key="A").template_id
    rest = _messages(run).filter(
        customer_id__in=CampaignRecipient.objects.filter(run=run, phase="rest").values("customer_id")
    )
    assert rest.count() == decision["rest_enqueued"] > 0
    assert set(rest.values_list("template_id", flat=True)) == {a_template}


def test_too_small_a_test_keeps_a_whatever_the_clicks(sink, start_at):
    campaign = _campaign(n=120, min_sample=100)
    run = run_make(campaign, now=start_at)
    campaign_run_start(run=run, now=start_at)
    _click(run, "B", 1.0)
    decision = campaign_winner_pick(run=run, now=start_at + timedelta(hours=3))
    assert decision["winner_key"] == "A" and decision["reason"] == WinnerReason.SAMPLE_TOO_SMALL


def test_a_cancelled_run_gets_no_winner(sink, start_at):
    campaign = _campaign(n=100)
    run = run_make(campaign, now=start_at)
    campaign_run_start(run=run, now=start_at)
    CampaignRun.objects.filter(pk=run.pk).update(status="cancelled")
    assert campaign_winners_pick_due(now=start_at + timedelta(hours=3)) == []
    assert CampaignRun.objects.get(pk=run.pk).winner_key == ""


def test_the_beat_wakes_the_winner_pass():
    entry = django_settings.CELERY_BEAT_SCHEDULE["campaigns-winners-pick"]
    assert entry["task"] == WINNERS_TASK == campaign_winners_pick.name
    assert entry["schedule"] <= 60
