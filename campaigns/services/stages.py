"""The stages of the delivery pipeline that other modules own, as the outbox calls them.

The outbox (campaigns/services/outbox.py) reaches screening, rendering, link tracking, providers, rate
limits, address marking and the behaviour events only through the functions of this module, looked up as
attributes at call time (`stages.screen(...)`), never bound at import. Each function here is the single
place that names its owner's module, and a test that must inject a failure or isolate the outbox may put
its own stand-in in place of a stage (tests/campaigns/pipeline_doubles.py).

The owners (docs: /work/notes/messaging.md, issue 14):
- screen: rules, `campaigns.services.rules.messages_screen`
- render: templates, `campaigns.rendering.render_batch`
- track: tracking, `campaigns.services.tracking.tracked_content` (links rewritten, pixel, unsubscribe headers)
- provider_for, rate_limit_take, provider_cooling, provider_cool_down: providers,
  `campaigns.providers.registry` and `campaigns.services.rate_limits`
- address_problems_record: rules, `campaigns.services.suppression` (an invalid address goes on the
  suppression list, "unsubscribed" withdraws the consent)
- message_events_record: tracking (message_sent / message_failed into the crm event log)

Contracts (duck-typed: the outbox reads only the attributes named here):
- screen(messages=[Message], now) -> [Decision(message_id, action "send"|"defer"|"suppress", until,
  reason, params, address)]; a message with no decision is left alone (released, tried again later).
- render(messages=[Message], now) -> [Rendered(message_id, version_id, content, subject, links, language)
  or RenderError(message_id, error)] (an item without `content` is an error).
- track(message_id, content, channel) -> (content, links); headers for the provider may be returned in
  content["headers"].
- provider_for(channel) -> campaigns.providers.base.Provider
- rate_limit_take(provider_code, n, now) -> int granted (0..n)
- provider_cooling(provider_code, now) -> datetime | None; provider_cool_down(provider_code, seconds, reason)
- address_problems_record(problems=[(Message, SendResult)], now): called in the recording transaction.
- message_events_record(events=[dict(type, message_id, customer_id, channel, occurred_at, properties)]):
  called in the recording transaction, so an event exists exactly when its status was recorded.
"""

from __future__ import annotations

from datetime import datetime


def screen(*, messages, now: datetime):
    from campaigns.services.rules import messages_screen

    return messages_screen(messages=messages, now=now)


def render(*, messages, now: datetime):
    from campaigns.rendering import render_batch

    return render_batch(messages=messages, now=now)


def track(message_id: int, content: dict, channel: str, purpose: str = "marketing", language: str = ""):
    from campaigns.services.tracking import tracked_content

    return tracked_content(message_id, content, channel, purpose, language=language)


def provider_for(channel: str):
    from campaigns.providers.registry import provider_for as registry_provider_for

    return registry_provider_for(channel)


def rate_limit_take(provider_code: str, n: int, now: datetime) -> int:
    from campaigns.services.rate_limits import rate_limit_take as take

    return take(provider_code, n, now)


def provider_cooling(provider_code: str, now: datetime):
    from campaigns.services.rate_limits import provider_cooling as cooling

    return cooling(provider_code, now)


def provider_cool_down(provider_code: str, seconds: float, reason: str) -> None:
    from campaigns.services.rate_limits import provider_cool_down as cool_down

    cool_down(provider_code, seconds, reason)


def address_problems_record(*, problems, now: datetime) -> None:
    from campaigns.services.suppression import address_problems_record as record

    record(problems=problems, now=now)


def message_events_record(*, events: list[dict]) -> None:
    from campaigns.services.message_events import message_events_record as record

    record(events)
