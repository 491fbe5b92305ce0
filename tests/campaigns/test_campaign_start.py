"""Starting a campaign run: the audience frozen, exclusions, deterministic arms, one message per treated
recipient, and nothing twice however often it is started (a retried task, a second start, a start killed
midway and taken over)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from campaigns.models import CampaignRecipient, CampaignRun, Message
from campaigns.services import campaigns as svc
from campaigns.services.campaigns import arm_assign, campaign_run_start, thresholds
from campaigns.tasks import campaign_run_start as start_task
from tests.campaigns.campaign_helpers import campaign_make, customers_sql, run_make, segment_make

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(db):
    ids = customers_sql(400)
    beijing = customers_sql(50, city="北京", prefix="BJ")
    return {"shanghai": ids, "beijing": beijing, "segment": segment_make()}


def _messages(run):
    return Message.objects.filter(source_kind="campaign", occurrence=str(run.pk))


def test_a_start_freezes_the_audience_assigns_arms_and_queues_one_message_per_treated_recipient(world):
    now = timezone.now()
    campaign = campaign_make(segment=world["segment"])
    run = run_make(campaign, now=now)
    result = campaign_run_start(run=run, now=now)
    run.refresh_from_db()
    assert result.started and run.status == "sending"
    assert run.snapshot.member_count == 400 and run.audience_size == 400
    recipients = {r.customer_id: r for r in CampaignRecipient.objects.filter(run=run)}
    assert set(recipients) == set(world["shanghai"])
    t = thresholds(campaign, list(campaign.variants.all()))
    for customer_id, r in recipients.items():
        assert (r.arm, r.phase) == arm_assign(campaign.pk, customer_id, t)
    holdout = {c for c, r in recipients.items() if r.arm == "holdout"}
    assert run.holdout_size == len(holdout) and 15 < len(holdout) < 70  # 10% of 400
    messages = list(
        _messages(run).values("customer_id", "template_id", "source_ref", "source_label", "status")
    )
    assert {m["customer_id"] for m in messages} == set(recipients) - holdout
    templates = {v.key: v.template_id for v in campaign.variants.all()}
    assert all(m["template_id"] == templates[recipients[m["customer_id"]].arm] for m in messages)
    assert {(m["source_ref"], m["source_label"], m["status"]) for m in messages} == {
        (str(campaign.pk), campaign.name, "queued")
    }
    assert run.enqueued_size == len(messages) == run.treated_size
    # The kept counts agree with the outbox.
    assert svc.run_counts(run.pk) == {("queued", ""): len(messages)}


def test_started_twice_and_the_task_retried_queue_each_message_once(world):
    now = timezone.now()
    campaign = campaign_make(segment=world["segment"])
    run = run_make(campaign, now=now)
    start_task.apply(args=[run.pk])
    first = set(_messages(run).values_list("id", flat=True))
    start_task.apply(args=[run.pk])  # the task retried, or redelivered
    assert not campaign_run_start(run=run, now=now).started  # a second start
    # Even a start forced through again (the run put back as if its first start had never finished)
    # finds every key taken.
    CampaignRun.objects.filter(pk=run.pk).update(status="starting", claim_token=None)
    assert campaign_run_start(run=run, now=now + timedelta(seconds=1)).started
    assert set(_messages(run).values_list("id", flat=True)) == first
    assert CampaignRecipient.objects.filter(run=run).count() == 400


def test_a_start_killed_midway_leaves_nothing_and_is_taken_over_once_its_lease_lapses(world, monkeypatch):
    now = timezone.now()
    campaign = campaign_make(segment=world["segment"])
    run = run_make(campaign, now=now)

    def killed(**kwargs):
        raise SystemExit("worker killed")

    monkeypatch.setattr(svc, "_messages_insert", killed)
    with pytest.raises(SystemExit):
        campaign_run_start(run=run, now=now)
    monkeypatch.undo()
    run.refresh_from_db()
    assert run.status == "starting" and not CampaignRecipient.objects.filter(run=run).exists()
    assert not campaign_run_start(run=run, now=now).started  # its lease still holds
    assert svc.campaign_runs_dispatch(now=now)["started"] == []
    CampaignRun.objects.filter(pk=run.pk).update(claimed_until=timezone.now() - timedelta(seconds=1))
    assert svc.campaign_runs_dispatch(now=now)["started"] == [run.pk]
    assert campaign_run_start(run=run, now=now).started
    assert _messages(run).count() == CampaignRun.objects.get(pk=run.pk).treated_size > 300


def test_exclusions_erased_customers_and_a_recent_campaign(world):
    now = timezone.now()
    from crm.models import Customer

    shanghai = world["shanghai"]
    Customer.objects.filter(pk=shanghai[0]).update(erased_at=now)
    vip = segment_make(
        "VIP",
        {
            "op": "and",
            "conditions": [
                {"field": "profile.external_id", "operator": "in", "value": [f"T{i}" for i in range(1, 11)]}
            ],
        },
    )
    earlier = campaign_make(segment=world["segment"], name="上周", holdout="0")
    earlier_run = run_make(earlier, now=now - timedelta(days=3))
    campaign_run_start(run=earlier_run, now=now - timedelta(days=3))
    sent_to = shanghai[100:150]
    Message.objects.filter(occurrence=str(earlier_run.pk), customer_id__in=sent_to).update(
        status="sent", sent_at=now - timedelta(days=2)
    )
    campaign = campaign_make(
        segment=world["segment"], holdout="0", exclude_campaign=earlier, exclude_campaign_days=7
    )
    campaign.exclude_segments.add(vip)
    run = run_make(campaign, now=now)
    campaign_run_start(run=run, now=now)
    run.refresh_from_db()
    got = set(CampaignRecipient.objects.filter(run=run).values_list("customer_id", flat=True))
    vip_ids = set(
        Customer.objects.filter(external_id__in=[f"T{i}" for i in range(1, 11)]).values_list("id", flat=True)
    )
    assert got == set(shanghai[1:]) - vip_ids - set(sent_to)
    assert run.excluded_size == 399 - len(got)


def test_everyone_with_consent_and_a_static_list(world):
    from crm.models import StaticList
    from tests.campaigns.campaign_helpers import consent_sql

    now = timezone.now()
    consent_sql(world["beijing"][:20])
    everyone = campaign_make(audience_kind="everyone", holdout="0")
    run = run_make(everyone, now=now)
    campaign_run_start(run=run, now=now)
    assert set(CampaignRecipient.objects.filter(run=run).values_list("customer_id", flat=True)) == set(
        world["beijing"][:20]
    )
    static = StaticList.objects.create(name="门店")
    for c in world["beijing"][:5]:
        static.members.create(customer_id=c)
    listed = campaign_make(audience_kind="static_list", static_list=static, holdout="0", name="门店活动")
    run = run_make(listed, now=now)
    campaign_run_start(run=run, now=now)
    assert _messages(run).count() == 5


def test_arms_in_sql_and_python_agree_and_a_rerun_agrees(world):
    now = timezone.now()
    campaign = campaign_make(segment=world["segment"], weights=(20, 30, 50), holdout="15", test_percent=40)
    run = run_make(campaign, now=now)
    campaign_run_start(run=run, now=now)
    first = dict(CampaignRecipient.objects.filter(run=run).values_list("customer_id", "arm"))
    t = thresholds(campaign, list(campaign.variants.all()))
    assert first == {c: arm_assign(campaign.pk, c, t)[0] for c in first}
    # Only the test phase is queued; the rest waits for the winner.
    phases = dict(CampaignRecipient.objects.filter(run=run).values_list("customer_id", "phase"))
    queued = set(_messages(run).values_list("customer_id", flat=True))
    assert queued == {c for c, p in phases.items() if p == "test" and first[c] != "holdout"}
    rerun = run_make(campaign, now=now, occurrence="again")
    campaign_run_start(run=rerun, now=now)
    assert dict(CampaignRecipient.objects.filter(run=rerun).values_list("customer_id", "arm")) == first
    # The winner goes to the rest, once.
    run.refresh_from_db()
    rest = {c for c, p in phases.items() if p == "rest" and first[c] != "holdout"}
    assert svc.campaign_recipients_enqueue(run=run, phase="rest", variant_key="B", now=now) == len(rest)
    assert svc.campaign_recipients_enqueue(run=run, phase="rest", variant_key="B", now=now) == 0
    assert set(_messages(run).values_list("customer_id", flat=True)) == queued | rest
    assert set(
        CampaignRecipient.objects.filter(run=run, customer_id__in=rest).values_list("arm", flat=True)
    ) == {"B"}


def test_arm_assignment_is_unbiased_on_a_large_sample():
    """A chi-square goodness-of-fit test of the SQL assignment over 200,000 customer ids against the
    configured split (15% holdout, then 20/30/50): with a fixed campaign id the result is deterministic,
    and a biased hash (or an off-by-one in the cut-offs) fails it by a wide margin."""
    from types import SimpleNamespace

    from scipy.stats import chisquare

    campaign = SimpleNamespace(holdout_percent=15, test_percent=0)
    variants = [SimpleNamespace(key=k, weight=w) for k, w in (("A", 20), ("B", 30), ("C", 50))]
    t = thresholds(campaign, variants)
    arm, phase, arm_params, phase_params = svc._arm_sql(t)
    n = 200_000
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT arm, count(*) FROM (SELECT {arm} AS arm FROM (SELECT {svc._hash_slices_sql()} FROM "
            "(SELECT md5('4242:' || i) AS h FROM generate_series(1, %s) i) x) s) y GROUP BY arm",
            [*arm_params, n],
        )
        observed = dict(cursor.fetchall())
    keys = ["holdout", "A", "B", "C"]
    expected = [n * 0.15, n * 0.85 * 0.2, n * 0.85 * 0.3, n * 0.85 * 0.5]
    statistic, p = chisquare([observed[k] for k in keys], expected)
    assert p > 0.001, (observed, statistic)
    # Python agrees with the SQL on a sample of them.
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT i, {arm} FROM (SELECT i, {svc._hash_slices_sql()} FROM "
            "(SELECT i, md5('4242:' || i) AS h FROM generate_series(1, 2000) i) x) s",
            arm_params,
        )
        assert all(a == arm_assign(4242, i, t)[0] for i, a in cursor.fetchall())


def test_variants_differing_by_channel_and_send_time_queue_on_their_own_channel_at_their_own_time(world):
    from campaigns.models import CampaignVariant, MessageTemplate

    now = timezone.now()
    campaign = campaign_make(segment=world["segment"], channel="sms")
    email = MessageTemplate.objects.create(code=f"c{campaign.pk}-B-email", name="B by email", channel="email")
    CampaignVariant.objects.filter(campaign=campaign, key="B").update(
        template=email, channel="email", send_delay=timedelta(hours=2)
    )
    assert svc.campaign_problems(campaign) == []
    run = run_make(campaign, now=now)
    campaign_run_start(run=run, now=now)
    arms = dict(CampaignRecipient.objects.filter(run=run).values_list("customer_id", "arm"))
    queued = {
        (arms[c], channel, due, template)
        for c, channel, due, template in _messages(run).values_list(
            "customer_id", "channel", "due_at", "template_id"
        )
    }
    sms_template = campaign.variants.get(key="A").template_id
    assert queued == {("A", "sms", now, sms_template), ("B", "email", now + timedelta(hours=2), email.pk)}
