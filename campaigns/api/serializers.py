"""Input and output shapes of the send API. Inputs refuse unknown fields; the service gets plain values."""

from __future__ import annotations

import json

from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from rest_framework import serializers

from campaigns.models import Channel, MessagePurpose, MessageStatus
from crm.api.fields import StrictSerializer, TextField, WholeNumberField, text_problem
from crm.api.serializers import CustomerRefSerializer

MAX_DATA_BYTES = 16 * 1024
MAX_DATA_DEPTH = 8
CHANNEL_CHOICES = [("best", gettext_lazy("Best available"))] + list(Channel.choices)
PURPOSE_CHOICES = [
    (MessagePurpose.TRANSACTIONAL, MessagePurpose.TRANSACTIONAL.label),
    (MessagePurpose.MARKETING, MessagePurpose.MARKETING.label),
]


def _walk_problem(value, depth: int = 0) -> str | None:
    """Why template data cannot be stored as given (PostgreSQL's jsonb refuses NUL characters)."""
    if depth > MAX_DATA_DEPTH:
        return _("Nested more than %(depth)d levels deep.") % {"depth": MAX_DATA_DEPTH}
    if isinstance(value, str):
        return text_problem(value)
    if isinstance(value, dict):
        for key, item in value.items():
            problem = text_problem(key) or _walk_problem(item, depth + 1)
            if problem:
                return problem
    if isinstance(value, list):
        for item in value:
            problem = _walk_problem(item, depth + 1)
            if problem:
                return problem
    return None


class TemplateDataField(serializers.JSONField):
    """A JSON object of the values the template uses (`{{ order.number }}`), at most 16 KB."""

    default_error_messages = {
        "not_object": gettext_lazy("Expected a JSON object."),
        "too_large": gettext_lazy("Template data is larger than 16 KB."),
    }

    def to_internal_value(self, data):
        if not isinstance(data, dict):
            self.fail("not_object")
        if len(json.dumps(data, ensure_ascii=False).encode()) > MAX_DATA_BYTES:
            self.fail("too_large")
        problem = _walk_problem(data)
        if problem:
            raise serializers.ValidationError(problem)
        return data


class IdempotencyKeyField(TextField):
    def __init__(self, **kwargs):
        # Not trimmed: " k1" and "k1" would silently be one key; a padded key is refused instead.
        super().__init__(trim_whitespace=False, **kwargs)

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        problem = text_problem(value)
        if problem:
            raise serializers.ValidationError(problem)
        if value != value.strip() or not value.isprintable():
            raise serializers.ValidationError(
                _("Use printable characters without leading or trailing spaces.")
            )
        return value


class MessageSendSerializer(StrictSerializer):
    customer = CustomerRefSerializer(
        help_text=gettext_lazy("Who to send to: the customer's id, external_id or identities.")
    )
    channel = serializers.ChoiceField(
        choices=CHANNEL_CHOICES,
        required=False,
        default="best",
        help_text=gettext_lazy(
            "A channel, or best: the customer's preferred channel when they consent to it and have an "
            "address on it, otherwise the first open one of wechat, sms, email, push."
        ),
    )
    template = TextField(
        max_length=64,
        help_text=gettext_lazy(
            "The template's code; its versions for other channels are coded <code>.<channel>."
        ),
    )
    data = TemplateDataField(required=False, default=dict)
    idempotency_key = IdempotencyKeyField(
        max_length=100,
        help_text=gettext_lazy(
            "The caller's key for this message: the same key with the same body returns the same message "
            "(200); with another body, 409 idempotency_conflict."
        ),
    )
    purpose = serializers.ChoiceField(
        choices=PURPOSE_CHOICES,
        required=False,
        help_text=gettext_lazy(
            "Defaults to the template's purpose. Transactional skips caps and quiet hours."
        ),
    )
    priority = WholeNumberField(required=False, default=0, min_value=-100, max_value=100)

    def validate_template(self, value):
        problem = text_problem(value)
        if problem:
            raise serializers.ValidationError(problem)
        return value


class MessageAcceptedOut(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.ChoiceField(choices=MessageStatus.choices)
    channel = serializers.ChoiceField(choices=Channel.choices)
    purpose = serializers.ChoiceField(choices=MessagePurpose.choices)
    customer_id = serializers.IntegerField()
    template = serializers.CharField()
    replayed = serializers.BooleanField(help_text=gettext_lazy("True when the key was seen before."))
    created_at = serializers.DateTimeField()


class StatusChangeOut(serializers.Serializer):
    status = serializers.ChoiceField(choices=MessageStatus.choices)
    at = serializers.CharField(help_text=gettext_lazy("ISO 8601."))
    reason = serializers.CharField(help_text=gettext_lazy("A code; empty when none."))
    reason_text = serializers.CharField(help_text=gettext_lazy("The reason in words (Accept-Language)."))


class MessageOut(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.ChoiceField(choices=MessageStatus.choices)
    channel = serializers.ChoiceField(choices=Channel.choices)
    purpose = serializers.ChoiceField(choices=MessagePurpose.choices)
    customer_id = serializers.IntegerField()
    template = serializers.CharField()
    source_kind = serializers.CharField()
    reason = serializers.CharField(help_text=gettext_lazy("Why it was not sent (a code); empty when sent."))
    reason_text = serializers.CharField()
    created_at = serializers.DateTimeField()
    due_at = serializers.DateTimeField()
    sent_at = serializers.DateTimeField(allow_null=True)
    delivered_at = serializers.DateTimeField(allow_null=True)
    opened_at = serializers.DateTimeField(allow_null=True)
    clicked_at = serializers.DateTimeField(allow_null=True)
    history = StatusChangeOut(many=True)
