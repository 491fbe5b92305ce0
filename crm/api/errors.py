"""One error shape for the whole API: {"errors": [{"index"?, "field", "message"}]} with a 4xx status.

`index` is the position of the item in a batch; `field` is a path into the item (or the body), such as
`lines[2].quantity` or `customer.identities[0].value`; `non_field_errors` when no field is to blame.
"""

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import JsonResponse
from django.urls import Resolver404, resolve
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler

NON_FIELD = "non_field_errors"


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = gettext_lazy("The request body is too large.")
    default_code = "payload_too_large"

    @classmethod
    def for_limit(cls) -> "PayloadTooLarge":
        return cls(
            _("The request body is larger than the limit of %(limit)d bytes; send fewer items per request.")
            % {"limit": settings.DATA_UPLOAD_MAX_MEMORY_SIZE}
        )


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = gettext_lazy("The request conflicts with what is already stored.")
    default_code = "conflict"


def _join(prefix: str, key) -> str:
    if isinstance(key, int):
        return f"{prefix}[{key}]"
    if key == NON_FIELD:
        return prefix
    return f"{prefix}.{key}" if prefix else str(key)


def errors_from_detail(detail, *, prefix: str = "", index: int | None = None) -> list[dict]:
    """Flatten DRF's nested error detail (dicts of lists of dicts...) into the API's list of errors."""
    found: list[dict] = []

    def walk(node, path):
        if isinstance(node, dict):
            # DRF's ListField reports the position of a bad child as an int key; a str key is always a
            # field name, even one made of digits ("0", "²", "١"): it is the client's unknown key.
            for key, value in node.items():
                walk(value, _join(path, key))
        elif isinstance(node, list):
            for position, value in enumerate(node):
                if isinstance(value, dict | list):
                    # A list of dicts is one entry per child of a nested list; valid ones are empty.
                    walk(value, _join(path, position) if isinstance(value, dict) else path)
                else:
                    walk(value, path)
        else:
            error = {"field": path or NON_FIELD, "message": str(node)}
            if index is not None:
                error = {"index": index, **error}
            found.append(error)

    walk(detail, prefix)
    return found


def errors_from_django(
    exc: DjangoValidationError, *, prefix: str = "", index: int | None = None
) -> list[dict]:
    if hasattr(exc, "error_dict"):
        return errors_from_detail(exc.message_dict, prefix=prefix, index=index)
    return errors_from_detail(exc.messages, prefix=prefix, index=index)


def api_exception_handler(exc, context):
    # Django raises RequestDataTooBig while reading a body above DATA_UPLOAD_MAX_MEMORY_SIZE; left alone
    # it becomes an HTML 400 from Django's SuspiciousOperation handling, not an answer a client can parse.
    if isinstance(exc, RequestDataTooBig):
        exc = PayloadTooLarge.for_limit()
    if isinstance(exc, DjangoValidationError):
        response = Response({"errors": errors_from_django(exc)}, status=status.HTTP_400_BAD_REQUEST)
        return response
    response = exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        response.data = {"errors": errors_from_detail(exc.detail)}
    elif isinstance(response.data, dict) and "detail" in response.data:
        response.data = {"errors": [{"field": NON_FIELD, "message": str(response.data["detail"])}]}
    return response


def error_response(message: str, *, field: str = NON_FIELD, status_code=status.HTTP_400_BAD_REQUEST):
    return Response({"errors": [{"field": field, "message": message}]}, status=status_code)


@csrf_exempt  # it changes nothing; a CSRF refusal would be an HTML 403 instead of this 404
def api_not_found(request, *args, **kwargs):
    """Every URL under /api/ that names no endpoint (unknown path, an id that is not a number): a 404 in the
    API's error shape, not Django's HTML page. A missing trailing slash is named: a redirect would drop the
    body of a POST."""
    path = request.path
    message = _("No API endpoint at %(path)s.") % {"path": path[:200]}
    if not path.endswith("/"):
        try:
            match = resolve(path + "/")
        except Resolver404:
            match = None
        if match is not None and match.func is not api_not_found:
            message = _("No API endpoint at %(path)s; did you mean %(suggestion)s?") % {
                "path": path[:200],
                "suggestion": path[:200] + "/",
            }
    return JsonResponse({"errors": [{"field": NON_FIELD, "message": message}]}, status=404)
