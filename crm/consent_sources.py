"""Where a consent decision came from, as the code writers store and the words a person reads.

Writers store a code (`signup`, `erasure`, `admin`, `csv`, `api:<key prefix>`, `staff:<user id>`); a
staff member recording consent by hand types their own words ("phone call"), shown as typed. The delivery
pipeline withdraws consent in answer to a message and names it: `unsubscribe:<message id>` (the
customer's unsubscribe link or reply), `bounce:<id>`, `complaint:<id>` (marked as spam),
`not_subscribed:<id>` (the provider says the customer is not subscribed: WeChat 43004/43101)."""

from __future__ import annotations

from django.utils.translation import gettext_lazy as _

CONSENT_SOURCES = {
    "signup": _("sign-up form"),
    "erasure": _("personal data erasure"),
    "admin": _("admin"),
    "csv": _("CSV import"),
    "import": _("CSV import"),
    "api": _("API"),
}
# `<kind>:<message id>`: consent withdrawn in answer to a message the pipeline sent.
MESSAGE_CONSENT_SOURCES = {
    "unsubscribe": _("unsubscribe link of message #%(id)s"),
    "bounce": _("bounce of message #%(id)s"),
    "complaint": _("spam complaint about message #%(id)s"),
    "not_subscribed": _("provider: not subscribed (message #%(id)s)"),
}
# Codes stored before they were codes: the demo data's English words.
_LEGACY = {"demo sign-up": "signup"}


def consent_source_text(source: str) -> str:
    if not source:
        return ""
    source = _LEGACY.get(source, source)
    kind, sep, detail = source.partition(":")
    if sep and kind == "api":
        return str(_("API key %(prefix)s")) % {"prefix": detail}
    if sep and kind == "staff":
        return str(_("staff member #%(id)s")) % {"id": detail}
    if sep and kind in MESSAGE_CONSENT_SOURCES:
        return str(MESSAGE_CONSENT_SOURCES[kind]) % {"id": detail}
    label = CONSENT_SOURCES.get(source)
    return str(label) if label is not None else source
