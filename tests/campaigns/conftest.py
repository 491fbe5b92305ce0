import pytest

from tests.campaigns import pipeline_doubles


@pytest.fixture
def pipeline(monkeypatch, settings):
    """The outbox with stand-in stages (tests/campaigns/pipeline_doubles.py) and the in-process sink on
    every channel; yields the sink class (its `delivered` and `deliveries` are this process's)."""
    from campaigns.providers.sink import SinkProvider

    settings.MESSAGING_PROVIDERS = {
        channel: {"BACKEND": "campaigns.providers.sink.SinkProvider", "OPTIONS": {}, "RATE": 0}
        for channel in ("email", "sms", "wechat", "push")
    }
    pipeline_doubles.install(monkeypatch)
    SinkProvider.reset()
    yield SinkProvider
    SinkProvider.reset()


@pytest.fixture
def template(db):
    from campaigns.models import MessageTemplate

    return MessageTemplate.objects.create(code="order-shipped", name="Order shipped", channel="sms")
