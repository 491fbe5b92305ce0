"""Member credentials (password, one-time email links, API tokens), sign-up, and referrals.

Members are `crm.Customer` records with a `MemberLogin`; they are never Django users, so nothing a member
holds can open the staff admin, and staff authentication never sees member credentials.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import logging
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from axes.handlers.proxy import AxesProxyHandler
from axes.helpers import get_client_ip_address
from django.conf import settings
from django.contrib.auth.hashers import check_password, make_password
from django.contrib.auth.password_validation import validate_password
from django.core import signing
from django.core.cache import cache
from django.core.mail import send_mail
from django.db import IntegrityError, connection, transaction
from django.template.loader import render_to_string
from django.utils import timezone
from django.utils.crypto import salted_hmac
from django.utils.translation import gettext_lazy as _

from crm.db import fetchone_checking_connection, server_binding_cursor
from crm.models import Customer, Order
from crm.services.customers import customer_upsert
from loyalty.models import LedgerEntry, LoyaltyAccount, PointLot
from loyalty.models.rewards import (
    MemberApiToken,
    MemberLogin,
    MemberMagicLinkUse,
    Referral,
    ReferralCode,
)
from loyalty.selectors import (
    EXPIRING_SOON_DAYS,
    AccountSummary,
    account_summary,
    account_summary_build,
    expiring_points_item,
)
from loyalty.services.ledger import account_for_customer
from loyalty.services.programme import ruleset_load

logger = logging.getLogger(__name__)

MAGIC_LINK_MAX_AGE = 15 * 60  # seconds
MAGIC_LINK_SALT = "loyalty.member.magic-link"
# At most this many links to one address per window: the form must not become a way to flood an inbox.
MAGIC_LINK_SENDS_PER_WINDOW = 5
MAGIC_LINK_SEND_WINDOW = 15 * 60
REFERRAL_CODE_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"
REFERRAL_CODE_LENGTH = 8


def email_normalise(email: str) -> str:
    return (email or "").strip().lower()


# --- Logins and passwords -------------------------------------------------------------------------


class MemberLoginError(Exception):
    def __init__(self, message):
        self.message = message
        super().__init__(str(message))


def member_login_create(*, customer: Customer, email: str, password: str | None = None) -> MemberLogin:
    """Give a customer portal credentials. Without a password they sign in by emailed link until they
    set one. Raises ValidationError for a weak password, MemberLoginError if the address is taken."""
    email = email_normalise(email)
    if password is not None:
        validate_password(password)
    try:
        with transaction.atomic():
            return MemberLogin.objects.create(
                customer=customer, email=email, password=make_password(password)
            )
    except IntegrityError:
        raise MemberLoginError(_("This email address or customer already has a member login."))


def member_password_set(*, login: MemberLogin, password: str) -> MemberLogin:
    """Raises django.core.exceptions.ValidationError when the password is too weak."""
    validate_password(password)
    login.password = make_password(password)
    login.save(update_fields=["password"])
    return login


def _usable(login: MemberLogin | None) -> bool:
    return bool(login and login.is_active and login.customer.erased_at is None)


def member_authenticate(*, email: str, password: str, now: datetime | None = None) -> MemberLogin | None:
    """The member with this address and password, or None. Failed-attempt throttling is the caller's
    (the views use django-axes), so this stays a pure check."""
    login = MemberLogin.objects.select_related("customer").filter(email=email_normalise(email)).first()
    if login is None:
        make_password(password)  # as slow as checking one, so a miss does not reveal who is a member
        return None
    if not check_password(password, login.password) or not _usable(login):
        return None
    member_touch_login(login=login, now=now)
    return login


class MemberLockedOut(MemberLoginError):
    pass


def _axes_credentials(email: str) -> dict:
    # Prefixed so a member's address can never share django-axes counters with a staff user name.
    return {"username": f"member:{email_normalise(email)}"}


def member_sign_in(*, request, email: str, password: str, now: datetime | None = None) -> MemberLogin | None:
    """`member_authenticate` behind django-axes: failures are counted per address and client (the same
    limits as the staff admin) and a locked-out pair is refused before the password is checked.
    `request` is the Django HttpRequest. Raises MemberLockedOut."""
    credentials = _axes_credentials(email)
    if not AxesProxyHandler.is_allowed(request, credentials):
        raise MemberLockedOut(_("Too many failed sign-in attempts. Try again later or use an emailed link."))
    login = member_authenticate(email=email, password=password, now=now)
    if login is None:
        AxesProxyHandler.user_login_failed(sender=member_sign_in, credentials=credentials, request=request)
        return None
    if settings.AXES_RESET_ON_SUCCESS:
        # This client's failures only (AXES_LOCKOUT_PARAMETERS pairs user and address), as axes itself
        # resets: the member signing in from home must not unlock whoever is guessing from elsewhere.
        AxesProxyHandler.reset_attempts(
            username=credentials["username"], ip_address=get_client_ip_address(request)
        )
    return login


def member_touch_login(*, login: MemberLogin, now: datetime | None = None) -> None:
    login.last_login = now or timezone.now()
    MemberLogin.objects.filter(pk=login.pk).update(last_login=login.last_login)


def member_session_hash(login: MemberLogin) -> str:
    """Kept in the session; changes when the password does, which signs out every other session."""
    return salted_hmac("loyalty.member.session", login.password, algorithm="sha256").hexdigest()


def member_for_session(*, customer_id, session_hash: str) -> MemberLogin | None:
    if not customer_id:
        return None
    login = MemberLogin.objects.select_related("customer").filter(customer_id=customer_id).first()
    if not _usable(login) or not hmac.compare_digest(member_session_hash(login), session_hash or ""):
        return None
    return login


# --- One-time email links -------------------------------------------------------------------------


class MagicLinkInvalid(Exception):
    """Tampered, expired or already used; the message says which, for the member."""

    def __init__(self, message):
        self.message = message
        super().__init__(str(message))


def _signer() -> signing.TimestampSigner:
    return signing.TimestampSigner(salt=MAGIC_LINK_SALT)


def magic_link_token(*, purpose: str, email: str, **extra) -> str:
    """A signed token carrying a fresh nonce; it proves the holder read mail sent to `email`."""
    payload = {"p": purpose, "e": email_normalise(email), "n": secrets.token_hex(16), **extra}
    return _signer().sign_object(payload, compress=True)


def _send_allowed(email: str) -> bool:
    key = "loyalty:magic-link-sends:" + hashlib.sha256(email.encode()).hexdigest()
    cache.add(key, 0, MAGIC_LINK_SEND_WINDOW)
    try:
        return cache.incr(key) <= MAGIC_LINK_SENDS_PER_WINDOW
    except ValueError:  # expired between add and incr
        cache.set(key, 1, MAGIC_LINK_SEND_WINDOW)
        return True


def _send_link(*, email: str, url: str, template: str) -> None:
    context = {"url": url, "minutes": MAGIC_LINK_MAX_AGE // 60}
    subject = render_to_string(f"loyalty/member/email/{template}_subject.txt", context).strip()
    body = render_to_string(f"loyalty/member/email/{template}.txt", context)
    send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, [email])


def magic_link_send(*, email: str, build_url) -> bool:
    """Mail a one-time sign-in link to `email` if a member signs in with it. `build_url(token)` turns the
    token into an absolute URL. Returns whether a mail went out; callers must not tell the visitor
    (that would reveal who is a member)."""
    email = email_normalise(email)
    login = MemberLogin.objects.select_related("customer").filter(email=email).first()
    if not _usable(login) or not _send_allowed(email):
        return False
    _send_link(email=email, url=build_url(magic_link_token(purpose="in", email=email)), template="magic_link")
    return True


def signup_link_send(*, email: str, name: str, referral_code: str, build_url) -> bool:
    """Mail a link that completes sign-up: owning the address is what lets it claim (or create) the
    customer record carrying it. A registered address gets a plain sign-in link instead."""
    email = email_normalise(email)
    if not _send_allowed(email):
        return False
    login = MemberLogin.objects.select_related("customer").filter(email=email).first()
    if login is not None:
        if not _usable(login):
            return False
        token = magic_link_token(purpose="in", email=email)
        _send_link(email=email, url=build_url(token), template="magic_link")
        return True
    token = magic_link_token(purpose="up", email=email, name=name[:200], ref=(referral_code or "")[:16])
    _send_link(email=email, url=build_url(token), template="signup_link")
    return True


def magic_link_consume(*, token: str, now: datetime | None = None) -> MemberLogin:
    """Sign in (or finish signing up) with a link's token, once. Raises MagicLinkInvalid."""
    now = now or timezone.now()
    try:
        payload = _signer().unsign_object(token, max_age=MAGIC_LINK_MAX_AGE)
    except signing.SignatureExpired:
        raise MagicLinkInvalid(_("This sign-in link has expired. Ask for a new one."))
    except signing.BadSignature:
        raise MagicLinkInvalid(_("This sign-in link is not valid."))
    with transaction.atomic():
        try:
            # The primary key on the nonce makes a second use fail, even two at the same instant.
            with transaction.atomic():
                MemberMagicLinkUse.objects.create(nonce=payload["n"], used_at=now)
        except IntegrityError:
            raise MagicLinkInvalid(_("This sign-in link has already been used. Ask for a new one."))
        if payload["p"] == "up":
            login = member_signup_complete(
                email=payload["e"],
                name=payload.get("name", ""),
                referral_code=payload.get("ref", ""),
                now=now,
            )
        else:
            login = MemberLogin.objects.select_related("customer").filter(email=payload["e"]).first()
        if not _usable(login):
            raise MagicLinkInvalid(_("This sign-in link is not valid."))
        member_touch_login(login=login, now=now)
    return login


def magic_link_uses_prune(*, now: datetime | None = None) -> int:
    """Forget used nonces whose links have expired anyway (a signature older than MAGIC_LINK_MAX_AGE is
    refused before the nonce is looked at). For a periodic task."""
    cutoff = (now or timezone.now()) - timedelta(seconds=MAGIC_LINK_MAX_AGE + 60)
    deleted, _detail = MemberMagicLinkUse.objects.filter(used_at__lt=cutoff).delete()
    return deleted


# --- Sign-up and referrals ------------------------------------------------------------------------


def member_signup_complete(*, email: str, name: str = "", referral_code: str = "", now=None) -> MemberLogin:
    """The address is proven: find or create the customer carrying it, give them a login (no password yet)
    and, for a newcomer, record who referred them."""
    now = now or timezone.now()
    email = email_normalise(email)
    with transaction.atomic():
        existing = MemberLogin.objects.select_related("customer").filter(email=email).first()
        if existing is not None:
            return existing
        profile = {"email": email}
        if name:
            profile["name"] = name
        customer = customer_upsert(profile=profile, source="member_signup").customer
        login = MemberLogin.objects.select_related("customer").filter(customer=customer).first()
        if login is None:
            login = MemberLogin.objects.create(
                customer=customer, email=email, password=make_password(None), created_at=now
            )
        if referral_code:
            referral_record(referee=customer, code=referral_code, now=now)
    return login


def referral_code_for(*, customer: Customer) -> ReferralCode:
    """The member's own referral code, made on first use."""
    found = ReferralCode.objects.filter(customer=customer).first()
    if found is not None:
        return found
    for _attempt in range(5):
        code = "".join(secrets.choice(REFERRAL_CODE_ALPHABET) for _ in range(REFERRAL_CODE_LENGTH))
        try:
            with transaction.atomic():
                return ReferralCode.objects.create(customer=customer, code=code)
        except IntegrityError:
            # Either the code was taken (draw again) or a parallel request made this member's code.
            found = ReferralCode.objects.filter(customer=customer).first()
            if found is not None:
                return found
    raise RuntimeError("could not draw a unique referral code")  # pragma: no cover


def referral_record(*, referee: Customer, code: str, now: datetime | None = None) -> Referral | None:
    """Record that the owner of `code` referred `referee`, when that is believable: not themselves, not
    someone already referred, not an existing buyer. Returns None when nothing was recorded."""
    code = "".join(code.split()).upper()
    owner = ReferralCode.objects.filter(code=code).values_list("customer_id", flat=True).first()
    if owner is None or owner == referee.pk:
        return None
    if Referral.objects.filter(referee=referee).exists() or Order.objects.filter(customer=referee).exists():
        return None
    try:
        with transaction.atomic():
            return Referral.objects.create(
                referrer_id=owner, referee=referee, code=code, created_at=now or timezone.now()
            )
    except IntegrityError:
        return None  # a parallel sign-up recorded the referee first


@dataclass(frozen=True)
class ReferralStats:
    code: str
    referred: int


def referral_stats(*, customer: Customer) -> ReferralStats:
    code = referral_code_for(customer=customer).code
    return ReferralStats(code=code, referred=Referral.objects.filter(referrer=customer).count())


# --- API tokens -----------------------------------------------------------------------------------


def _token_hash(secret: str) -> str:
    # 256 random bits: a plain SHA-256 cannot be brute-forced, and a slow hash would tax every request.
    return hashlib.sha256(secret.encode()).hexdigest()


def member_token_create(*, customer: Customer, name: str = "") -> tuple[MemberApiToken, str]:
    """A new bearer token for the member API; the full token is returned once and never stored."""
    secret = secrets.token_urlsafe(32)
    for attempt in range(5):
        try:
            with transaction.atomic():
                token = MemberApiToken.objects.create(
                    customer=customer,
                    prefix=secrets.token_hex(6),
                    key_hash=_token_hash(secret),
                    name=name[:100],
                )
            return token, f"{token.prefix}.{secret}"
        except IntegrityError:
            if attempt == 4:
                raise
    raise AssertionError("unreachable")


# How often a token's last_used_at may be written: a write per request would cost more than the read.
TOKEN_TOUCH_SECONDS = 3600

_ACCOUNT_FIELDS = (
    "id",
    "customer_id",
    "status",
    "tier_id",
    "tier_since",
    "tier_review_at",
    "downgrade_at",
    "available",
    "pending",
    "owed",
)


@functools.cache  # the text is fixed; building it on every member API request is waste
def _token_sql(summary_basis: str | None = None) -> str:
    """The live token with the given prefix, its customer's erasure mark and the member's account. With
    `summary_basis` (the programme's tier basis), followed by the account summary's four columns
    (`_summary_sql`) for that account: GET /api/v1/me/points then needs one round trip in all."""
    t, c, a = MemberApiToken._meta.db_table, Customer._meta.db_table, LoyaltyAccount._meta.db_table
    account_columns = ", ".join(f"a.{name} AS account_{name}" for name in _ACCOUNT_FIELDS)
    token = f"""
        SELECT t.id, t.customer_id, t.key_hash, t.last_used_at, c.erased_at, {account_columns}
          FROM {t} t
          JOIN {c} c ON c.id = t.customer_id
          LEFT JOIN {a} a ON a.customer_id = t.customer_id
         WHERE t.prefix = %(prefix)s AND t.revoked_at IS NULL
    """
    if summary_basis is None:
        return token
    summary = _summary_sql(summary_basis, customer="tok.customer_id", account="tok.account_id")
    return f"SELECT tok.*, summary.* FROM ({token}) tok LEFT JOIN LATERAL ({summary}) summary ON TRUE"


def member_token_check(
    raw: str, *, now: datetime | None = None, with_summary: bool = False
) -> MemberApiToken | None:
    """The live token `raw` stands for, or None. Its `customer` carries only id and erased_at (other
    fields load on access) and the member's loyalty account, all from one query: this runs on every
    member API request, and on this hot path the ORM's query building costs more than the query.

    `with_summary` (PostgreSQL): the same query also computes the member's `AccountSummary`, left on the
    token as `prefetched_summary` (None when the account is missing or not active), so that
    GET /api/v1/me/points is one round trip. The statement also stands in for the connection health
    check (`crm.db.fetchone_checking_connection`)."""
    prefix, _dot, secret = (raw or "").strip().partition(".")
    if not prefix or not secret or len(prefix) > 16:
        return None
    now = now or timezone.now()
    params: dict = {"prefix": prefix}
    ruleset = None
    if with_summary and connection.vendor == "postgresql":
        ruleset = ruleset_cached()
        params.update(_summary_params(ruleset=ruleset, now=now))
        row = fetchone_checking_connection(_token_sql(ruleset.programme.tier_basis), params)
    else:
        row = fetchone_checking_connection(_token_sql(), params)
    if row is None or not hmac.compare_digest(row[2], _token_hash(secret)):
        return None
    if row[4] is not None:  # the customer was erased
        return None
    db = connection.alias
    account_end = 5 + len(_ACCOUNT_FIELDS)
    token = MemberApiToken.from_db(db, ["id", "customer_id", "key_hash", "last_used_at"], row[:4])
    customer = Customer.from_db(db, ["id", "erased_at"], [row[1], row[4]])
    account = None
    if row[5] is not None:
        account = LoyaltyAccount.from_db(db, list(_ACCOUNT_FIELDS), row[5:account_end])
        customer.loyalty_account = account
    token.customer = customer
    token.prefetched_summary = None
    if ruleset is not None and account is not None and account.status == LoyaltyAccount.Status.ACTIVE:
        token.prefetched_summary = _summary_from_row(
            account=account, now=now, ruleset=ruleset, row=row[account_end:]
        )
    if token.last_used_at is None or (now - token.last_used_at).total_seconds() > TOKEN_TOUCH_SECONDS:
        _token_touch(token.pk, now)
    return token


# The token's "last used" time is bookkeeping: if the server crashes in the instant before its WAL is
# flushed, the time is lost and written again on the next request. So its commit does not wait for the
# disk: under load, the fsync of these writes (each member's first request of the hour) pushed the member
# API's p99 over its target (see BENCHMARKS.md, member API). set_config(..., true) holds for this
# statement's own transaction only, so it is done only when the statement is one (autocommit), never
# inside a caller's transaction whose other writes must stay durable.
_TOKEN_TOUCH_SQL = (
    f"UPDATE {MemberApiToken._meta.db_table} SET last_used_at = %s "
    "WHERE id = %s AND set_config('synchronous_commit', 'off', true) IS NOT NULL"
)


def _token_touch(token_id: int, now: datetime) -> None:
    if connection.vendor == "postgresql" and not connection.in_atomic_block:
        with connection.cursor() as cursor:
            cursor.execute(_TOKEN_TOUCH_SQL, [now, token_id])
    else:
        MemberApiToken.objects.filter(pk=token_id).update(last_used_at=now)


def member_token_revoke(*, token: MemberApiToken, now: datetime | None = None) -> None:
    MemberApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(
        revoked_at=now or timezone.now()
    )


# --- Merges and erasure ---------------------------------------------------------------------------


def members_merge(*, survivor: Customer, merged: Customer) -> dict:
    """crm merge handler: fold `merged`'s one-per-customer rows into `survivor` before crm re-points the
    rest. The survivor keeps its own login and referral code when it has one; referrals that would
    become self-referrals are dropped."""
    moved: dict[str, int] = {}
    if MemberLogin.objects.filter(customer=survivor).exists():
        MemberLogin.objects.filter(customer=merged).delete()
    elif MemberLogin.objects.filter(customer=merged).update(customer=survivor):
        moved["loyalty.MemberLogin"] = 1
    if ReferralCode.objects.filter(customer=survivor).exists():
        ReferralCode.objects.filter(customer=merged).delete()
    elif ReferralCode.objects.filter(customer=merged).update(customer=survivor):
        moved["loyalty.ReferralCode"] = 1
    Referral.objects.filter(referrer=merged, referee=survivor).delete()
    Referral.objects.filter(referrer=survivor, referee=merged).delete()
    if Referral.objects.filter(referee=survivor).exists():
        Referral.objects.filter(referee=merged).delete()
    elif Referral.objects.filter(referee=merged).update(referee=survivor):
        moved["loyalty.Referral"] = 1
    return moved


def member_erase(*, customer: Customer) -> dict:
    """Remove a member's credentials (they hold the e-mail address); for crm's erasure."""
    tokens, _detail = MemberApiToken.objects.filter(customer=customer).delete()
    logins, _detail = MemberLogin.objects.filter(customer=customer).delete()
    return {"loyalty.MemberLogin": logins, "loyalty.MemberApiToken": tokens}


# --- Reads ----------------------------------------------------------------------------------------


# The programme's rules (settings, tiers, earn rules, promotions: four queries) change a few times a year
# but every GET /api/v1/me/points needs them, so each process keeps its copy for RULESET_TTL seconds. A
# renamed tier or a changed threshold shows in members' progress at most that much later; balances,
# which do not depend on it, are always read fresh.
RULESET_TTL = 30.0
_ruleset_cache: tuple[float, object] | None = None


def ruleset_cached():
    global _ruleset_cache
    cached = _ruleset_cache
    if cached is not None and time.monotonic() - cached[0] < RULESET_TTL:
        return cached[1]
    ruleset = ruleset_load()
    _ruleset_cache = (time.monotonic(), ruleset)
    return ruleset


def ruleset_cache_clear() -> None:
    global _ruleset_cache
    _ruleset_cache = None


def member_account(*, customer: Customer, now: datetime | None = None) -> LoyaltyAccount:
    """The member's account: the one token authentication already loaded, or looked up (made) now."""
    try:
        account = customer.loyalty_account  # cached when the customer came with select_related
    except LoyaltyAccount.DoesNotExist:
        account = None
    if account is None or account.status != LoyaltyAccount.Status.ACTIVE:
        account = account_for_customer(customer=customer, now=now)
    return account


@functools.cache
def _summary_sql(basis: str, *, customer: str = "%(customer)s", account: str = "%(account)s") -> str:
    """Qualifying value, points expiring soon, next expiry, next pending → available, for one account.
    `customer` and `account` are SQL: parameters by default, or columns of an enclosing query."""
    o, e, lot = Order._meta.db_table, LedgerEntry._meta.db_table, PointLot._meta.db_table
    if basis == "spend":
        qualifying = (
            f"SELECT COALESCE(SUM(total - refunded_amount), 0) FROM {o} "
            f"WHERE customer_id = {customer} AND placed_at >= %(since)s"
        )
    else:
        qualifying = (
            "SELECT COALESCE(SUM(CASE WHEN kind = 'earn' THEN points + pending_delta "
            "ELSE -COALESCE((parts->>'total')::bigint, 0) END), 0) "
            f"FROM {e} WHERE account_id = {account} AND kind IN ('earn', 'reverse') AND occurred_at >= %(since)s"
        )
    return f"""
        SELECT ({qualifying}) AS qualifying,
               (SELECT COALESCE(json_agg(json_build_array(g.expires_at, g.points) ORDER BY g.expires_at), '[]')
                  FROM (SELECT expires_at, SUM(remaining) AS points FROM {lot}
                         WHERE account_id = {account} AND remaining > 0 AND state = 'available'
                           AND expires_at > %(now)s AND expires_at <= %(until)s
                         GROUP BY expires_at) g) AS expiring_soon,
               MIN(expires_at) AS next_expiry_at,
               MIN(available_at) FILTER (WHERE state = 'pending') AS next_available_at
          FROM {lot}
         WHERE account_id = {account} AND remaining > 0
    """


def _summary_params(*, ruleset, now: datetime) -> dict:
    return {"since": ruleset.window_start(now), "now": now, "until": now + timedelta(days=EXPIRING_SOON_DAYS)}


def _summary_from_row(*, account: LoyaltyAccount, now: datetime, ruleset, row) -> AccountSummary:
    qualifying, expiring, next_expiry, next_available = row
    if isinstance(expiring, str | bytes):  # Django hands json back as text, to decode as it pleases
        expiring = json.loads(expiring)
    return account_summary_build(
        account=account,
        now=now,
        ruleset=ruleset,
        qualifying_value=Decimal(qualifying or 0).quantize(Decimal("0.01")),
        # The same items as loyalty.selectors.account_expiring_points: (instant, points) per expiry instant.
        expiring_soon=[
            expiring_points_item(datetime.fromisoformat(at), points) for at, points in expiring or []
        ],
        next_expiry_at=next_expiry,
        next_available_at=next_available,
    )


def _summary_one_statement(*, account: LoyaltyAccount, now: datetime, ruleset) -> AccountSummary:
    """`loyalty.selectors.account_summary` in one SQL statement (PostgreSQL) instead of three ORM queries.

    The same definitions, written once more for the hottest endpoint: on this path building the ORM
    queries costs more than running them. tests/loyalty/test_member_api.py pins the two to the same
    answers; change both together."""
    params = {
        "customer": account.customer_id,
        "account": account.pk,
        **_summary_params(ruleset=ruleset, now=now),
    }
    with server_binding_cursor() as cursor:
        cursor.execute(_summary_sql(ruleset.programme.tier_basis), params)
        row = cursor.fetchone()
    return _summary_from_row(account=account, now=now, ruleset=ruleset, row=row)


def member_summary(*, customer: Customer, now: datetime | None = None) -> AccountSummary:
    """The member's balances, tier, progress and expiring points (`loyalty.selectors.AccountSummary`)."""
    now = now or timezone.now()
    account = member_account(customer=customer, now=now)
    ruleset = ruleset_cached()
    if connection.vendor == "postgresql":
        return _summary_one_statement(account=account, now=now, ruleset=ruleset)
    return account_summary(account=account, now=now, ruleset=ruleset)
