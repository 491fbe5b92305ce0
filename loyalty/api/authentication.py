"""Member API credentials and limits: `Authorization: Bearer <prefix>.<secret>` tokens keyed to a customer,
and throttles keyed to the member (or, for the store's coupon endpoints, to the API key).

Throttle rates live on the classes so nothing is needed in settings; `REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]`
overrides them by scope. Counters live in the default cache: configure a shared one (Redis) in production,
or each worker process counts on its own.
"""

from django.utils.translation import gettext_lazy as _
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions, permissions, throttling
from rest_framework.settings import api_settings

from crm.models import ApiKey
from loyalty.models.rewards import MemberApiToken
from loyalty.services.members import member_token_check

KEYWORD = "Bearer"


class MemberPrincipal:
    """Who a member-API request acts for. Not a Django user: it carries the customer id, nothing else."""

    is_authenticated = True
    is_anonymous = False
    is_active = True
    is_staff = False
    is_superuser = False
    pk = None
    id = None

    def __init__(self, customer):
        self.customer = customer
        self.customer_id = customer.pk

    def has_perm(self, perm, obj=None) -> bool:
        return False

    def __str__(self) -> str:
        return f"member:{self.customer_id}"


class MemberTokenAuthentication(authentication.BaseAuthentication):
    def authenticate_header(self, request):
        return f'{KEYWORD} realm="member"'

    def authenticate(self, request):
        keyword, _space, raw = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
        if keyword.lower() != KEYWORD.lower():
            return None
        # A view that declares `summary_with_token` gets the member's account summary from the token's
        # own query (see member_token_check): one round trip for the hottest endpoint.
        view = (request.parser_context or {}).get("view")
        token = member_token_check(raw, with_summary=getattr(view, "summary_with_token", False))
        if token is None:
            raise exceptions.AuthenticationFailed(_("Invalid or revoked member token."))
        return (MemberPrincipal(token.customer), token)


class IsMember(permissions.BasePermission):
    message = _("A member token is needed.")

    def has_permission(self, request, view):
        return isinstance(request.auth, MemberApiToken)


class _ScopedRate(throttling.SimpleRateThrottle):
    default_rate = "60/min"

    def get_rate(self):
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope) or self.default_rate


class MemberReadThrottle(_ScopedRate):
    """Per member, across all their tokens and devices."""

    scope = "loyalty_member"
    default_rate = "300/min"

    def get_cache_key(self, request, view):
        if isinstance(request.auth, MemberApiToken):
            return f"throttle:{self.scope}:{request.auth.customer_id}"
        return None


class MemberWriteThrottle(MemberReadThrottle):
    scope = "loyalty_member_write"
    default_rate = "30/min"


class MemberSignInThrottle(_ScopedRate):
    """Token requests by client address (a wrong password is also counted by django-axes)."""

    scope = "loyalty_member_sign_in"
    default_rate = "20/min"

    def get_cache_key(self, request, view):
        return f"throttle:{self.scope}:{self.get_ident(request)}"


class CouponStoreThrottle(_ScopedRate):
    """Per store API key: bounds how fast anyone holding a key can guess codes."""

    scope = "loyalty_coupon_store"
    default_rate = "3000/min"

    def get_cache_key(self, request, view):
        if isinstance(request.auth, ApiKey):
            return f"throttle:{self.scope}:{request.auth.pk}"
        return f"throttle:{self.scope}:{self.get_ident(request)}"


class MemberTokenScheme(OpenApiAuthenticationExtension):
    target_class = MemberTokenAuthentication
    name = "MemberToken"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": _("A member token from POST /api/v1/me/token."),
        }
