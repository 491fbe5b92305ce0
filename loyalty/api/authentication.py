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
    """A fixed window per key, counted with the cache's atomic add and incr.

    DRF's SimpleRateThrottle reads the key's request history, appends and writes it back: requests served
    at the same moment by several web workers all read the same history and all pass (116 of 200 through
    a 30-per-minute limit with 4 workers). `cache.add` creates the counter only if it is absent and
    `cache.incr` adds one and returns the new count, each a single Redis command, so every request gets its
    own number and exactly `num_requests` of a window get one within the limit. (LocMemCache does both
    under its lock, so the embedded default counts exactly per process.)

    The window opens with a key's first request and lasts the rate's period; refused requests are counted
    too but never extend it. A second key holds when the window opened, for the Retry-After header.
    """

    default_rate = "60/min"

    def get_rate(self):
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope) or self.default_rate

    def allow_request(self, request, view):
        if self.rate is None:
            return True
        self.key = self.get_cache_key(request, view)
        if self.key is None:
            return True
        self.now = self.timer()
        self.count = self._count()
        return self.count <= self.num_requests

    def _count(self) -> int:
        for _attempt in range(3):
            if self.cache.add(self.key, 0, self.duration):
                self.cache.set(f"{self.key}:opened", self.now, self.duration)
            try:
                return self.cache.incr(self.key)
            except ValueError:
                # The window closed (the key expired) between add and incr: open the next one.
                continue
        return self.cache.incr(self.key)

    def wait(self):
        opened = self.cache.get(f"{self.key}:opened")
        if opened is None:
            return self.duration
        return max(1.0, float(opened) + self.duration - self.now)


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
