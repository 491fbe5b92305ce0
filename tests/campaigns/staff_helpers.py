"""Messages and staff users for the tests of the staff pages (campaigns/admin/, campaigns/selectors.py)."""

from __future__ import annotations

import itertools

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.utils import timezone

from campaigns.models import Message, MessageTemplate

_numbers = itertools.count(1)


def template(channel: str = "sms") -> MessageTemplate:
    return MessageTemplate.objects.get_or_create(
        code=f"staff-{channel}", defaults={"name": f"Staff {channel}", "channel": channel}
    )[0]


def message(customer, **fields) -> Message:
    """A message as the pipeline leaves it: `status`, `reason` and times given by the test."""
    now = fields.pop("now", None) or timezone.now()
    n = next(_numbers)
    values = {
        "channel": "sms",
        "purpose": "marketing",
        "source_kind": "campaign",
        "source_ref": "c-1",
        "occurrence": f"o-{n}",
        "source_label": "双11大促",
        "status": "sent",
        "due_at": now,
        "created_at": now,
        **fields,
    }
    values.setdefault("template", template(values["channel"]))
    if values["status"] in ("sent", "delivered", "opened", "clicked"):
        values.setdefault("sent_at", values["created_at"])
    if values["status"] in ("failed", "suppressed", "cancelled", "unknown"):
        values.setdefault("finished_at", values["created_at"])
    return Message.objects.create(customer=customer, **values)


def staff_user(*roles: str, username: str | None = None):
    user = get_user_model().objects.create_user(
        username or "-".join(roles) or "nobody", password="pw-123456-x", is_staff=True
    )
    for role in roles:
        user.groups.add(Group.objects.get(name=role))
    return user
