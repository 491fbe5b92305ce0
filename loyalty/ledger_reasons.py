"""Why a ledger entry was made, as a code the jobs store and a sentence in the reader's language.

Entries written by jobs (accrual, release, expiry, settlement, redemption) store `reason` as
``sys:<code>`` or ``sys:<code>:<parameter>`` and are translated when shown (`reason_text`), so a member
reading in Chinese never sees an English sentence frozen into a row. A staff member's own reason (manual
adjustments, bulk batches) is stored and shown as typed.

Entries written before the codes existed hold the English sentence; the ledger is append-only (a trigger
refuses updates), so they are recognised by their old wording when shown instead of being rewritten."""

from __future__ import annotations

import re

from django.utils.translation import gettext_lazy as _

PREFIX = "sys:"

# code -> sentence; `%(param)s` is the stored parameter (order number, reward or rule name).
REASONS = {
    "order": _("Order %(param)s"),
    "refund": _("Refund of order %(param)s"),
    "first_order": _("First order bonus"),
    "referee": _("Referral bonus (you were referred)"),
    "referrer": _("Referral bonus (a friend you referred ordered)"),
    "birthday": _("Birthday points"),
    "rule": _("Bonus: %(param)s"),
    "released": _("Points now available"),
    "expired": _("Points expired"),
    "settled": _("Owed points settled from new points"),
    "reward": _("Reward: %(param)s"),
    # A win-back programme's points for a customer it wakes (journeys/services/winback.py).
    "welcome_back": _("Welcome-back bonus"),
}

# The English sentences jobs stored before the codes, by the entry kinds that carried them (a staff
# member's adjustment is never read as one of these, whatever its wording).
_LEGACY = [
    (re.compile(r"^Order (?P<param>.+)$"), "order", {"earn"}),
    (re.compile(r"^Refund of order (?P<param>.+)$"), "refund", {"reverse"}),
    (re.compile(r"^First order bonus$"), "first_order", {"earn"}),
    (re.compile(r"^Referral bonus \(you were referred\)$"), "referee", {"earn"}),
    (re.compile(r"^Referral bonus \(a friend you referred ordered\)$"), "referrer", {"earn"}),
    (re.compile(r"^Birthday points$"), "birthday", {"earn"}),
    (re.compile(r"^Points now available$"), "released", {"release"}),
    (re.compile(r"^Points expired$"), "expired", {"expire"}),
    (re.compile(r"^Owed points settled from new points$"), "settled", {"settle"}),
    (re.compile(r"^Reward: (?P<param>.+)$"), "reward", {"redeem"}),
]


def reason_code(code: str, param: str = "") -> str:
    """What a job stores in LedgerEntry.reason (at most 300 characters)."""
    if code not in REASONS:
        raise ValueError(f"unknown ledger reason {code!r}; known: {', '.join(REASONS)}")
    return (f"{PREFIX}{code}:{param}" if param else f"{PREFIX}{code}")[:300]


def _sentence(code: str, param: str) -> str:
    template = str(REASONS[code])  # translated into the active language here
    return template % {"param": param} if "%(param)s" in template else template


def reason_text(stored: str, *, kind: str = "") -> str:
    """The stored reason in the active language: a code translated, a job's legacy sentence (for an entry
    of `kind`) recognised and translated, anything else (a staff member's words) as it is."""
    if not stored:
        return ""
    if stored.startswith(PREFIX):
        code, _sep, param = stored[len(PREFIX) :].partition(":")
        return _sentence(code, param) if code in REASONS else stored
    for pattern, code, kinds in _LEGACY:
        match = pattern.match(stored) if kind in kinds else None
        if match:
            return _sentence(code, match.groupdict().get("param", ""))
    return stored
