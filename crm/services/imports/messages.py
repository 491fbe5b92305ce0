"""What an import says (rejection reasons, the summary, notes), stored as a code with parameters and put into
words when shown. The code is the message's English text as written in the code (its gettext msgid), so
the admin shows a job run in English in Chinese to a zh-hans user, and a message reworded later still shows
its old English text rather than nothing. Each msgid is written inside gettext_noop() where the message is
made, so that makemessages finds it.

Stored form (ImportJob.errors entries, ImportJob.outcome): {"msgid": ..., "params": {...}}. Rows written before codes were stored hold
{"message": ...} (errors) or text in ImportJob.message: they are shown as they are, translated when the
whole text is a message without parameters ("The amount cannot be negative.")."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from django.utils.translation import gettext

_SHOWN_CHARS = 80


def shown(value: str) -> str:
    """A value as a message may quote it: cut to 80 characters, NUL and unpaired surrogates escaped (a jsonb
    column refuses both, and a message must never be what makes an import fail)."""
    text = value if len(value) <= _SHOWN_CHARS else value[:_SHOWN_CHARS] + "…"
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    if not text.isascii():
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


@dataclass(frozen=True, slots=True)
class ImportMessage:
    msgid: str
    params: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"msgid": self.msgid, "params": self.params}

    def text(self) -> str:
        return message_text(self.as_dict())

    def __str__(self) -> str:
        return self.text()


def message(msgid: str, **params) -> ImportMessage:
    """An ImportMessage whose parameters are safe to store (text through `shown`, decimals as text)."""
    for key, value in params.items():
        if isinstance(value, str):
            params[key] = shown(value)
        elif isinstance(value, Decimal):
            params[key] = str(value)
    return ImportMessage(msgid, params)


def message_text(stored: dict) -> str:
    """A stored message in the active language; an old entry's free text as it is."""
    msgid = stored.get("msgid")
    if msgid is None:  # an entry from before codes: translated if the whole text is a known message
        text = str(stored.get("message", ""))
        return gettext(text) if text else ""
    params = stored.get("params") or {}
    template = gettext(msgid)
    if not params:
        return template
    try:
        return template % params
    except (KeyError, TypeError, ValueError):  # a translation that lost a placeholder: the English text
        try:
            return msgid % params
        except (KeyError, TypeError, ValueError):
            return msgid


def messages_text(stored: list[dict]) -> str:
    return " ".join(message_text(m) for m in stored)
