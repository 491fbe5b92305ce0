"""Fixtures of the delivery rules' tests: a frozen clock, a template to hang messages on, the caps a test
counts against."""

from datetime import datetime

import pytest
from django.utils import timezone

from campaigns.models import FrequencyCap, MessageTemplate


@pytest.fixture
def frozen(monkeypatch):
    """Freeze timezone.now() at the instant a test names (`frozen(now)`): the screen takes `now` as an
    argument, and this makes everything else the test touches (defaults, get_or_create) agree with it."""

    def freeze(now: datetime) -> datetime:
        monkeypatch.setattr(timezone, "now", lambda: now)
        return now

    return freeze


@pytest.fixture
def template(db):
    return MessageTemplate.objects.create(code="promo", name="Promo", channel="sms")


@pytest.fixture
def caps(db):
    """Set the frequency caps a test counts against, replacing whatever the migration seeded:
    `caps(("", "day", 2), ("sms", "week", 3))`."""

    def set_caps(*rows):
        FrequencyCap.objects.all().delete()
        for channel, period, limit in rows:
            FrequencyCap.objects.create(channel=channel, period=period, limit=limit)

    return set_caps
