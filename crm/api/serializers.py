"""Input and output shapes of the API. Inputs refuse unknown fields; the services get plain values."""

from datetime import date
from decimal import Decimal

from django.core.exceptions import ValidationError as DjangoValidationError
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from rest_framework import serializers

from crm.api.fields import MAX_BATCH_ITEMS, MomentField, StrictSerializer, TextField, WholeNumberField
from crm.models import (
    Channel,
    ConsentChannel,
    ConsentStatus,
    Customer,
    IdentityKind,
    OrderStatus,
    identity_kind_validator,
    validate_time_zone,
)
from crm.services.customers import PROFILE_FIELDS
from crm.services.events import ConsentInput, CustomerRef
from crm.services.identities import normalise_identity
from crm.services.orders import INGEST_STATUSES, OrderInput, OrderLineInput

MAX_IDENTITIES = 20


def _django_errors(exc: DjangoValidationError):
    return serializers.ValidationError(exc.messages)


# --- Shared pieces ----------------------------------------------------------------------------------


class ErrorSerializer(serializers.Serializer):
    index = serializers.IntegerField(
        required=False, help_text=gettext_lazy("Position of the item in the batch.")
    )
    field = serializers.CharField(
        help_text=gettext_lazy("Path of the field at fault, e.g. lines[2].quantity.")
    )
    message = serializers.CharField()


class ErrorsSerializer(serializers.Serializer):
    errors = ErrorSerializer(many=True)


class IdentityInSerializer(StrictSerializer):
    kind = TextField(
        max_length=40,
        help_text=gettext_lazy(
            "email, phone, wechat_openid, wechat_unionid, tmall_buyer_id, jd_buyer_id, app_device_id, "
            "external_id, or channel:<name>."
        ),
    )
    value = TextField(max_length=200)

    def validate_kind(self, value):
        kind = value.strip().lower()
        try:
            identity_kind_validator(kind)
        except DjangoValidationError as exc:
            raise _django_errors(exc)
        return kind

    def validate(self, attrs):
        try:
            attrs["kind"], attrs["value"] = normalise_identity(attrs["kind"], attrs["value"])
        except DjangoValidationError as exc:
            raise serializers.ValidationError({"value": exc.messages})
        return attrs


class CustomerRefSerializer(StrictSerializer):
    """Who the record is about: `id` of an existing customer, or identifiers that find or create one."""

    id = WholeNumberField(required=False, min_value=1, max_value=2**63 - 1)
    external_id = TextField(required=False, max_length=64)
    identities = serializers.ListField(
        child=IdentityInSerializer(), required=False, max_length=MAX_IDENTITIES
    )

    def validate(self, attrs):
        if "id" in attrs and ("external_id" in attrs or attrs.get("identities")):
            raise serializers.ValidationError(_("Give either the customer's id or identifiers, not both."))
        if "id" not in attrs and "external_id" not in attrs and not attrs.get("identities"):
            raise serializers.ValidationError(_("Give the customer's id, external_id or identities."))
        return attrs

    @staticmethod
    def to_ref(data: dict) -> CustomerRef:
        return CustomerRef(
            id=data.get("id"),
            external_id=data.get("external_id"),
            identities=tuple((i["kind"], i["value"]) for i in data.get("identities", ())),
        )


# --- Customers ----------------------------------------------------------------------------------------


class ConsentInSerializer(StrictSerializer):
    channel = serializers.ChoiceField(choices=ConsentChannel.choices)
    status = serializers.ChoiceField(choices=ConsentStatus.choices)
    occurred_at = MomentField(
        required=False, help_text=gettext_lazy("When the customer decided; defaults to now.")
    )
    source = TextField(required=False, allow_blank=True, max_length=100)


class CustomerInSerializer(StrictSerializer):
    external_id = TextField(required=False, max_length=64)
    name = TextField(required=False, allow_blank=True, max_length=200)
    email = serializers.EmailField(required=False, allow_blank=True, max_length=254)
    phone = TextField(required=False, allow_blank=True, max_length=32)
    birthday = serializers.DateField(required=False, allow_null=True)
    gender = serializers.ChoiceField(required=False, allow_blank=True, choices=Customer.Gender.choices)
    city = TextField(required=False, allow_blank=True, max_length=100)
    region = TextField(required=False, allow_blank=True, max_length=100)
    time_zone = TextField(
        required=False, max_length=64, help_text=gettext_lazy("IANA name, e.g. Asia/Shanghai.")
    )
    acquisition_channel = serializers.ChoiceField(required=False, allow_blank=True, choices=Channel.choices)
    utm_source = TextField(required=False, allow_blank=True, max_length=100)
    utm_medium = TextField(required=False, allow_blank=True, max_length=100)
    utm_campaign = TextField(required=False, allow_blank=True, max_length=100)
    identities = serializers.ListField(
        child=IdentityInSerializer(), required=False, max_length=MAX_IDENTITIES
    )
    consents = serializers.ListField(
        child=ConsentInSerializer(), required=False, max_length=len(ConsentChannel)
    )
    tags = serializers.ListField(
        child=TextField(max_length=64),
        required=False,
        max_length=50,
        help_text=gettext_lazy("Tag names to add."),
    )

    def validate_phone(self, value):
        if not value:
            return value
        try:
            return normalise_identity(IdentityKind.PHONE, value)[1]
        except DjangoValidationError as exc:
            raise _django_errors(exc)

    def validate_birthday(self, value):
        if value is not None and not date(1900, 1, 1) <= value <= timezone.localdate():
            raise serializers.ValidationError(_("Give a birthday between 1900-01-01 and today."))
        return value

    def validate_time_zone(self, value):
        try:
            validate_time_zone(value)
        except DjangoValidationError as exc:
            raise _django_errors(exc)
        return value

    def validate(self, attrs):
        if not (
            attrs.get("external_id") or attrs.get("email") or attrs.get("phone") or attrs.get("identities")
        ):
            # Without one, every repeat of the record would create another customer.
            raise serializers.ValidationError(
                _("A customer needs at least one identifier: external_id, email, phone or identities.")
            )
        return attrs

    @staticmethod
    def to_kwargs(data: dict) -> dict:
        """The arguments of crm.services.events.customer_ingest."""
        return {
            "external_id": data.get("external_id"),
            "profile": {name: data[name] for name in PROFILE_FIELDS if name in data},
            "identities": [(i["kind"], i["value"]) for i in data.get("identities", ())],
            "consents": [ConsentInput(**c) for c in data.get("consents", ())],
            "tags": list(data.get("tags", ())),
        }


class CustomerBatchInSerializer(
    StrictSerializer
):  # documents batch_items' envelope, which refuses other keys
    customers = CustomerInSerializer(many=True, max_length=MAX_BATCH_ITEMS)


class CustomerUpsertOutSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    created = serializers.BooleanField()
    merged_ids = serializers.ListField(
        child=serializers.IntegerField(),
        help_text=gettext_lazy("Customers merged into this one by shared identifiers."),
    )
    changed_fields = serializers.ListField(child=serializers.CharField())


class CustomerBatchResultSerializer(CustomerUpsertOutSerializer):
    index = serializers.IntegerField()


class CustomerBatchOutSerializer(serializers.Serializer):
    accepted = serializers.IntegerField()
    rejected = serializers.IntegerField()
    results = CustomerBatchResultSerializer(many=True)
    errors = ErrorSerializer(many=True)


class IdentityOutSerializer(serializers.Serializer):
    kind = serializers.CharField()
    value = serializers.CharField()
    source = serializers.CharField()


class ConsentOutSerializer(serializers.Serializer):
    channel = serializers.CharField()
    status = serializers.CharField()
    changed_at = serializers.DateTimeField()
    source = serializers.CharField()


class CustomerOutSerializer(serializers.ModelSerializer):
    identities = IdentityOutSerializer(many=True)
    consents = ConsentOutSerializer(many=True)
    tags = serializers.SerializerMethodField()

    class Meta:
        model = Customer
        fields = [
            "id",
            "external_id",
            *PROFILE_FIELDS,
            "identities",
            "consents",
            "tags",
            "created_at",
            "updated_at",
            "erased_at",
        ]

    def get_tags(self, customer) -> list[str]:
        return [link.tag.name for link in customer.customer_tags.all()]


# --- Events (documents the shape; crm.api.event_input validates it without per-item serializer cost) ----


class EventInSerializer(StrictSerializer):
    external_id = TextField(
        required=False,
        max_length=100,
        help_text=gettext_lazy("Your id for the event; a repeat is skipped as a duplicate."),
    )
    type = serializers.RegexField(
        r"^[a-z0-9][a-z0-9_-]*$",
        max_length=64,
        help_text=gettext_lazy("A slug: lowercase letters, digits, _ and -."),
    )
    occurred_at = MomentField()
    channel = serializers.ChoiceField(required=False, allow_blank=True, choices=Channel.choices)
    properties = serializers.DictField(
        required=False, help_text=gettext_lazy("Any JSON object of at most 16 KB (UTF-8).")
    )
    customer = CustomerRefSerializer()


class EventBatchInSerializer(StrictSerializer):  # documents batch_items' envelope, which refuses other keys
    events = EventInSerializer(many=True, max_length=MAX_BATCH_ITEMS)


class EventBatchOutSerializer(serializers.Serializer):
    accepted = serializers.IntegerField(help_text=gettext_lazy("Events stored by this request."))
    duplicates = serializers.IntegerField(
        help_text=gettext_lazy("Events skipped because their external_id is known.")
    )
    rejected = serializers.IntegerField()
    customers_created = serializers.IntegerField(
        help_text=gettext_lazy("Prospects created for unknown identifiers.")
    )
    customers_merged = serializers.IntegerField()
    duplicate_indexes = serializers.ListField(child=serializers.IntegerField())
    errors = ErrorSerializer(many=True)


# --- Orders ---------------------------------------------------------------------------------------------


class OrderLineInSerializer(StrictSerializer):
    sku = TextField(max_length=64)
    name = TextField(required=False, allow_blank=True, max_length=200)
    category = TextField(required=False, allow_blank=True, max_length=100)
    quantity = WholeNumberField(min_value=1, max_value=1_000_000)
    unit_price = serializers.DecimalField(max_digits=12, decimal_places=2, min_value=0)


class OrderInSerializer(StrictSerializer):
    external_id = TextField(max_length=100, help_text=gettext_lazy("Your order id; the key of idempotency."))
    placed_at = MomentField()
    total = serializers.DecimalField(max_digits=14, decimal_places=2, min_value=0)
    currency = TextField(
        required=False, default="CNY", max_length=3, min_length=3, help_text=gettext_lazy("ISO 4217 code.")
    )
    channel = serializers.ChoiceField(required=False, allow_blank=True, default="", choices=Channel.choices)
    store = TextField(required=False, allow_blank=True, default="", max_length=100)
    status = serializers.ChoiceField(
        required=False,
        default=OrderStatus.PAID,
        choices=[(s.value, s.label) for s in INGEST_STATUSES],
        help_text=gettext_lazy("A partial refund arrives as a refund, not as a status."),
    )
    customer = CustomerRefSerializer()
    lines = serializers.ListField(child=OrderLineInSerializer(), required=False, max_length=500)

    @staticmethod
    def to_input(data: dict) -> OrderInput:
        return OrderInput(
            external_id=data["external_id"],
            placed_at=data["placed_at"],
            total=data["total"],
            currency=data["currency"],
            channel=data["channel"],
            store=data["store"],
            status=data["status"],
            lines=tuple(
                OrderLineInput(
                    sku=line["sku"],
                    quantity=line["quantity"],
                    unit_price=line["unit_price"],
                    name=line.get("name", ""),
                    category=line.get("category", ""),
                )
                for line in data.get("lines", ())
            ),
        )


class OrderBatchInSerializer(StrictSerializer):  # documents batch_items' envelope, which refuses other keys
    orders = OrderInSerializer(many=True, max_length=MAX_BATCH_ITEMS)


class OrderOutSerializer(serializers.Serializer):
    external_id = serializers.CharField()
    outcome = serializers.ChoiceField(choices=["created", "unchanged"])
    customer_id = serializers.IntegerField()


class OrderBatchResultSerializer(OrderOutSerializer):
    index = serializers.IntegerField()


class OrderBatchOutSerializer(serializers.Serializer):
    accepted = serializers.IntegerField()
    created = serializers.IntegerField()
    unchanged = serializers.IntegerField()
    rejected = serializers.IntegerField()
    customers_created = serializers.IntegerField()
    results = OrderBatchResultSerializer(many=True)
    errors = ErrorSerializer(many=True)


class RefundLineInSerializer(StrictSerializer):
    """The order line refunded, by its position (line_no, from 1) or its SKU."""

    line_no = WholeNumberField(required=False, min_value=1)
    sku = TextField(required=False, max_length=64)
    quantity = WholeNumberField(min_value=1, max_value=1_000_000)

    def validate(self, attrs):
        if "line_no" not in attrs and "sku" not in attrs:
            raise serializers.ValidationError(_("Name the line by line_no or sku."))
        return attrs


class RefundInSerializer(StrictSerializer):
    external_id = TextField(max_length=100, help_text=gettext_lazy("Your refund id; the key of idempotency."))
    amount = serializers.DecimalField(max_digits=14, decimal_places=2, min_value=Decimal("0.01"))
    refunded_at = MomentField()
    reason = TextField(required=False, allow_blank=True, default="", max_length=300)
    lines = serializers.ListField(child=RefundLineInSerializer(), required=False, max_length=500)


class RefundOutSerializer(serializers.Serializer):
    order_external_id = serializers.CharField()
    refund_external_id = serializers.CharField()
    outcome = serializers.ChoiceField(choices=["created", "unchanged"])
    order_status = serializers.ChoiceField(choices=OrderStatus.choices)
    refunded_amount = serializers.DecimalField(max_digits=14, decimal_places=2)
