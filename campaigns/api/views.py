"""The send API: POST /api/v1/messages/ (scope messages:send) and GET /api/v1/messages/{id}/ (scope
messages:read for the messages sent with the same key, messages:read_all for any message), with API keys.
Thin: shape checks here, the rest in campaigns.services.sending."""

from __future__ import annotations

from django.contrib.auth.models import AnonymousUser
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from campaigns.api import serializers as s
from campaigns.models import Message
from campaigns.models.outbox import MessageSource
from campaigns.reasons import reason_text
from campaigns.services.sending import SendRefused, message_send_api, payload_fingerprint
from crm.api.authentication import ApiKeyAuthentication, HasScope
from crm.api.errors import NON_FIELD
from crm.api.parsers import JSONParser
from crm.api.serializers import CustomerRefSerializer
from crm.models import ApiKey
from loyalty.api.serializers import CodedErrorsOut


def _errors(description) -> OpenApiResponse:
    return OpenApiResponse(CodedErrorsOut, description=description)


KEY_ERRORS = {
    401: _errors(gettext_lazy("Missing or invalid API key.")),
}


def _refused(exc: SendRefused) -> Response:
    return Response(
        {"errors": [{"field": exc.field or NON_FIELD, "code": exc.code, "message": str(exc.message)}]},
        status=exc.status,
    )


def _accepted(message: Message, *, template_code: str, replayed: bool) -> dict:
    return {
        "id": message.pk,
        "status": message.status,
        "channel": message.channel,
        "purpose": message.purpose,
        "customer_id": message.customer_id,
        "template": template_code,
        "replayed": replayed,
        "created_at": message.created_at,
    }


class MessagesApiView(APIView):
    authentication_classes = [ApiKeyAuthentication]
    permission_classes = [HasScope]
    parser_classes = [JSONParser]
    renderer_classes = [JSONRenderer]

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        # As crm's ApiView does: django-simple-history reads the Django request's user to attribute the
        # rows the pipeline writes in this request (DeliverySettings created on first use); an API key
        # is not a user and would fail as a foreign key.
        request._request.user = AnonymousUser()


class MessageSendView(MessagesApiView):
    required_scopes = {"POST": ApiKey.Scope.MESSAGES_SEND}

    @extend_schema(
        tags=["messages"],
        summary=gettext_lazy("Send one message through the delivery pipeline (idempotent on its key)"),
        description=gettext_lazy(
            "The message is queued and goes out through consent, suppression, caps (marketing) and quiet "
            "hours (marketing) like every other; GET /messages/{id}/ tells what became of it. 201 for a "
            "new message, 200 for a repeat of the same request."
        ),
        request=s.MessageSendSerializer,
        responses={
            201: s.MessageAcceptedOut,
            200: s.MessageAcceptedOut,
            400: _errors(
                gettext_lazy(
                    "Bad input, one error per field (codes template_not_found, no_template_for_channel, "
                    "template_empty for a template that cannot be used)."
                )
            ),
            403: _errors(gettext_lazy("The key lacks the messages:send scope.")),
            404: _errors(gettext_lazy("No customer matches (field customer, code customer_not_found).")),
            409: _errors(
                gettext_lazy("The idempotency key was used for another request (code idempotency_conflict).")
            ),
            413: _errors(gettext_lazy("Body larger than the upload limit.")),
            415: _errors(gettext_lazy("The body is not application/json.")),
            **KEY_ERRORS,
        },
    )
    def post(self, request):
        data = s.MessageSendSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        customer = dict(v["customer"])
        if "identities" in customer:
            customer["identities"] = [dict(i) for i in customer["identities"]]
        fingerprint = payload_fingerprint(
            {
                "customer": customer,
                "channel": v["channel"],
                "template": v["template"],
                "data": v["data"],
                "purpose": v.get("purpose"),
                "priority": v["priority"],
            }
        )
        try:
            result = message_send_api(
                source_ref=request.auth.prefix,
                idempotency_key=v["idempotency_key"],
                customer=CustomerRefSerializer.to_ref(v["customer"]),
                channel=v["channel"],
                template_code=v["template"],
                data=v["data"],
                purpose=v.get("purpose"),
                priority=v["priority"],
                fingerprint=fingerprint,
                now=timezone.now(),
            )
        except SendRefused as exc:
            return _refused(exc)
        body = s.MessageAcceptedOut(
            _accepted(result.message, template_code=v["template"], replayed=not result.created)
        ).data
        return Response(body, status=status.HTTP_201_CREATED if result.created else status.HTTP_200_OK)


def _history(message: Message) -> list[dict]:
    changes = []
    for entry in message.history or []:
        if not isinstance(entry, dict):
            continue
        code = str(entry.get("reason") or "")
        changes.append(
            {
                "status": entry.get("status", ""),
                "at": str(entry.get("at", "")),
                "reason": code,
                "reason_text": reason_text(code, entry.get("params") or {}),
            }
        )
    return changes


class MessageDetailView(MessagesApiView):
    # messages:read is the least a reader needs; which messages it may see is decided in get().
    required_scopes = {"GET": ApiKey.Scope.MESSAGES_READ}

    @extend_schema(
        tags=["messages"],
        summary=gettext_lazy("One message: its status, every change of it, and why it was not sent"),
        description=gettext_lazy(
            "A key with the scope messages:read reads the messages sent with it through this API; a key "
            "that also has messages:read_all reads any message (campaigns, journeys, notices, other keys). "
            "Another key's message answers 404, as a message that does not exist does."
        ),
        responses={
            200: s.MessageOut,
            403: _errors(gettext_lazy("The key lacks the messages:read scope.")),
            404: _errors(gettext_lazy("No message with this id that this key may read.")),
            **KEY_ERRORS,
        },
    )
    def get(self, request, pk: int):
        messages = Message.objects.select_related("template").filter(pk=pk)
        if ApiKey.Scope.MESSAGES_READ_ALL not in request.auth.scopes:
            # 404, not 403: a key must not learn which ids exist among messages it may not read.
            messages = messages.filter(source_kind=MessageSource.API, source_ref=request.auth.prefix)
        message = messages.first()
        if message is None:
            return Response(
                {
                    "errors": [
                        {
                            "field": NON_FIELD,
                            "code": "not_found",
                            "message": _("No message with id %(id)s.") % {"id": pk},
                        }
                    ]
                },
                status=status.HTTP_404_NOT_FOUND,
            )
        body = {
            "id": message.pk,
            "status": message.status,
            "channel": message.channel,
            "purpose": message.purpose,
            "customer_id": message.customer_id,
            "template": message.template.code,
            "source_kind": message.source_kind,
            "reason": message.reason,
            "reason_text": reason_text(message.reason, message.reason_params),
            "created_at": message.created_at,
            "due_at": message.due_at,
            "sent_at": message.sent_at,
            "delivered_at": message.delivered_at,
            "opened_at": message.opened_at,
            "clicked_at": message.clicked_at,
            "history": _history(message),
        }
        return Response(s.MessageOut(body).data)
