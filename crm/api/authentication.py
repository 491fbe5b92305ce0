"""API keys for server-to-server calls: `Authorization: Api-Key <prefix>.<secret>`, and the scopes they carry.

Staff browser sessions are accepted too (SessionAuthentication, with its CSRF check); for them a scope
stands for the Django model permissions listed in SCOPE_PERMISSIONS, so role groups decide what staff
may do through the API exactly as in the admin.
"""

import hashlib
import hmac
import secrets
from collections.abc import Iterable

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions, permissions

from crm.models import ApiKey

KEYWORD = "Api-Key"
# How often last_used_at may be written for one key. A write per request would make every worker queue
# on the same row during bulk ingestion.
LAST_USED_RESOLUTION_SECONDS = 60

# What a scope means for a staff session: every listed model permission is needed.
SCOPE_PERMISSIONS: dict[str, tuple[str, ...]] = {
    ApiKey.Scope.CUSTOMERS_READ: ("crm.view_customer",),
    ApiKey.Scope.CUSTOMERS_WRITE: ("crm.add_customer", "crm.change_customer"),
    ApiKey.Scope.EVENTS_WRITE: ("crm.add_event",),
    ApiKey.Scope.ORDERS_WRITE: ("crm.add_order", "crm.change_order"),
}


def hash_secret(secret: str) -> str:
    # The secret is 256 random bits, so a plain SHA-256 cannot be brute-forced; a slow password hash would
    # only add latency to every request.
    return hashlib.sha256(secret.encode()).hexdigest()


def api_key_create(*, name: str, scopes: Iterable[str], created_by=None) -> tuple[ApiKey, str]:
    """Create a key and return it with the full token, which is shown once and never stored.

    Raises ValidationError for an unknown scope or a blank name."""
    scopes = sorted(set(scopes))
    unknown = [s for s in scopes if s not in ApiKey.Scope.values]
    if unknown:
        raise ValidationError(
            {"scopes": _("Unknown scope: %(scopes)s.") % {"scopes": ", ".join(unknown)}}, code="invalid"
        )
    if not name.strip():
        raise ValidationError({"name": _("A key needs a name.")}, code="required")
    secret = secrets.token_urlsafe(32)
    # The prefix is only 32 random bits (it is what the lookup uses and what staff see in the admin), so
    # a collision is possible though rare: draw again rather than fail.
    for attempt in range(5):
        try:
            with transaction.atomic():
                key = ApiKey.objects.create(
                    name=name.strip(),
                    prefix=secrets.token_hex(4),
                    key_hash=hash_secret(secret),
                    scopes=scopes,
                    created_by=created_by,
                )
            return key, f"{key.prefix}.{secret}"
        except IntegrityError:
            if attempt == 4:
                raise
    raise AssertionError("unreachable")


def api_key_revoke(*, key: ApiKey, now=None) -> ApiKey:
    """Revoke a key for good; requests carrying it are refused with 401 from now on."""
    if key.revoked_at is None:
        key.revoked_at = now or timezone.now()
        key.save(update_fields=["revoked_at"])
    return key


class ApiKeyUser:
    """The principal of a request made with an API key. It is not a Django user: staff permissions and
    audit-history attribution do not apply to it."""

    is_authenticated = True
    is_anonymous = False
    is_active = True
    is_staff = False
    is_superuser = False
    pk = None
    id = None

    def __init__(self, key: ApiKey):
        self.api_key = key

    def has_perm(self, perm, obj=None) -> bool:
        return False

    def __str__(self) -> str:
        return f"api-key:{self.api_key.prefix}"


class ApiKeyAuthentication(authentication.BaseAuthentication):
    def authenticate_header(self, request):
        # Makes DRF answer 401 (with this challenge) rather than 403 when credentials are missing.
        return KEYWORD

    def authenticate(self, request):
        header = request.META.get("HTTP_AUTHORIZATION", "")
        keyword, _space, token = header.partition(" ")
        if keyword.lower() != KEYWORD.lower():
            return None  # not ours: let session authentication try
        prefix, _dot, secret = token.strip().partition(".")
        if not prefix or not secret or len(prefix) > 16:
            raise exceptions.AuthenticationFailed(
                _("Malformed API key; expected 'Authorization: Api-Key <prefix>.<secret>'.")
            )
        key = ApiKey.objects.filter(prefix=prefix, revoked_at__isnull=True).first()
        if key is None or not hmac.compare_digest(key.key_hash, hash_secret(secret)):
            raise exceptions.AuthenticationFailed(_("Invalid or revoked API key."))
        now = timezone.now()
        if (
            key.last_used_at is None
            or (now - key.last_used_at).total_seconds() > LAST_USED_RESOLUTION_SECONDS
        ):
            ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
        return (ApiKeyUser(key), key)


class HasScope(permissions.BasePermission):
    """Views declare `required_scopes = {"POST": "orders:write", ...}`.

    An API key needs the scope itself. A staff session needs is_staff and the model permissions the scope
    stands for. A method a view declares no scope for is refused (fail closed), except OPTIONS."""

    message = gettext_lazy("Your credentials lack the scope this endpoint needs.")

    def has_permission(self, request, view):
        if request.user is None or not request.user.is_authenticated:
            return False
        method = "GET" if request.method == "HEAD" else request.method
        scope = getattr(view, "required_scopes", {}).get(method)
        if scope is None:
            return method == "OPTIONS"
        if isinstance(request.auth, ApiKey):
            if scope not in request.auth.scopes:
                self.message = _("This API key lacks the scope %(scope)s.") % {"scope": scope}
                return False
            return True
        user = request.user
        if not (user.is_active and user.is_staff and user.has_perms(SCOPE_PERMISSIONS[scope])):
            self.message = _("Your account lacks the permissions of the scope %(scope)s.") % {"scope": scope}
            return False
        return True


class ApiKeyScheme(OpenApiAuthenticationExtension):
    """Describes API-key authentication in the OpenAPI schema."""

    target_class = ApiKeyAuthentication
    name = "ApiKeyAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": _("`Api-Key <prefix>.<secret>`; keys are created by staff in the admin."),
        }
