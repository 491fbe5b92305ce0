"""Stand-in pipeline stages (campaigns/services/stages.py), kept for the tests that must isolate the outbox
or inject failures the real stages cannot be made to produce on demand: a render error on one message
(`data={"render_fails": True}`), a provider down while a file exists or refusing one address
(campaigns.providers.sink options), cool-downs recorded in a list to assert on, and the SIGKILL/two-worker
process tests, where the screen must say "send" whatever the clock says (no quiet hours, no caps) so that
the only thing under test is exactly-once. Everything else runs the real stages
(tests/integration/test_pipeline_real_stages.py, test_outbox_celery.py, test_outbox_embedded.py).

The stand-ins: a screen that says "send" to the customer's email or phone, a renderer that formats the
template data, no link tracking, providers built from settings.MESSAGING_PROVIDERS (the
OUTBOX_TEST_PROVIDERS environment variable, JSON, overrides it in worker processes), no rate limit, and
message_sent / message_failed appended to the crm event log as they are.

`install(monkeypatch)` replaces the stages for one test; importing `pipeline_doubles_installed` replaces
them for a whole worker process (celery -I, tests/campaigns/outbox_worker.py)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings
from django.utils.module_loading import import_string

from campaigns.services import stages


@dataclass(frozen=True)
class Decision:
    message_id: int
    action: str
    until: datetime | None = None
    reason: str = ""
    params: dict = field(default_factory=dict)
    address: str = ""


@dataclass(frozen=True)
class Rendered:
    message_id: int
    version_id: int | None
    content: dict
    subject: str = ""
    links: list = field(default_factory=list)
    language: str = ""


@dataclass(frozen=True)
class RenderError:
    message_id: int
    error: str


def screen(*, messages, now):
    from crm.models import Customer

    customers = {
        c["id"]: c
        for c in Customer.objects.filter(id__in={m.customer_id for m in messages}).values(
            "id", "email", "phone"
        )
    }
    out = []
    for m in messages:
        c = customers.get(m.customer_id, {})
        address = (
            m.address or (c.get("email") if m.channel == "email" else c.get("phone")) or f"c{m.customer_id}"
        )
        out.append(Decision(message_id=m.pk, action="send", address=address))
    return out


def render(*, messages, now):
    out = []
    for m in messages:
        if m.data.get("render_fails"):
            out.append(RenderError(message_id=m.pk, error="line 1: 'broken' is undefined"))
            continue
        text = "Hello {name}".format(name=m.data.get("name", "member"))
        out.append(Rendered(m.pk, None, {"subject": "Hi", "text": text}, subject="Hi", language="zh-hans"))
    return out


def track(message_id, content, channel, purpose="marketing", language=""):
    return content, []


_providers: dict = {}


def provider_for(channel: str):
    configured = dict(settings.MESSAGING_PROVIDERS)
    if os.environ.get("OUTBOX_TEST_PROVIDERS"):
        configured.update(json.loads(os.environ["OUTBOX_TEST_PROVIDERS"]))
    spec = configured[channel]
    key = (channel, json.dumps(spec, sort_keys=True))
    if key not in _providers:
        cls = import_string(spec["BACKEND"])
        _providers[key] = cls(
            code=spec.get("CODE", f"{channel}-sink"), channel=channel, options=spec.get("OPTIONS")
        )
    return _providers[key]


def rate_limit_take(provider_code, n, now):
    return n


def provider_cooling(provider_code, now):
    return None


cool_downs: list = []


def provider_cool_down(provider_code, seconds, reason):
    cool_downs.append((provider_code, seconds, reason))


def address_problems_record(*, problems, now):
    pass


def message_events_record(*, events):
    from crm.event_types import EventType, event_type_get, event_type_register
    from crm.services.event_log import NewEvent, events_append

    for code in ("message_sent", "message_failed"):
        if event_type_get(code) is None:
            event_type_register(EventType(code=code, label=code, source="system"))
    events_append(
        events=[
            NewEvent(
                type=e["type"],
                customer_id=e["customer_id"],
                occurred_at=e["occurred_at"],
                properties=e["properties"],
                external_id=f"{e['type']}:{e['message_id']}",
            )
            for e in events
        ],
        now=events[0]["occurred_at"],
    )


STAGES = (
    "screen",
    "render",
    "track",
    "provider_for",
    "rate_limit_take",
    "provider_cooling",
    "provider_cool_down",
    "address_problems_record",
    "message_events_record",
)


def install(monkeypatch=None) -> None:
    _providers.clear()
    for name in STAGES:
        if monkeypatch is not None:
            monkeypatch.setattr(stages, name, globals()[name])
        else:
            setattr(stages, name, globals()[name])
