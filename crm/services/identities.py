"""Normalising identifiers so that the same person written two ways is found as one."""

import re

from django.core.exceptions import ValidationError
from django.utils.translation import gettext as _

from crm.models import IdentityKind, identity_kind_validator

_PHONE_JUNK = re.compile(r"[\s\-().]")


def normalise_phone(value: str) -> str:
    """Strip separators; a Chinese mobile written with +86 or 0086 keeps its country code as +86."""
    phone = _PHONE_JUNK.sub("", value or "")
    if phone.startswith("00"):
        phone = "+" + phone[2:]
    if re.fullmatch(r"1[3-9]\d{9}", phone):
        phone = "+86" + phone
    return phone


def normalise_identity(kind: str, value: str) -> tuple[str, str]:
    """Return (kind, value) in canonical form or raise ValidationError naming what is wrong."""
    kind = (kind or "").strip().lower()
    value = (value or "").strip()
    identity_kind_validator(kind)
    if not value:
        raise ValidationError(_("Identifier value is empty."))
    if len(value) > 200:
        raise ValidationError(_("Identifier value is longer than 200 characters."))
    if kind == IdentityKind.EMAIL:
        value = value.lower()
    elif kind == IdentityKind.PHONE:
        value = normalise_phone(value)
        if not re.fullmatch(r"\+?\d{5,20}", value):
            raise ValidationError(_("%(value)s is not a phone number.") % {"value": value})
    return kind, value
