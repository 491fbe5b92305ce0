"""Input rules every endpoint shares: strict objects, sane timestamps, batch envelopes."""

from collections.abc import Mapping
from datetime import datetime, timedelta

from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from drf_spectacular.extensions import OpenApiSerializerExtension, OpenApiSerializerFieldExtension
from rest_framework import serializers

from crm.clock import EARLIEST_DATE, is_before_earliest

MAX_BATCH_ITEMS = 1000
# A client clock a little ahead is normal; further ahead is a bug or a unit mix-up (ms for s).
FUTURE_TOLERANCE = timedelta(minutes=5)


def moment_problem(value: datetime, *, now: datetime) -> str | None:
    """Why a timestamp from a client cannot be right, or None."""
    if value.tzinfo is None or value.utcoffset() is None:
        return _("Give a time zone offset (e.g. 2026-11-23T09:30:00+08:00 or …Z).")
    if value > now + FUTURE_TOLERANCE:
        return _("Is more than 5 minutes in the future.")
    if is_before_earliest(value):
        return _("Is before %(earliest)s: give a time from %(earliest)s on.") % {
            "earliest": EARLIEST_DATE.isoformat()
        }
    return None


def parse_moment(value, *, now: datetime) -> datetime:
    """An ISO 8601 timestamp with an offset, within the sane range; ValueError with the reason otherwise."""
    if not isinstance(value, str) or len(value) > 40:
        raise ValueError(_("Expected an ISO 8601 timestamp string."))
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(_("Not an ISO 8601 timestamp: %(value)s.") % {"value": value[:40]})
    problem = moment_problem(moment, now=now)
    if problem:
        raise ValueError(problem)
    return moment


def text_problem(value: str) -> str | None:
    """Characters PostgreSQL cannot store in text: NUL, and lone surrogates (from \\ud800-style escapes)."""
    if "\x00" in value:
        return _("Null characters are not allowed.")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return _("Contains an unpaired surrogate escape; send valid UTF-8 text.")
    return None


class MomentField(serializers.DateTimeField):
    """A timestamp that carries its offset and is neither absurdly old nor in the future."""

    def to_internal_value(self, value):
        if not isinstance(value, str):
            self.fail("invalid", format=_("an ISO 8601 string"))
        try:
            return parse_moment(value, now=timezone.now())
        except ValueError as exc:
            raise serializers.ValidationError(str(exc))


class TextField(serializers.CharField):
    """A string, not a number DRF would quietly turn into one."""

    default_error_messages = {"not_text": gettext_lazy("Expected a string.")}

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("not_text")
        return super().to_internal_value(data)


class WholeNumberField(serializers.IntegerField):
    """A JSON integer, not a string of digits or a boolean."""

    default_error_messages = {"not_integer": gettext_lazy("Expected a whole number.")}

    def to_internal_value(self, data):
        if type(data) is not int:
            self.fail("not_integer")
        return super().to_internal_value(data)


class StrictSerializer(serializers.Serializer):
    """Refuses fields it does not declare: a typo (`emial`) must not be silently dropped."""

    def to_internal_value(self, data):
        if isinstance(data, Mapping):
            unknown = sorted(str(key) for key in data if key not in self.fields)
            if unknown:
                raise serializers.ValidationError({key: [_("Unknown field.")] for key in unknown})
        return super().to_internal_value(data)


# --- What the OpenAPI schema (drf-spectacular) publishes of these rules ------------------------------
# A schema-driven client or fuzzer (tests/api/test_schema_fuzz.py) learns the constraints the server
# enforces from these; without them, valid-looking requests would be refused with no hint why.


class StrictSerializerSchema(OpenApiSerializerExtension):
    """StrictSerializer refuses unknown keys (400), so its objects are `additionalProperties: false`."""

    target_class = StrictSerializer
    match_subclasses = True

    def map_serializer(self, auto_schema, direction):
        schema = {**auto_schema._map_basic_serializer(self.target, direction), "additionalProperties": False}
        if "__doc__" not in vars(type(self.target)) or type(self.target).__doc__ is None:
            schema.pop(
                "description", None
            )  # StrictSerializer's own docstring, inherited: not about this object
        return schema


class NonBlankTextSchema(OpenApiSerializerFieldExtension):
    """A request string DRF refuses when blank ("This field may not be blank.") has `minLength: 1`."""

    target_class = serializers.CharField
    match_subclasses = True

    def map_serializer_field(self, auto_schema, direction):
        schema = auto_schema._map_serializer_field(self.target, direction, bypass_extensions=True)
        if direction == "request" and not self.target.allow_blank and "minLength" not in schema:
            schema["minLength"] = 1
        return schema


class DecimalStringSchema(OpenApiSerializerFieldExtension):
    """Money as a decimal string: at least one digit before the point, and no sign where DRF refuses
    negative values (min_value >= 0). drf-spectacular's pattern would also allow "", "." and "-1"."""

    target_class = serializers.DecimalField
    match_subclasses = True

    def map_serializer_field(self, auto_schema, direction):
        schema = auto_schema._map_serializer_field(self.target, direction, bypass_extensions=True)
        field = self.target
        if schema.get("type") != "string" or field.max_digits is None or field.decimal_places is None:
            return schema
        sign = "" if field.min_value is not None and field.min_value >= 0 else "-?"
        whole, places = field.max_digits - field.decimal_places, field.decimal_places
        fraction = rf"(?:\.\d{{1,{places}}})?" if places else ""
        return {**schema, "pattern": rf"^{sign}\d{{1,{max(whole, 1)}}}{fraction}$"}


def batch_items(data, *, key: str) -> list:
    """The list of items of a batch body `{key: [...]}`; ValidationError (400) for the envelope itself."""
    if not isinstance(data, Mapping):
        raise serializers.ValidationError({"non_field_errors": [_("Expected a JSON object.")]})
    unknown = sorted(str(k) for k in data if k != key)
    if unknown:
        raise serializers.ValidationError({k: [_("Unknown field.")] for k in unknown})
    if key not in data:
        raise serializers.ValidationError({key: [_("This field is required.")]})
    items = data[key]
    if not isinstance(items, list):
        raise serializers.ValidationError({key: [_("Expected a list of objects.")]})
    if len(items) > MAX_BATCH_ITEMS:
        raise serializers.ValidationError(
            {
                key: [
                    _("At most %(limit)d items per request; this one has %(count)d. Split it.")
                    % {"limit": MAX_BATCH_ITEMS, "count": len(items)}
                ]
            }
        )
    return items
