"""Where a consent decision came from, as the code writers store and the words a person reads.

Writers store a code (`signup`, `erasure`, `admin`, `csv`, `api:<key prefix>`, `staff:<user id>`); a
staff member recording consent by hand types their own words ("phone call"), shown as typed."""

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
    label = CONSENT_SOURCES.get(source)
    return str(label) if label is not None else source
