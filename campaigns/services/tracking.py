"""Tracking: the links a message carries (click redirects, the open pixel, unsubscribe), and what happens
when they are used or when an email provider reports what became of a message.

- `tracked_content` rewrites a rendered message before it is handed over: every http(s) link becomes a
  signed click link to the message's own recorded URLs (the only URLs a click may reach: no open
  redirect), HTML email gets the open pixel, marketing email gets its unsubscribe link and the
  `List-Unsubscribe` / `List-Unsubscribe-Post` headers (RFC 8058), marketing SMS gets the opt-out text.
- `open_record`, `click_record`, `unsubscribe_apply` are what the pages (campaigns/views.py) call.
- `esp_event_apply` is what anymail's normalised webhooks (campaigns/webhooks.py) call.

Status only moves forward along sent -> delivered -> opened -> clicked (a late "delivered" after an open
changes nothing but the delivery time), in one conditional UPDATE per step, so two pixel loads at once
record one open and write one event.
"""

from __future__ import annotations

import functools
import html
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from django.conf import settings
from django.db import connection, transaction
from django.urls import reverse

from campaigns import signing
from campaigns.event_types import (
    MESSAGE_CLICKED,
    MESSAGE_DELIVERED,
    MESSAGE_FAILED,
    MESSAGE_OPENED,
    UNSUBSCRIBED,
)
from campaigns.models import DeliverySettings, Message, MessagePurpose, MessageStatus, SuppressionReason
from campaigns.services import suppression
from campaigns.services.message_events import MessageEvent, message_events_record
from crm.models import Consent, ConsentStatus, Customer

MAX_LINKS = 100  # a message with more distinct links keeps the rest untracked (a newsletter's footer)

# Statuses a message is in before it reached anyone: such a message can be neither opened nor clicked.
_UNSENT = (MessageStatus.QUEUED, MessageStatus.DEFERRED, MessageStatus.SUPPRESSED, MessageStatus.CANCELLED)
# Which statuses each tracking step moves a message on from; any other keeps its status (a message a
# webhook says was opened after it was marked failed stays failed, with the open time recorded).
_FROM = {
    MessageStatus.DELIVERED: (MessageStatus.SENT, MessageStatus.UNKNOWN),
    MessageStatus.OPENED: (MessageStatus.SENT, MessageStatus.UNKNOWN, MessageStatus.DELIVERED),
    MessageStatus.CLICKED: (
        MessageStatus.SENT,
        MessageStatus.UNKNOWN,
        MessageStatus.DELIVERED,
        MessageStatus.OPENED,
    ),
    MessageStatus.FAILED: (
        MessageStatus.SENDING,
        MessageStatus.SENT,
        MessageStatus.UNKNOWN,
        MessageStatus.DELIVERED,
        MessageStatus.OPENED,
        MessageStatus.CLICKED,
    ),
}
_STAMP = {
    MessageStatus.DELIVERED: "delivered_at",
    MessageStatus.OPENED: "opened_at",
    MessageStatus.CLICKED: "clicked_at",
    MessageStatus.FAILED: "finished_at",
}
_EVENT = {
    MessageStatus.DELIVERED: MESSAGE_DELIVERED,
    MessageStatus.OPENED: MESSAGE_OPENED,
    MessageStatus.CLICKED: MESSAGE_CLICKED,
    MessageStatus.FAILED: MESSAGE_FAILED,
}
_ROW_FIELDS = ("id", "customer_id", "channel", "purpose", "source_kind", "source_ref", "template_id")


# --- URLs ----------------------------------------------------------------------------------------------


def _absolute(path: str) -> str:
    return f"{settings.SITE_URL}{path}"


_PLACEHOLDER = "TOKEN"


@functools.lru_cache(maxsize=8)
def _path_around(name: str, urlconf: str) -> tuple[str, str]:
    """The path of URL `name` split around its token: reverse() costs more than signing, and a marketing
    email has a dozen links (see BENCHMARKS.md, tracked_content)."""
    path = reverse(name, args=[_PLACEHOLDER], urlconf=urlconf)
    before, _token, after = path.partition(_PLACEHOLDER)
    return before, after


def _url(name: str, token: str) -> str:
    before, after = _path_around(name, settings.ROOT_URLCONF)
    return f"{settings.SITE_URL}{before}{token}{after}"


def unsubscribe_url(message_id: int) -> str:
    return _url("campaigns:unsubscribe", signing.unsubscribe_token(message_id))


def open_pixel_url(message_id: int) -> str:
    return _url("campaigns:open", signing.open_token(message_id))


def click_url(message_id: int, link: int) -> str:
    return _url("campaigns:click", signing.click_token(message_id, link))


def unsubscribe_mailto(message_id: int) -> str:
    """The mailto: form of List-Unsubscribe, when MESSAGING_UNSUBSCRIBE_MAILTO names a mailbox that
    processes them; "" otherwise (the https form alone satisfies RFC 8058)."""
    mailbox = getattr(settings, "MESSAGING_UNSUBSCRIBE_MAILTO", "")
    if not mailbox:
        return ""
    return f"mailto:{mailbox}?subject=unsubscribe-{signing.unsubscribe_token(message_id)}"


# --- Rewriting a rendered message ------------------------------------------------------------------------

_HREF = re.compile(r"""(<a\b[^>]*?\bhref\s*=\s*)(["'])(.*?)\2""", re.IGNORECASE | re.DOTALL)
# A bare URL in text; it stops at whitespace, quotes, angle brackets and CJK punctuation, and loses a
# trailing sentence mark (a URL rarely ends in "." or ")").
_BARE_URL = re.compile(r"""https?://[^\s<>"'，。！？、；：（）【】《》“”‘’]+""")
_TRAILING = ".,;:!?)]}'"


class Tracked(NamedTuple):
    """(content, links), as the outbox's track stage unpacks it. `content` holds the channel fields with
    their links rewritten and, for marketing email, "headers" (List-Unsubscribe...), which the outbox
    pops into OutgoingMessage.headers; `links` are the original URLs by link index, to store in
    Message.links (the outbox does, or message_links_save)."""

    content: dict
    links: list[str]

    @property
    def headers(self) -> dict:
        return self.content.get("headers", {})


class _Links:
    def __init__(self, message_id: int, own_prefix: str):
        self.message_id = message_id
        self.urls: list[str] = []
        self._index: dict[str, int] = {}
        self._tracked: list[str] = []
        self._own = own_prefix
        # What click_url works out per link, once per message (a marketing email has a dozen links).
        self._token = signing.click_token_maker(message_id)
        before, after = _path_around("campaigns:click", settings.ROOT_URLCONF)
        self._before, self._after = f"{settings.SITE_URL}{before}", after

    def tracked(self, url: str) -> str:
        """The click link for `url`, or `url` itself when it is not to be tracked."""
        if not url.lower().startswith(("http://", "https://")) or url.startswith(self._own):
            return url
        index = self._index.get(url)
        if index is None:
            if len(self.urls) >= MAX_LINKS:
                return url
            index = self._index[url] = len(self.urls)
            self.urls.append(url)
            # Signed once per link: the HTML and the text part usually carry the same links.
            self._tracked.append(f"{self._before}{self._token(index)}{self._after}")
        return self._tracked[index]


def _rewrite_html(text: str, links: _Links) -> str:
    def replace(match: re.Match) -> str:
        original = html.unescape(match.group(3).strip())
        new = links.tracked(original)
        if new == original:
            return match.group(0)
        return f"{match.group(1)}{match.group(2)}{html.escape(new)}{match.group(2)}"

    return _HREF.sub(replace, text)


def _rewrite_text(text: str, links: _Links) -> str:
    def replace(match: re.Match) -> str:
        url = match.group(0)
        tail = ""
        while url and url[-1] in _TRAILING:
            url, tail = url[:-1], url[-1] + tail
        return links.tracked(url) + tail

    return _BARE_URL.sub(replace, text)


_TAIL = 4096


def _append_to_body(document: str, snippet: str) -> str:
    # The last "</body>" in any case. Looked for in the lower-cased tail first: lower-casing a whole long
    # email for it cost more than the search (an occurrence found in the tail is the last one).
    tail_start = max(0, len(document) - _TAIL)
    closing = document[tail_start:].lower().rfind("</body>")
    if closing >= 0:
        closing += tail_start
    elif tail_start:
        closing = document.lower().rfind("</body>")
    if closing < 0:
        return document + snippet
    return document[:closing] + snippet + document[closing:]


def _is_chinese(language: str) -> bool:
    return (language or settings.MESSAGING_DEFAULT_LANGUAGE).lower().startswith("zh")


def _unsubscribe_words(language: str) -> str:
    return "退订" if _is_chinese(language) else "Unsubscribe"


def sms_opt_out_appended(
    text: str, language: str, *, delivery_settings: DeliverySettings | None = None
) -> str:
    """A marketing SMS's text as it is sent: ending in the opt-out words (DeliverySettings) of its language,
    unless the template already says them. The template preview shows the same text (one place decides)."""
    row = delivery_settings or DeliverySettings.current()
    opt_out = row.sms_opt_out_zh if _is_chinese(language) else row.sms_opt_out_en
    if opt_out and opt_out not in text:
        return f"{text.rstrip()} {opt_out}"
    return text


def tracked_content(
    message_id: int,
    content: Mapping,
    channel: str,
    purpose: str = MessagePurpose.MARKETING,
    *,
    language: str = "",
    delivery_settings: DeliverySettings | None = None,
) -> Tracked:
    """The rendered `content` of message `message_id` made ready to send, with its links and headers.
    Pure (no query) except for the SMS opt-out text, which reads DeliverySettings unless the caller
    passes the row it read once for the batch."""
    content = dict(content)
    links = _Links(message_id, own_prefix=_absolute("/m/"))
    headers: dict[str, str] = {}
    marketing = purpose == MessagePurpose.MARKETING
    if channel == "email":
        unsubscribe = unsubscribe_url(message_id)
        if content.get("html"):
            document = _rewrite_html(str(content["html"]), links)
            if marketing and unsubscribe not in document:
                document = _append_to_body(
                    document,
                    f'<p style="font-size:12px;color:#888"><a href="{html.escape(unsubscribe)}">'
                    f"{_unsubscribe_words(language)}</a></p>",
                )
            # The pixel last, so that a client that shows the top of a long message first still loads it.
            pixel = html.escape(open_pixel_url(message_id))
            content["html"] = _append_to_body(
                document, f'<img src="{pixel}" width="1" height="1" alt="" style="display:none">'
            )
        if content.get("text"):
            text = _rewrite_text(str(content["text"]), links)
            if marketing and unsubscribe not in text:
                text = f"{text.rstrip()}\n\n{_unsubscribe_words(language)}: {unsubscribe}\n"
            content["text"] = text
        if marketing:
            mailto = unsubscribe_mailto(message_id)
            headers["List-Unsubscribe"] = f"<{unsubscribe}>" + (f", <{mailto}>" if mailto else "")
            headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
            content["headers"] = headers
    elif channel == "sms":
        text = _rewrite_text(str(content.get("text", "")), links)
        if marketing:
            text = sms_opt_out_appended(text, language, delivery_settings=delivery_settings)
        content["text"] = text
    else:
        # WeChat template messages and pushes open one URL (the mini-program page is not a URL).
        if isinstance(content.get("url"), str) and content["url"]:
            content["url"] = links.tracked(content["url"])
    return Tracked(content=content, links=links.urls)


def message_links_save(*, links: Mapping[int, Sequence[str]]) -> int:
    """Record each message's tracked URLs (the `links` of tracked_content), in one statement per 1,000
    messages; a click can reach only these."""
    items = [(message_id, list(urls)) for message_id, urls in links.items()]
    table = Message._meta.db_table
    cast = "::jsonb" if connection.vendor == "postgresql" else ""
    updated = 0
    with connection.cursor() as cursor:
        for start in range(0, len(items), 1000):
            chunk = items[start : start + 1000]
            values = ", ".join(["(%s, %s)"] * len(chunk))
            params = [v for message_id, urls in chunk for v in (message_id, json.dumps(urls))]
            if connection.vendor == "postgresql":
                sql = f"""UPDATE {table} AS m SET links = v.links{cast}
                          FROM (VALUES {values}) AS v(id, links) WHERE m.id = v.id::bigint"""
            else:
                sql = f"""WITH v(id, links) AS (VALUES {values})
                          UPDATE {table} SET links = (SELECT json(v.links) FROM v WHERE v.id = {table}.id)
                          WHERE id IN (SELECT id FROM v)"""
            cursor.execute(sql, params)
            updated += cursor.rowcount
    return updated


# --- Moving a message along ------------------------------------------------------------------------------


def _history_entry(status: str, now: datetime, reason: str = "", params: dict | None = None) -> str:
    return json.dumps({"status": status, "at": now.isoformat(), "reason": reason, "params": params or {}})


def _advance(
    *,
    message_ids: Sequence[int],
    to: MessageStatus,
    now: datetime,
    first_only: bool = True,
    reason: str = "",
    params: dict | None = None,
) -> list[Message]:
    """Stamp `to`'s time on the messages (once) and move the ones in a status before `to` on to it, with a
    history entry; returns the messages stamped now (id and the event fields), whose event is to be
    written. `first_only`: leave a message whose stamp is already set alone (one open, one delivery)."""
    if not message_ids:
        return []
    stamp = _STAMP[to]
    table = Message._meta.db_table
    ids = ", ".join(["%s"] * len(message_ids))
    before = ", ".join(["%s"] * len(_FROM[to]))
    unsent = ", ".join(["%s"] * len(_UNSENT))
    if connection.vendor == "postgresql":
        append, json_param = "history || jsonb_build_array(%s::jsonb)", "%s::jsonb"
    else:
        append, json_param = "json_insert(history, '$[#]', json(%s))", "%s"
    moves = f"status IN ({before})"
    reason_sql = ""
    reason_params: list = []
    if reason:
        reason_sql = f", reason = CASE WHEN {moves} THEN %s ELSE reason END"
        reason_sql += f", reason_params = CASE WHEN {moves} THEN {json_param} ELSE reason_params END"
        reason_params = [*_FROM[to], reason, *_FROM[to], json.dumps(params or {})]
    sql = f"""
        UPDATE {table}
           SET {stamp} = COALESCE({stamp}, %s),
               history = CASE WHEN {moves} THEN {append} ELSE history END,
               status = CASE WHEN {moves} THEN %s ELSE status END
               {reason_sql}
         WHERE id IN ({ids}) AND status NOT IN ({unsent}) {"AND " + stamp + " IS NULL" if first_only else ""}
        RETURNING {", ".join(_ROW_FIELDS)}
    """
    query_params = [
        now,
        *_FROM[to],
        _history_entry(to, now, reason, params),
        *_FROM[to],
        to,
        *reason_params,
        *message_ids,
        *_UNSENT,
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, query_params)
        rows = cursor.fetchall()
    return [Message(**dict(zip(_ROW_FIELDS, row, strict=True))) for row in rows]


def _message_row(message_id: int) -> Message | None:
    return Message.objects.filter(pk=message_id).only(*_ROW_FIELDS, "links", "address", "status").first()


@transaction.atomic
def open_record(*, message_id: int, now: datetime) -> bool:
    """The pixel was loaded: the first time, stamp the open, move the message to opened and write a
    message_opened event. True if this was the first open."""
    moved = _advance(message_ids=[message_id], to=MessageStatus.OPENED, now=now)
    message_events_record([MessageEvent(MESSAGE_OPENED, m, now) for m in moved], now=now)
    return bool(moved)


class LinkNotFound(LookupError):
    """The token was ours but the message is gone or never recorded a URL at that index."""


@transaction.atomic
def click_record(*, message_id: int, link: int, now: datetime) -> str:
    """A tracked link was followed: the URL it stands for (from the message's own recorded links, never
    from the request), having recorded the click (the first click also counts as an open, for clients
    that block images). Raises LinkNotFound."""
    message = _message_row(message_id)
    links = message.links if message is not None else None
    if not isinstance(links, list) or not 0 <= link < len(links) or not isinstance(links[link], str):
        raise LinkNotFound(message_id, link)
    url = links[link]
    if message.status in _UNSENT:
        return url  # a preview or a forwarded copy of a message never sent: go there, record nothing
    opened = _advance(message_ids=[message_id], to=MessageStatus.OPENED, now=now)
    _advance(message_ids=[message_id], to=MessageStatus.CLICKED, now=now)
    events = [MessageEvent(MESSAGE_OPENED, m, now) for m in opened]
    events.append(MessageEvent(MESSAGE_CLICKED, message, now, {"url": url, "link": link}))
    message_events_record(events, now=now)
    return url


# --- Unsubscribes, bounces, complaints -------------------------------------------------------------------


@dataclass(frozen=True)
class UnsubscribeResult:
    message: Message | None
    channel: str
    withdrawn: bool  # False: the customer had already opted out of the channel (a repeat)


def _opted_out(message: Message) -> bool:
    return Consent.objects.filter(
        customer_id=message.customer_id, channel=message.channel, status=ConsentStatus.OPTED_OUT
    ).exists()


@transaction.atomic
def unsubscribe_apply(*, message_id: int, how: str, now: datetime) -> UnsubscribeResult:
    """The customer unsubscribed through message `message_id` (how: link, one_click, esp): consent to its
    channel withdrawn (source `unsubscribe:<message id>`), the queued marketing on that channel cancelled,
    an `unsubscribed` event. A repeat (a mailbox provider retrying its one-click POST) changes nothing. A
    message that no longer exists (its customer was erased) unsubscribes nobody."""
    message = _message_row(message_id)
    if message is None:
        return UnsubscribeResult(message=None, channel="", withdrawn=False)
    withdrawn = not _opted_out(message)
    if withdrawn:
        suppression.consent_withdraw_for_message(message=message, why="unsubscribe", now=now)
    message_events_record([MessageEvent(UNSUBSCRIBED, message, now, {"how": how})], now=now)
    return UnsubscribeResult(message=message, channel=message.channel, withdrawn=withdrawn)


# anymail's normalised event types (anymail.signals.EventType) and reject reasons, as plain strings: what
# each failure means for the customer's consent (a withdrawal of campaigns.services.suppression).
_WITHDRAWAL_OF = {"bounced": "bounce", "complained": "complaint"}
_REJECT_WITHDRAWAL = {"bounced": "bounce", "spam": "complaint", "unsubscribed": "unsubscribe"}
_SUPPRESSION_OF = {"bounce": SuppressionReason.BOUNCED, "complaint": SuppressionReason.COMPLAINED}


@dataclass(frozen=True)
class EspEvent:
    """What the webhook receiver passes on from an AnymailTrackingEvent."""

    event_type: str
    esp_message_id: str = ""
    message_id: int | None = None  # ours, from the metadata the email provider sent with the message
    recipient: str = ""
    reject_reason: str = ""
    description: str = ""
    click_url: str = ""
    timestamp: datetime | None = None


def _esp_message(event: EspEvent) -> Message | None:
    query = Message.objects.only(*_ROW_FIELDS, "links", "address", "status")
    if event.message_id is not None:
        found = query.filter(pk=event.message_id, channel="email").first()
        if found is not None:
            return found
    if event.esp_message_id:
        return query.filter(provider_message_id=event.esp_message_id, channel="email").first()
    return None


@transaction.atomic
def esp_event_apply(*, event: EspEvent, now: datetime) -> str:
    """Apply one email provider event; returns what was done (for the log): "delivered", "opened",
    "clicked", "failed", "unsubscribed", "suppressed", or "ignored" (deferred, queued, an event for a
    message we do not know)."""
    kind = event.event_type
    message = _esp_message(event)
    at = event.timestamp or now
    detail = (event.description or event.reject_reason or kind)[:300]
    if kind == "unsubscribed":
        if message is None:
            return "ignored"
        unsubscribe_apply(message_id=message.pk, how="esp", now=now)
        return "unsubscribed"
    if kind in ("delivered", "opened", "clicked"):
        if message is None:
            return "ignored"
        if kind == "delivered":
            moved = _advance(message_ids=[message.pk], to=MessageStatus.DELIVERED, now=at)
            message_events_record([MessageEvent(MESSAGE_DELIVERED, m, at) for m in moved], now=now)
        elif kind == "opened":
            open_record(message_id=message.pk, now=at)
        else:
            links = message.links or []
            url = event.click_url or ""
            if url in links:
                click_record(message_id=message.pk, link=links.index(url), now=at)
            else:  # the provider's own click tracking of a link we did not rewrite
                opened = _advance(message_ids=[message.pk], to=MessageStatus.OPENED, now=at)
                _advance(message_ids=[message.pk], to=MessageStatus.CLICKED, now=at)
                events = [MessageEvent(MESSAGE_OPENED, m, at) for m in opened]
                events.append(MessageEvent(MESSAGE_CLICKED, message, at, {"url": url, "link": -1}))
                message_events_record(events, now=now)
        return kind
    if kind in ("bounced", "complained", "rejected", "failed"):
        if message is not None:
            reason, params = {
                "bounced": ("bounced", {"detail": detail}),
                "complained": ("complained", {}),
            }.get(kind, ("provider_rejected", {"error": detail}))
            moved = _advance(
                message_ids=[message.pk],
                to=MessageStatus.FAILED,
                now=at,
                first_only=False,
                reason=reason,
                params=params,
            )
            message_events_record(
                [MessageEvent(MESSAGE_FAILED, m, at, {"reason": reason}) for m in moved], now=now
            )
        withdrawal = _WITHDRAWAL_OF.get(kind) or _REJECT_WITHDRAWAL.get(event.reject_reason or "")
        if message is not None and not message.address and event.recipient:
            message.address = event.recipient  # suppress the address the provider names
        if message is not None and withdrawal is not None:
            if withdrawal != "unsubscribe" or not _opted_out(message):
                suppression.consent_withdraw_for_message(
                    message=message, why=withdrawal, detail=detail, now=now
                )
        elif event.reject_reason == "invalid" or (message is None and withdrawal in _SUPPRESSION_OF):
            # An address the provider says cannot exist, or a bounce for a message we cannot find: the
            # address goes on the list; no consent to withdraw.
            address = event.recipient or (message.address if message is not None else "")
            if not address:
                return "ignored"
            reason = _SUPPRESSION_OF.get(withdrawal or "", SuppressionReason.INVALID)
            customer = Customer.objects.filter(pk=message.customer_id).first() if message else None
            suppression.address_suppress(
                channel="email", address=address, reason=reason, customer=customer, detail=detail, now=now
            )
        else:
            return "failed" if message is not None else "ignored"
        return "suppressed"
    return "ignored"
