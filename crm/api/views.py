"""The ingestion API under /api/v1/: thin views that check the shape of a request and call crm.services.

Batches store every good item and report every bad one as {"index", "field", "message"}: 200 when all
items were accepted, 207 when some were not. A body that is not a batch at all is a 400.
"""

from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import ValidationError as DjangoValidationError
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import exceptions, status
from rest_framework.renderers import BrowsableAPIRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from crm.api.authentication import HasScope
from crm.api.errors import Conflict, errors_from_detail, errors_from_django
from crm.api.event_input import parse_events
from crm.api.fields import batch_items
from crm.api.parsers import JSONParser
from crm.api.renderers import JSONRenderer
from crm.api.serializers import (
    CustomerBatchInSerializer,
    CustomerBatchOutSerializer,
    CustomerInSerializer,
    CustomerOutSerializer,
    CustomerRefSerializer,
    CustomerUpsertOutSerializer,
    ErrorsSerializer,
    EventBatchInSerializer,
    EventBatchOutSerializer,
    OrderBatchInSerializer,
    OrderBatchOutSerializer,
    OrderInSerializer,
    OrderOutSerializer,
    RefundInSerializer,
    RefundOutSerializer,
)
from crm.models import ApiKey, Customer, CustomerMerge
from crm.services.events import customer_ingest, events_ingest, orders_with_customers_ingest
from crm.services.orders import OrderConflict, OrderNotFound, RefundRejected
from crm.services.refunds import refund_apply

ERRORS = OpenApiResponse(
    ErrorsSerializer, description=gettext_lazy("Bad input: {errors: [{index?, field, message}]}")
)
COMMON_ERRORS = {
    400: ERRORS,
    401: OpenApiResponse(ErrorsSerializer, description=gettext_lazy("Missing or invalid API key.")),
    403: OpenApiResponse(ErrorsSerializer, description=gettext_lazy("The key lacks the scope.")),
    413: OpenApiResponse(ErrorsSerializer, description=gettext_lazy("Body larger than the upload limit.")),
    415: OpenApiResponse(ErrorsSerializer, description=gettext_lazy("The body is not application/json.")),
}


def _batch_status(errors: list) -> int:
    return status.HTTP_207_MULTI_STATUS if errors else status.HTTP_200_OK


class ApiView(APIView):
    parser_classes = [JSONParser]
    renderer_classes = [JSONRenderer, BrowsableAPIRenderer]
    permission_classes = [HasScope]
    required_scopes: dict[str, str] = {}

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        if isinstance(request.auth, ApiKey):
            # DRF copies the authenticated principal onto the Django request, where django-simple-history
            # reads it to attribute changes; an API key is not a user and would fail as a foreign key.
            request._request.user = AnonymousUser()

    def source(self) -> str:
        """What identities and consents created by this request record as their source."""
        if isinstance(self.request.auth, ApiKey):
            return f"api:{self.request.auth.prefix}"
        return f"staff:{self.request.user.pk}"

    def actor(self):
        """The staff user behind the request, for audit fields; None for an API key."""
        return None if isinstance(self.request.auth, ApiKey) else self.request.user


# --- Customers ---------------------------------------------------------------------------------------


def _upsert_out(result) -> dict:
    return {
        "id": result.customer.pk,
        "created": result.created,
        "merged_ids": result.merged_customer_ids,
        "changed_fields": result.changed_fields,
    }


class CustomerUpsertView(ApiView):
    required_scopes = {"POST": ApiKey.Scope.CUSTOMERS_WRITE}

    @extend_schema(
        tags=["customers"],
        summary=gettext_lazy("Create or update one customer by its identifiers"),
        description=gettext_lazy(
            "Identifiers (external_id, email, phone, identities) find the customer or create one; "
            "identifiers of several customers merge them into the oldest. Consents and tags are recorded "
            "with it, all or nothing."
        ),
        request=CustomerInSerializer,
        responses={200: CustomerUpsertOutSerializer, 201: CustomerUpsertOutSerializer, **COMMON_ERRORS},
    )
    def post(self, request):
        serializer = CustomerInSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        result = customer_ingest(
            **CustomerInSerializer.to_kwargs(serializer.validated_data),
            source=self.source(),
            performed_by=self.actor(),
        )
        return Response(
            _upsert_out(result), status=status.HTTP_201_CREATED if result.created else status.HTTP_200_OK
        )


class CustomerBatchView(ApiView):
    required_scopes = {"POST": ApiKey.Scope.CUSTOMERS_WRITE}

    @extend_schema(
        tags=["customers"],
        summary=gettext_lazy("Create or update up to 1,000 customers"),
        description=gettext_lazy(
            "Each customer is handled as by POST /customers/, on its own: good ones are stored, bad "
            "ones are reported by index and field (207)."
        ),
        request=CustomerBatchInSerializer,
        responses={200: CustomerBatchOutSerializer, 207: CustomerBatchOutSerializer, **COMMON_ERRORS},
    )
    def post(self, request):
        items = batch_items(request.data, key="customers")
        results, errors = [], []
        for index, raw in enumerate(items):
            serializer = CustomerInSerializer(data=raw)
            if not serializer.is_valid():
                errors += errors_from_detail(serializer.errors, index=index)
                continue
            try:
                result = customer_ingest(
                    **CustomerInSerializer.to_kwargs(serializer.validated_data),
                    source=self.source(),
                    performed_by=self.actor(),
                )
            except DjangoValidationError as exc:
                errors += errors_from_django(exc, index=index)
                continue
            results.append({"index": index, **_upsert_out(result)})
        body = {
            "accepted": len(results),
            "rejected": len(items) - len(results),
            "results": results,
            "errors": errors,
        }
        return Response(body, status=_batch_status(errors))


class CustomerDetailView(ApiView):
    required_scopes = {"GET": ApiKey.Scope.CUSTOMERS_READ}

    @extend_schema(
        tags=["customers"],
        summary=gettext_lazy("One customer with identities, consents and tags"),
        responses={200: CustomerOutSerializer, 401: COMMON_ERRORS[401], 403: COMMON_ERRORS[403], 404: ERRORS},
    )
    def get(self, request, pk: int):
        customer = (
            Customer.objects.prefetch_related("identities", "consents", "customer_tags__tag")
            .filter(pk=pk)
            .first()
        )
        if customer is None:
            survivor = (
                CustomerMerge.objects.filter(merged_customer_id=pk)
                .values_list("survivor_id", flat=True)
                .first()
            )
            if survivor:
                raise exceptions.NotFound(
                    _("Customer %(id)s was merged into customer %(survivor)s.")
                    % {"id": pk, "survivor": survivor}
                )
            raise exceptions.NotFound(_("No customer with id %(id)s.") % {"id": pk})
        return Response(CustomerOutSerializer(customer).data)


# --- Events ------------------------------------------------------------------------------------------


class EventBatchView(ApiView):
    required_scopes = {"POST": ApiKey.Scope.EVENTS_WRITE}

    @extend_schema(
        tags=["events"],
        summary=gettext_lazy("Record up to 1,000 behaviour events"),
        description=gettext_lazy(
            "Events whose external_id is already stored are skipped and counted as duplicates. "
            "Customers are found by id or identifiers; identifiers nobody has yet create a prospect."
        ),
        request=EventBatchInSerializer,
        responses={200: EventBatchOutSerializer, 207: EventBatchOutSerializer, **COMMON_ERRORS},
    )
    def post(self, request):
        raw_items = batch_items(request.data, key="events")
        parsed = parse_events(raw_items, now=timezone.now())
        result = events_ingest(items=parsed.items, source=self.source())
        positions = parsed.positions
        errors = parsed.errors + [
            {"index": positions[e.index], "field": e.field, "message": e.message} for e in result.errors
        ]
        errors.sort(key=lambda e: e["index"])
        body = {
            "accepted": result.inserted,
            "duplicates": len(result.duplicates),
            "rejected": len({e["index"] for e in errors}),
            "customers_created": result.customers_created,
            "customers_merged": result.customers_merged,
            "duplicate_indexes": [positions[i] for i in result.duplicates],
            "errors": errors,
        }
        return Response(body, status=_batch_status(errors))


# --- Orders ------------------------------------------------------------------------------------------


class OrderView(ApiView):
    required_scopes = {"POST": ApiKey.Scope.ORDERS_WRITE}

    @extend_schema(
        tags=["orders"],
        summary=gettext_lazy("Record one paid order (idempotent on external_id)"),
        description=gettext_lazy(
            "A repeat of a stored order changes nothing (200, outcome unchanged); the same "
            "external_id with a different payload is refused with 409."
        ),
        request=OrderInSerializer,
        responses={
            200: OrderOutSerializer,
            201: OrderOutSerializer,
            409: OpenApiResponse(
                ErrorsSerializer, description=gettext_lazy("Another order is stored under this id.")
            ),
            **COMMON_ERRORS,
        },
    )
    def post(self, request):
        serializer = OrderInSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        order = OrderInSerializer.to_input(serializer.validated_data)
        ref = CustomerRefSerializer.to_ref(serializer.validated_data["customer"])
        result, customer_of = orders_with_customers_ingest(items=[(order, ref)], source=self.source())
        if result.errors:
            if any(e.code == "conflict" for e in result.errors):
                raise Conflict(" ".join(e.message for e in result.errors))
            return Response(
                {"errors": [{"field": e.field, "message": e.message} for e in result.errors]},
                status=status.HTTP_400_BAD_REQUEST,
            )
        created = order.external_id in result.created
        body = {
            "external_id": order.external_id,
            "outcome": "created" if created else "unchanged",
            "customer_id": customer_of[0],
        }
        return Response(body, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


class OrderBatchView(ApiView):
    required_scopes = {"POST": ApiKey.Scope.ORDERS_WRITE}

    @extend_schema(
        tags=["orders"],
        summary=gettext_lazy("Record up to 1,000 paid orders"),
        description=gettext_lazy("Each order as by POST /orders/; a conflicting repeat is a per-item error."),
        request=OrderBatchInSerializer,
        responses={200: OrderBatchOutSerializer, 207: OrderBatchOutSerializer, **COMMON_ERRORS},
    )
    def post(self, request):
        items = batch_items(request.data, key="orders")
        errors, valid, first_index = [], [], {}
        for index, raw in enumerate(items):
            serializer = OrderInSerializer(data=raw)
            if not serializer.is_valid():
                errors += errors_from_detail(serializer.errors, index=index)
                continue
            order = OrderInSerializer.to_input(serializer.validated_data)
            if order.external_id in first_index:
                message = _("Repeats the order at index %(index)d of this batch.") % {
                    "index": first_index[order.external_id]
                }
                errors.append({"index": index, "field": "external_id", "message": message})
                continue
            first_index[order.external_id] = index
            valid.append((index, order, CustomerRefSerializer.to_ref(serializer.validated_data["customer"])))

        result, customer_of = orders_with_customers_ingest(
            items=[(order, ref) for _index, order, ref in valid], source=self.source()
        )
        errors += [
            {"index": valid[e.index][0], "field": e.field, "message": e.message} for e in result.errors
        ]
        errors.sort(key=lambda e: e["index"])
        created = set(result.created)
        results = [
            {
                "index": index,
                "external_id": order.external_id,
                "outcome": "created" if order.external_id in created else "unchanged",
                "customer_id": customer_of[position],
            }
            for position, (index, order, _ref) in enumerate(valid)
            if position in customer_of
        ]
        body = {
            "accepted": len(results),
            "created": sum(r["outcome"] == "created" for r in results),
            "unchanged": sum(r["outcome"] == "unchanged" for r in results),
            "rejected": len(items) - len(results),
            "customers_created": result.customers_created,
            "results": results,
            "errors": errors,
        }
        return Response(body, status=_batch_status(errors))


class RefundView(ApiView):
    required_scopes = {"POST": ApiKey.Scope.ORDERS_WRITE}

    @extend_schema(
        tags=["orders"],
        summary=gettext_lazy("Refund (part of) an order (idempotent on the refund's external_id)"),
        request=RefundInSerializer,
        responses={
            200: RefundOutSerializer,
            201: RefundOutSerializer,
            404: ERRORS,
            409: OpenApiResponse(
                ErrorsSerializer, description=gettext_lazy("Another refund is stored under this id.")
            ),
            **COMMON_ERRORS,
        },
    )
    def post(self, request, order_external_id: str):
        serializer = RefundInSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        try:
            refund = refund_apply(
                order_external_id=order_external_id,
                refund_external_id=data["external_id"],
                amount=data["amount"],
                refunded_at=data["refunded_at"],
                reason=data["reason"],
                lines=[dict(line) for line in data.get("lines", ())],
            )
        except OrderNotFound as exc:
            raise exceptions.NotFound(exc.message)
        except OrderConflict as exc:
            raise Conflict(exc.message)
        except RefundRejected as exc:
            # The service names its own arguments; the request calls the refund id external_id.
            field = "external_id" if exc.field == "refund_external_id" else exc.field
            raise exceptions.ValidationError({field: [exc.message]})
        replayed = getattr(refund, "replayed", False)
        order = refund.order
        body = {
            "order_external_id": order.external_id,
            "refund_external_id": refund.external_id,
            "outcome": "unchanged" if replayed else "created",
            "order_status": order.status,
            "refunded_amount": order.refunded_amount,
        }
        # Through the serializer the schema is made from: money goes out as a decimal string ("50.00"), as
        # everywhere in the API, not as a JSON number.
        return Response(
            RefundOutSerializer(body).data,
            status=status.HTTP_200_OK if replayed else status.HTTP_201_CREATED,
        )
