"""The API's JSON parser: strict, size-limited, and with errors a client can act on."""

import json
import math

from django.conf import settings
from django.utils.translation import gettext as _
from rest_framework import exceptions, parsers, renderers

from crm.api.errors import PayloadTooLarge


def _reject_constant(name: str):
    raise ValueError(_("%(name)s is not valid JSON") % {"name": name})


def _finite_float(text: str) -> float:
    value = float(text)
    # 1e999 parses to infinity, which PostgreSQL's jsonb and numeric columns refuse.
    if math.isinf(value):
        raise ValueError(_("number %(text)s is out of range") % {"text": text})
    return value


def json_loads(body: bytes):
    """Parse a request body; ParseError (400) with the position of the mistake when it is not JSON."""
    try:
        return json.loads(body, parse_constant=_reject_constant, parse_float=_finite_float)
    except RecursionError:
        raise exceptions.ParseError(_("Malformed JSON: nested too deeply."))
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise exceptions.ParseError(_("Malformed JSON: %(error)s.") % {"error": exc})


class JSONParser(parsers.BaseParser):
    """Like DRF's JSONParser, but it enforces DATA_UPLOAD_MAX_MEMORY_SIZE (DRF reads the raw stream and
    so bypasses Django's check), refuses NaN/Infinity, and answers 413 for a body over the limit."""

    media_type = "application/json"
    renderer_class = renderers.JSONRenderer

    def parse(self, stream, media_type=None, parser_context=None):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if limit is None:
            return json_loads(stream.read())
        request = (parser_context or {}).get("request")
        if request is not None:
            try:
                declared = int(request.META.get("CONTENT_LENGTH") or 0)
            except ValueError:
                declared = 0
            if declared > limit:
                raise PayloadTooLarge.for_limit()  # refuse before reading a byte of it
        body = stream.read(limit + 1)
        if len(body) > limit:
            raise PayloadTooLarge.for_limit()
        return json_loads(body)
