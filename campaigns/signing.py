"""Signed tokens for the links a message carries: unsubscribe, open pixel and click redirect.

One salt per purpose (django.core.signing), so a token for one purpose is refused by every other: an
open-pixel token cannot unsubscribe anyone and a click token cannot be replayed as a pixel. Tokens must
be short enough for an SMS (a 70-character Chinese SMS has no room for a 60-character link), so the
message id is written in base 62 and the HMAC-SHA256 is cut to 16 base-64 characters (96 bits): a
forger still has to guess one value in 2**96 per try, and every try is a request we answer with 404.

Tokens do not expire: an unsubscribe link must keep working for as long as the message sits in an inbox
(years), and a pixel or click after months is still an open or a click. SECRET_KEY_FALLBACKS keep old
links valid across a key rotation.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from django.core import signing
from django.utils.encoding import force_bytes

SIGNATURE_LENGTH = 16
_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_MAX_ID = 2**63 - 1
_MAX_LINK = 999

UNSUBSCRIBE = "campaigns.unsubscribe"
OPEN = "campaigns.open"
CLICK = "campaigns.click"


class BadToken(ValueError):
    """A token that was not made by us for this purpose (forged, truncated, another purpose's)."""


class _ShortSigner(signing.Signer):
    # Signer.unsign compares (in constant time) against signature() for the current key and each
    # fallback, so cutting the signature here is enough for both directions.
    def signature(self, value, key=None):
        return super().signature(value, key)[:SIGNATURE_LENGTH]


_SIGNERS: dict[tuple, _ShortSigner] = {}


def _signer(purpose: str) -> _ShortSigner:
    # One signer per purpose and key set: tracked_content signs a dozen links per message on the send
    # path, and building a Signer reads settings each time. Keyed by the keys, so a rotation (or a test's
    # override) gets a new one.
    keys = (settings.SECRET_KEY, tuple(getattr(settings, "SECRET_KEY_FALLBACKS", ())))
    signer = _SIGNERS.get((purpose, keys))
    if signer is None:
        if len(_SIGNERS) > 32:
            _SIGNERS.clear()
        signer = _SIGNERS[(purpose, keys)] = _ShortSigner(salt=purpose, sep=".", algorithm="sha256")
    return signer


# Signing on the send path: the same tokens _ShortSigner makes (Django's salted HMAC-SHA256 of the value,
# cut to 16 base-64 characters), without Signer's per-call work: the derived key is computed once per
# purpose and secret, and each signature is one call of OpenSSL's one-shot hmac.digest. 16 base-64
# characters are exactly the first 12 bytes of the digest, so only those are encoded. A marketing email
# signs a dozen links (see BENCHMARKS.md, tracked_content). Verifying stays with the Signer above, which
# also tries SECRET_KEY_FALLBACKS.
_SIGNATURE_BYTES = SIGNATURE_LENGTH * 6 // 8
_KEYS: dict[tuple, bytes] = {}


def _key(purpose: str) -> bytes:
    secret = settings.SECRET_KEY
    key = _KEYS.get((purpose, secret))
    if key is None:
        if len(_KEYS) > 32:
            _KEYS.clear()
        # django.utils.crypto.salted_hmac's derived key, with Signer's salt (its salt + "signer").
        key = _KEYS[(purpose, secret)] = hashlib.sha256(
            f"{purpose}signer".encode() + force_bytes(secret)
        ).digest()
    return key


def _sign(purpose: str, value: str) -> str:
    return _signed(_key(purpose), value)


def _signed(key: bytes, value: str) -> str:
    digest = hmac.digest(key, value.encode(), "sha256")
    return f"{value}.{base64.urlsafe_b64encode(digest[:_SIGNATURE_BYTES]).decode()}"


def _b62(number: int) -> str:
    if 0 <= number < 62:  # a link index, nearly always
        return _ALPHABET[number]
    if number < 0:
        raise ValueError("negative")
    digits = []
    while True:
        number, rest = divmod(number, 62)
        digits.append(_ALPHABET[rest])
        if not number:
            return "".join(reversed(digits))


def _from_b62(text: str) -> int:
    if not text or len(text) > 11:
        raise BadToken("bad number")
    number = 0
    for char in text:
        position = _ALPHABET.find(char)
        if position < 0:
            raise BadToken("bad number")
        number = number * 62 + position
    if number > _MAX_ID:
        raise BadToken("number out of range")
    return number


def _unsign(purpose: str, token: str) -> str:
    if not isinstance(token, str) or not token or len(token) > 64:
        raise BadToken("malformed")
    try:
        return _signer(purpose).unsign(token)
    except signing.BadSignature as exc:
        raise BadToken(str(exc)) from exc


def unsubscribe_token(message_id: int) -> str:
    return _sign(UNSUBSCRIBE, _b62(message_id))


def unsubscribe_token_read(token: str) -> int:
    """The message id of an unsubscribe token; BadToken if it is not one."""
    return _from_b62(_unsign(UNSUBSCRIBE, token))


def open_token(message_id: int) -> str:
    return _sign(OPEN, _b62(message_id))


def open_token_read(token: str) -> int:
    return _from_b62(_unsign(OPEN, token))


@dataclass(frozen=True, slots=True)
class ClickRef:
    message_id: int
    link: int  # the position of the URL in Message.links


def click_token(message_id: int, link: int) -> str:
    if not 0 <= link <= _MAX_LINK:
        raise ValueError(f"link index {link} out of range")
    return _sign(CLICK, f"{_b62(message_id)}-{_b62(link)}")


def click_token_maker(message_id: int) -> Callable[[int], str]:
    """`click_token(message_id, link)` as a function of the link alone, for one message's many links: the
    key and the message id's base 62 are worked out once."""
    key, prefix = _key(CLICK), f"{_b62(message_id)}-"

    def token(link: int) -> str:
        if not 0 <= link <= _MAX_LINK:
            raise ValueError(f"link index {link} out of range")
        return _signed(key, prefix + _b62(link))

    return token


def click_token_read(token: str) -> ClickRef:
    value = _unsign(CLICK, token)
    message, sep, link = value.partition("-")
    if not sep:
        raise BadToken("no link index")
    ref = ClickRef(message_id=_from_b62(message), link=_from_b62(link))
    if ref.link > _MAX_LINK:
        raise BadToken("link index out of range")
    return ref
