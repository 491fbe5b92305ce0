"""Member API (`/api/v1/me/...`, bearer token of one member, who only ever sees their own rows) and the
store's coupon API (`/api/v1/coupons/...`, API key with the `coupons:redeem` scope)."""

from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.exceptions import ValidationError
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.pagination import CursorPagination
from rest_framework.permissions import AllowAny
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from crm.api.authentication import ApiKeyAuthentication, HasScope
from crm.api.errors import NON_FIELD
from crm.api.parsers import JSONParser
from crm.models import ApiKey, Customer
from loyalty.api import serializers as s
from loyalty.api.authentication import (
    CouponStoreThrottle,
    IsMember,
    MemberReadThrottle,
    MemberSignInThrottle,
    MemberTokenAuthentication,
    MemberWriteThrottle,
)
from loyalty.selectors import account_history
from loyalty.services.coupons import CouponError, coupon_redeem, coupon_validate, member_coupons
from loyalty.services.ledger import LoyaltyError
from loyalty.services.members import (
    MemberLockedOut,
    member_account,
    member_sign_in,
    member_summary,
    member_token_create,
    member_token_revoke,
    referral_stats,
)
from loyalty.services.rewards import reward_redeem, reward_redemption_for_member, rewards_catalogue

COUPON_SCOPE = ApiKey.Scope.COUPONS_REDEEM


def _errors(description) -> OpenApiResponse:
    return OpenApiResponse(s.CodedErrorsOut, description=description)


# Every status these views answer besides success, for the OpenAPI schema (a schemathesis run in
# tests/api/test_schema_fuzz.py fails on an undocumented one).
BAD_INPUT = _errors(gettext_lazy("Bad input: {errors: [{field, message}]}, one per field at fault."))
TOO_LARGE = _errors(gettext_lazy("Body larger than the upload limit."))
THROTTLED = _errors(gettext_lazy("Too many requests; wait the seconds of the Retry-After header."))
NO_TOKEN = _errors(gettext_lazy("Missing, invalid or revoked member token."))
MEMBER_ERRORS = {401: NO_TOKEN, 429: THROTTLED}
STORE_ERRORS = {
    400: BAD_INPUT,
    401: _errors(gettext_lazy("Missing or invalid API key.")),
    403: _errors(gettext_lazy("The key lacks the coupons:redeem scope.")),
    413: TOO_LARGE,
    429: THROTTLED,
}


def domain_error(exc, *, status_code=None) -> Response:
    """A refused request, in the API's one error shape plus a stable `code` for clients."""
    return Response(
        {
            "errors": [
                {
                    "field": getattr(exc, "field", None) or NON_FIELD,
                    "code": exc.code,
                    "message": str(exc.message),
                }
            ]
        },
        status=status_code or getattr(exc, "status_code", status.HTTP_409_CONFLICT),
    )


class JSONOnly(BaseContentNegotiation):
    """The member API speaks JSON only; skip parsing Accept headers on every request of a hot path."""

    def select_parser(self, request, parsers):
        return parsers[0] if parsers else None

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class MemberView(APIView):
    authentication_classes = [MemberTokenAuthentication]
    permission_classes = [IsMember]
    throttle_classes = [MemberReadThrottle]
    # The API's strict parser (size limit, no NaN), as for the store API.
    parser_classes = [JSONParser]
    renderer_classes = [JSONRenderer]
    content_negotiation_class = JSONOnly

    def customer(self, request) -> Customer:
        return request.user.customer


class TokenView(APIView):
    """POST: exchange email and password for a member token. DELETE (with the token): sign out this device."""

    authentication_classes = [MemberTokenAuthentication]
    permission_classes = [AllowAny]
    throttle_classes = [MemberSignInThrottle]
    parser_classes = [JSONParser]
    renderer_classes = [JSONRenderer]

    @extend_schema(
        request=s.TokenRequestSerializer,
        responses={
            201: s.TokenOut,
            400: BAD_INPUT,
            401: _errors(gettext_lazy("Wrong email or password (code invalid_credentials).")),
            413: TOO_LARGE,
            415: _errors(gettext_lazy("The body is not application/json.")),
            429: _errors(
                gettext_lazy("Too many attempts: throttled, or the account is locked out (code locked_out).")
            ),
        },
    )
    def post(self, request):
        data = s.TokenRequestSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            login = member_sign_in(
                request=request._request,
                email=data.validated_data["email"],
                password=data.validated_data["password"],
            )
        except MemberLockedOut as exc:
            return Response(
                {"errors": [{"field": NON_FIELD, "code": "locked_out", "message": str(exc.message)}]},
                status=status.HTTP_429_TOO_MANY_REQUESTS,
            )
        if login is None:
            return Response(
                {
                    "errors": [
                        {
                            "field": NON_FIELD,
                            "code": "invalid_credentials",
                            "message": _("Wrong email or password."),
                        }
                    ]
                },
                status=status.HTTP_401_UNAUTHORIZED,
                headers={"WWW-Authenticate": 'Bearer realm="member"'},
            )
        token, raw = member_token_create(customer=login.customer, name=data.validated_data["device"])
        return Response({"token": raw, "token_type": "Bearer"}, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={204: None, **MEMBER_ERRORS})
    def delete(self, request):
        if not IsMember().has_permission(request, self):
            self.permission_denied(request, message=IsMember.message)
        member_token_revoke(token=request.auth)
        return Response(status=status.HTTP_204_NO_CONTENT)


class MeView(MemberView):
    @extend_schema(responses={200: s.MeOut, **MEMBER_ERRORS})
    def get(self, request):
        customer = Customer.objects.get(pk=self.customer(request).pk)
        return Response({"id": customer.pk, "name": customer.name, "email": customer.email})


class PointsView(MemberView):
    """Balance, pending points, tier and progress, points expiring in the next 30 days."""

    summary_with_token = True  # MemberTokenAuthentication reads the summary in the token's query

    @extend_schema(responses={200: s.PointsOut, **MEMBER_ERRORS})
    def get(self, request):
        summary = getattr(request.auth, "prefetched_summary", None)
        if summary is None:  # not PostgreSQL, or the account had to be made or reactivated first
            summary = member_summary(customer=self.customer(request), now=timezone.now())
        return Response(s.summary_json(summary))


class HistoryPagination(CursorPagination):
    ordering = "-id"
    page_size = 20
    max_page_size = 100
    page_size_query_param = "page_size"


class HistoryView(MemberView):
    @extend_schema(
        parameters=[
            OpenApiParameter(
                "cursor", OpenApiTypes.STR, description=gettext_lazy("From the next or previous link.")
            ),
            OpenApiParameter(
                "page_size",
                OpenApiTypes.INT,
                description=gettext_lazy("Entries per page, 1 to 100 (default 20)."),
            ),
        ],
        responses={
            200: s.HistoryPageOut,
            404: _errors(gettext_lazy("The cursor is not one this endpoint gave out.")),
            **MEMBER_ERRORS,
        },
    )
    def get(self, request):
        account = member_account(customer=self.customer(request))
        paginator = HistoryPagination()
        page = paginator.paginate_queryset(account_history(account=account), request, view=self)
        return paginator.get_paginated_response([s.entry_json(e) for e in page])


class RewardsView(MemberView):
    """The catalogue, each reward marked affordable/eligible for this member."""

    @extend_schema(responses={200: s.RewardsOut, **MEMBER_ERRORS})
    def get(self, request):
        customer = self.customer(request)
        account = member_account(customer=customer)
        offers = rewards_catalogue(
            customer=customer, available_points=account.available, tier_id=account.tier_id
        )
        return Response({"available_points": account.available, "results": [s.offer_json(o) for o in offers]})


class RewardRedeemView(MemberView):
    throttle_classes = [MemberReadThrottle, MemberWriteThrottle]

    @extend_schema(
        request=s.RedeemRequestSerializer,
        responses={
            201: s.RedemptionOut,
            200: s.RedemptionOut,
            400: BAD_INPUT,
            403: _errors(gettext_lazy("The member may not redeem this reward (tier, account state).")),
            404: _errors(gettext_lazy("No such reward, or not on offer (code not_found).")),
            409: _errors(
                gettext_lazy(
                    "Refused: not enough points, out of stock, limit reached, key reused (see code)."
                )
            ),
            413: TOO_LARGE,
            **MEMBER_ERRORS,
        },
    )
    def post(self, request, pk: int):
        data = s.RedeemRequestSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            result = reward_redeem(
                customer=self.customer(request),
                reward_id=pk,
                idempotency_key=data.validated_data["idempotency_key"],
            )
        except LoyaltyError as exc:
            return domain_error(exc)
        return Response(
            s.redemption_json(result.redemption),
            status=status.HTTP_201_CREATED if result.created else status.HTTP_200_OK,
        )


class RedemptionView(MemberView):
    @extend_schema(
        responses={
            200: s.RedemptionOut,
            404: _errors(gettext_lazy("No redemption of this member has this id (code not_found).")),
            **MEMBER_ERRORS,
        }
    )
    def get(self, request, pk: int):
        redemption = reward_redemption_for_member(customer_id=self.customer(request).pk, redemption_id=pk)
        if redemption is None:
            # The same answer for "not yours" and "does not exist": ids of others are not confirmed.
            return Response(
                {"errors": [{"field": NON_FIELD, "code": "not_found", "message": _("Not found.")}]},
                status=status.HTTP_404_NOT_FOUND,
            )
        return Response(s.redemption_json(redemption))


class CouponsView(MemberView):
    @extend_schema(responses={200: s.CouponsOut, **MEMBER_ERRORS})
    def get(self, request):
        coupons = member_coupons(customer_id=self.customer(request).pk)[:200]
        return Response({"results": [s.coupon_json(c) for c in coupons]})


class ReferralView(MemberView):
    @extend_schema(responses={200: s.ReferralOut, **MEMBER_ERRORS})
    def get(self, request):
        stats = referral_stats(customer=self.customer(request))
        link = request.build_absolute_uri(f"/member/join/?ref={stats.code}")
        return Response({"code": stats.code, "link": link, "referred": stats.referred})


# --- Store ----------------------------------------------------------------------------------------


class StoreCouponView(APIView):
    authentication_classes = [ApiKeyAuthentication]
    permission_classes = [HasScope]
    required_scopes = {"POST": COUPON_SCOPE}
    throttle_classes = [CouponStoreThrottle]
    parser_classes = [JSONParser]
    renderer_classes = [JSONRenderer]

    @staticmethod
    def customer_id(data) -> int | None:
        external_id = data.get("customer_external_id")
        if not external_id:
            return None
        found = Customer.objects.filter(external_id=external_id).values_list("id", flat=True).first()
        if found is None:
            raise ValidationError({"customer_external_id": [_("No customer has this external id.")]})
        return found


class CouponValidateView(StoreCouponView):
    """Would this code apply to this order? Changes nothing; `valid: false` comes with a `reason` code."""

    @extend_schema(
        request=s.CouponCheckSerializer,
        responses={
            200: s.CouponCheckOut,
            415: _errors(gettext_lazy("The body is not application/json.")),
            **STORE_ERRORS,
        },
    )
    def post(self, request):
        data = s.CouponCheckSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        try:
            check = coupon_validate(
                code=v["code"],
                order_total=v["order_total"],
                currency=v["currency"],
                customer_id=self.customer_id(v),
            )
        except CouponError as exc:
            return Response({"valid": False, "reason": exc.code, "message": str(exc.message)})
        programme = check.coupon.programme
        return Response(
            {
                "valid": True,
                "code": check.coupon.code,
                "discount": str(check.discount),
                "currency": programme.currency,
                "programme": programme.name,
                "uses_left": check.coupon.uses_left,
            }
        )


class CouponRedeemView(StoreCouponView):
    """Use the code on an order. 201 on first use, 200 when the same order is sent again, 409 when refused."""

    @extend_schema(
        request=s.CouponRedeemSerializer,
        responses={
            201: s.CouponRedeemOut,
            200: s.CouponRedeemOut,
            404: _errors(gettext_lazy("No coupon has this code (code not_found).")),
            409: _errors(gettext_lazy("The code cannot be used for this order (see code).")),
            415: _errors(gettext_lazy("The body is not application/json.")),
            **STORE_ERRORS,
        },
    )
    def post(self, request):
        data = s.CouponRedeemSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        try:
            result = coupon_redeem(
                code=v["code"],
                order_reference=v["order_reference"],
                order_total=v["order_total"],
                currency=v["currency"],
                customer_id=self.customer_id(v),
                store=v["store"],
                api_key=request.auth if hasattr(request.auth, "scopes") else None,
            )
        except CouponError as exc:
            return domain_error(exc)
        r = result.redemption
        return Response(
            {
                "id": r.pk,
                "code": r.coupon.code,
                "order_reference": r.order_reference,
                "discount": str(r.discount),
                "currency": r.currency,
                "redeemed_at": r.redeemed_at.isoformat(),
                "replayed": not result.created,
            },
            status=status.HTTP_201_CREATED if result.created else status.HTTP_200_OK,
        )
