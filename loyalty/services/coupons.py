"""Coupon codes: bulk generation, issuing one to a member, and the store's validate/redeem.

Codes are 12 characters from a 32-letter alphabet without the look-alikes 0/O and 1/I, so each character
carries exactly 5 random bits (60 bits a code, no modulo bias) and codes read aloud or typed from a receipt
survive. With 100,000 live codes a blind guess hits one with probability ~1e-13; the store API is also
rate-limited per key. Uniqueness is the database's job (unique index); a collision is simply regenerated.
"""

from __future__ import annotations

import base64
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

from django.db import IntegrityError, connection, transaction
from django.db.models import F, Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from loyalty.models.rewards import Coupon, CouponBatch, CouponProgramme, CouponRedemption

logger = logging.getLogger(__name__)

CODE_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"
CODE_LENGTH = 12
MAX_BATCH = 1_000_000
_COPY_CHUNK = 50_000
_CENT = Decimal("0.01")
# base32's own alphabet (A–Z, 2–7) mapped one-to-one onto ours: one 5-bit group, one character.
_B32_TO_CODE = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", CODE_ALPHABET.encode())


def codes_generate(count: int, *, length: int = CODE_LENGTH) -> list[str]:
    """`count` random codes (duplicates possible but astronomically rare; the caller's unique index decides)."""
    if count <= 0:
        return []
    # 5 bytes -> 8 characters; draw enough bytes for count*length characters in one call.
    chars = count * length
    raw = secrets.token_bytes(-(-chars // 8) * 5)
    text = base64.b32encode(raw).translate(_B32_TO_CODE).decode()
    return [text[i : i + length] for i in range(0, chars, length)]


def code_normalise(raw: str) -> str:
    """What a human typed to what we store: upper case, without spaces or dashes."""
    return "".join(ch for ch in (raw or "").upper() if ch not in " -\t\r\n")


def code_display(code: str) -> str:
    """ABCD-EFGH-JKLM: easier to read off a screen; `code_normalise` takes either form."""
    return "-".join(code[i : i + 4] for i in range(0, len(code), 4))


# --- Errors ---------------------------------------------------------------------------------------


class CouponError(Exception):
    """A code that cannot be used. `code` is stable for API clients; `message` is for people; `field` names
    the request field at fault when one is (None: the request as a whole); `status_code` is the HTTP answer."""

    code = "invalid"
    message = _("This coupon cannot be used.")
    field: str | None = None
    status_code = 409

    def __init__(self, message=None):
        if message is not None:
            self.message = message
        super().__init__(str(self.message))


class CouponNotFound(CouponError):
    code = "not_found"
    message = _("No coupon has this code.")
    status_code = 404


class CouponInactive(CouponError):
    code = "inactive"
    message = _("This coupon has been withdrawn.")


class CouponNotYetValid(CouponError):
    code = "not_yet_valid"
    message = _("This coupon is not valid yet.")


class CouponExpired(CouponError):
    code = "expired"
    message = _("This coupon has expired.")


class CouponUsedUp(CouponError):
    code = "used_up"
    message = _("This coupon has already been used.")


class CouponMinSpend(CouponError):
    code = "min_spend"
    message = _("The order does not reach this coupon's minimum spend.")


class CouponCurrency(CouponError):
    code = "currency"
    message = _("This coupon is for orders in another currency.")


class CouponWrongCustomer(CouponError):
    code = "wrong_customer"
    message = _("This coupon belongs to another member.")


class CouponCustomerRequired(CouponError):
    code = "customer_required"
    message = _("This coupon was issued to a member: send that member's customer_external_id.")
    field = "customer_external_id"
    status_code = 400


class CouponOrderConflict(CouponError):
    """The order was already redeemed with this coupon, and the request differs in `field`."""

    code = "order_conflict"

    def __init__(self, *, order_reference: str, field: str):
        self.field = field
        super().__init__(
            _(
                "Order %(order)s already redeemed this coupon with a different %(field)s; "
                "an order reference cannot be reused for another request."
            )
            % {"order": order_reference, "field": field}
        )


# --- Generation -----------------------------------------------------------------------------------


def _insert_codes_copy(codes: list[str], *, programme_id: int, batch_id: int, max_uses, issued_at) -> int:
    """COPY the codes into a temporary table, then move them over skipping any that already exist.
    Returns how many were inserted. PostgreSQL only."""
    table = Coupon._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TEMP TABLE IF NOT EXISTS loyalty_coupon_stage (code varchar(16)) ON COMMIT DROP"
        )
        cursor.execute("TRUNCATE loyalty_coupon_stage")
        with cursor.copy("COPY loyalty_coupon_stage (code) FROM STDIN") as copy:
            for start in range(0, len(codes), _COPY_CHUNK):
                copy.write("\n".join(codes[start : start + _COPY_CHUNK]) + "\n")
        cursor.execute(
            f"""
            INSERT INTO {table} (programme_id, batch_id, code, max_uses, uses_count, issued_at)
            SELECT %s, %s, code, %s, 0, %s FROM loyalty_coupon_stage
            ON CONFLICT (code) DO NOTHING
            """,
            [programme_id, batch_id, max_uses, issued_at],
        )
        return cursor.rowcount


def _insert_codes_orm(codes: list[str], *, programme_id: int, batch_id: int, max_uses, issued_at) -> int:
    before = Coupon.objects.filter(batch_id=batch_id).count()
    Coupon.objects.bulk_create(
        [
            Coupon(
                programme_id=programme_id, batch_id=batch_id, code=c, max_uses=max_uses, issued_at=issued_at
            )
            for c in codes
        ],
        batch_size=2000,
        ignore_conflicts=True,
    )
    return Coupon.objects.filter(batch_id=batch_id).count() - before


@transaction.atomic
def coupon_codes_generate(
    *, programme: CouponProgramme, quantity: int, created_by=None, now: datetime | None = None
) -> CouponBatch:
    """Create `quantity` new unique codes of `programme` in one batch, all or nothing.

    Codes that collide with existing ones (or with each other) are dropped by the unique index and
    replaced by fresh ones until the batch is full."""
    if not 0 < quantity <= MAX_BATCH:
        raise ValueError(f"quantity must be between 1 and {MAX_BATCH}")
    now = now or timezone.now()
    batch = CouponBatch.objects.create(
        programme=programme, quantity=quantity, created_by=created_by, created_at=now
    )
    insert = _insert_codes_copy if connection.vendor == "postgresql" else _insert_codes_orm
    inserted = 0
    for _attempt in range(10):
        missing = quantity - inserted
        if missing == 0:
            return batch
        codes = list(set(codes_generate(missing)))
        inserted += insert(
            codes,
            programme_id=programme.pk,
            batch_id=batch.pk,
            max_uses=programme.uses_per_code,
            issued_at=now,
        )
    raise RuntimeError("could not generate enough unique coupon codes")  # pragma: no cover - 60-bit space


def coupon_issue(*, programme: CouponProgramme, customer, now: datetime | None = None) -> Coupon:
    """One new code for one member (a reward, a goodwill gesture). Joins the caller's transaction."""
    now = now or timezone.now()
    valid_until = None
    if programme.valid_days_after_issue:
        valid_until = now + timedelta(days=programme.valid_days_after_issue)
    for _attempt in range(5):
        try:
            # A savepoint, so a collision on the code does not spoil the caller's transaction.
            with transaction.atomic():
                return Coupon.objects.create(
                    programme=programme,
                    code=codes_generate(1)[0],
                    customer=customer,
                    max_uses=programme.uses_per_code,
                    valid_until=valid_until,
                    issued_at=now,
                )
        except IntegrityError:
            logger.warning("coupon code collision; drawing another")
    raise RuntimeError("could not draw a unique coupon code")  # pragma: no cover


def coupons_issue(
    *, programme: CouponProgramme, customer_ids: list[int], now: datetime | None = None
) -> dict[int, Coupon]:
    """One new code each for many members at once (a journey's coupon step over a batch): one INSERT
    for the lot instead of one per member. Joins the caller's transaction; the caller's idempotency (a
    journey step recorded in the same transaction) decides who gets one."""
    now = now or timezone.now()
    if not customer_ids:
        return {}
    valid_until = None
    if programme.valid_days_after_issue:
        valid_until = now + timedelta(days=programme.valid_days_after_issue)
    for _attempt in range(5):
        codes = codes_generate(len(customer_ids))
        if len(set(codes)) != len(codes):
            continue
        try:
            # A savepoint, so a collision with an existing code does not spoil the caller's transaction.
            with transaction.atomic():
                created = Coupon.objects.bulk_create(
                    [
                        Coupon(
                            programme=programme,
                            code=code,
                            customer_id=customer_id,
                            max_uses=programme.uses_per_code,
                            valid_until=valid_until,
                            issued_at=now,
                        )
                        for customer_id, code in zip(customer_ids, codes, strict=True)
                    ],
                    batch_size=2000,
                )
            return {c.customer_id: c for c in created}
        except IntegrityError:
            logger.warning("coupon code collision in a bulk issue; drawing again")
    raise RuntimeError("could not draw unique coupon codes")  # pragma: no cover


@transaction.atomic
def coupon_revoke(*, coupon: Coupon, now: datetime | None = None) -> Coupon:
    Coupon.objects.filter(pk=coupon.pk, revoked_at__isnull=True).update(revoked_at=now or timezone.now())
    coupon.refresh_from_db()
    return coupon


# --- Validation and redemption --------------------------------------------------------------------


def coupon_discount(*, programme: CouponProgramme, order_total: Decimal) -> Decimal:
    """The discount the programme gives on an order of `order_total`: never more than the order."""
    if programme.discount_kind == CouponProgramme.DiscountKind.PERCENT:
        discount = (order_total * programme.discount_value / 100).quantize(_CENT, rounding=ROUND_HALF_UP)
        if programme.max_discount is not None:
            discount = min(discount, programme.max_discount)
    else:
        discount = programme.discount_value
    return min(discount, order_total).quantize(_CENT)


@dataclass(frozen=True)
class CouponCheck:
    coupon: Coupon
    discount: Decimal


def coupon_unusable_reason(*, coupon: Coupon, now: datetime) -> CouponError | None:
    """Why `coupon` cannot be used at `now` on any order (None: it can): withdrawn (the coupon revoked or
    its programme switched off), outside its validity window, or used up. The one rule that the store's
    validation and redemption and the member portal's list share; the checks that depend on the order
    (owner, currency, minimum spend) are `_check`'s."""
    programme = coupon.programme
    if coupon.revoked_at is not None or not programme.is_active:
        return CouponInactive()
    valid_from, valid_until = coupon.effective_window(programme)
    if valid_from and now < valid_from:
        return CouponNotYetValid()
    if valid_until and now >= valid_until:
        return CouponExpired()
    if coupon.max_uses is not None and coupon.uses_count >= coupon.max_uses:
        return CouponUsedUp()
    return None


def _check(*, coupon: Coupon, order_total: Decimal, currency: str, customer_id, now) -> CouponCheck:
    programme = coupon.programme
    unusable = coupon_unusable_reason(coupon=coupon, now=now)
    if unusable is not None:
        raise unusable
    if coupon.customer_id and customer_id is None:
        # A member's coupon is theirs alone: a till that does not say who is paying cannot use it.
        raise CouponCustomerRequired()
    if coupon.customer_id and coupon.customer_id != customer_id:
        raise CouponWrongCustomer()
    if currency.upper() != programme.currency.upper():
        raise CouponCurrency()
    if order_total < programme.min_spend:
        raise CouponMinSpend()
    return CouponCheck(coupon=coupon, discount=coupon_discount(programme=programme, order_total=order_total))


def coupon_validate(
    *, code: str, order_total: Decimal, currency: str, customer_id: int | None = None, now=None
) -> CouponCheck:
    """Would this code apply to this order, and for how much? Changes nothing. Raises a CouponError."""
    now = now or timezone.now()
    coupon = Coupon.objects.select_related("programme").filter(code=code_normalise(code)).first()
    if coupon is None:
        raise CouponNotFound()
    return _check(coupon=coupon, order_total=order_total, currency=currency, customer_id=customer_id, now=now)


@dataclass(frozen=True)
class CouponRedeemResult:
    redemption: CouponRedemption
    created: bool


def _redemption_replayed(
    previous: CouponRedemption, *, order_total: Decimal, currency: str, customer_id, store: str, api_key
) -> CouponRedemption:
    """The earlier redemption of this order, when the request asks for the same thing again; refuses the
    same (coupon, order_reference) with a different payload, naming the first field (as the store API
    calls it) that differs. Every field that changes what the redemption means is compared: another
    store, customer, amount, currency or API key is another order, not a retry of this one."""
    asked = {
        "order_total": order_total,
        "currency": currency.upper(),
        "customer_external_id": customer_id,
        "store": store,
        "api_key": getattr(api_key, "pk", None),
    }
    stored = {
        "order_total": previous.order_total,
        "currency": previous.currency,
        "customer_external_id": previous.customer_id,
        "store": previous.store,
        "api_key": previous.api_key_id,
    }
    for field, value in asked.items():
        if stored[field] != value:
            raise CouponOrderConflict(order_reference=previous.order_reference, field=field)
    return previous


def coupon_redeem(
    *,
    code: str,
    order_reference: str,
    order_total: Decimal,
    currency: str,
    customer_id: int | None = None,
    store: str = "",
    api_key=None,
    now: datetime | None = None,
) -> CouponRedeemResult:
    """Use the code on one order. Raises a CouponError if it cannot be used.

    Two tills redeeming the same single-use code at once: both lock the coupon row; the first increments
    `uses_count` and commits, the second then sees the new count and gets CouponUsedUp. The store retrying
    the same order gets the first redemption back (created=False) instead of a second use."""
    now = now or timezone.now()
    normalised = code_normalise(code)
    with transaction.atomic():
        coupon = (
            Coupon.objects.select_for_update(of=("self",))
            .select_related("programme")
            .filter(code=normalised)
            .first()
        )
        if coupon is None:
            raise CouponNotFound()
        previous = CouponRedemption.objects.filter(coupon=coupon, order_reference=order_reference).first()
        if previous is not None:
            replayed = _redemption_replayed(
                previous,
                order_total=order_total,
                currency=currency,
                customer_id=customer_id,
                store=store,
                api_key=api_key,
            )
            return CouponRedeemResult(redemption=replayed, created=False)
        check = _check(
            coupon=coupon, order_total=order_total, currency=currency, customer_id=customer_id, now=now
        )
        # Conditional, so even without the row lock the count could never pass max_uses.
        updated = (
            Coupon.objects.filter(pk=coupon.pk)
            .filter(Q(max_uses__isnull=True) | Q(uses_count__lt=F("max_uses")))
            .update(uses_count=F("uses_count") + 1)
        )
        if not updated:
            raise CouponUsedUp()
        redemption = CouponRedemption.objects.create(
            coupon=coupon,
            order_reference=order_reference,
            customer_id=customer_id,  # a member's coupon has been checked to be redeemed by that member
            order_total=order_total,
            currency=currency.upper(),
            discount=check.discount,
            store=store,
            api_key=api_key,
            redeemed_at=now,
        )
    return CouponRedeemResult(redemption=redemption, created=True)


# --- Reads ----------------------------------------------------------------------------------------


def member_coupons(*, customer_id: int):
    """A member's coupons, newest first, with their programme (one query)."""
    return (
        Coupon.objects.filter(customer_id=customer_id)
        .select_related("programme")
        .order_by("-issued_at", "-id")
    )


def coupons_issue_many(*, programme: CouponProgramme, customer_ids: list[int], now: datetime) -> list[Coupon]:
    """One new code for each customer of `customer_ids` (in that order; a customer listed twice gets two),
    in a few queries whatever their number (the messages of a win-back batch each carry their own code).
    Joins the caller's transaction; codes that collide with existing ones are drawn again."""
    if not customer_ids:
        return []
    valid_until = (
        now + timedelta(days=programme.valid_days_after_issue) if programme.valid_days_after_issue else None
    )
    issued: list[Coupon | None] = [None] * len(customer_ids)
    missing = list(range(len(customer_ids)))
    for _attempt in range(5):
        codes = codes_generate(len(missing))
        rows = [
            Coupon(
                programme=programme,
                code=code,
                customer_id=customer_ids[i],
                max_uses=programme.uses_per_code,
                valid_until=valid_until,
                issued_at=now,
            )
            for i, code in zip(missing, codes, strict=True)
        ]
        Coupon.objects.bulk_create(rows, ignore_conflicts=True)
        # ignore_conflicts hands back no ids: read the rows back by code, and keep those that are ours.
        stored = {
            c.code: c
            for c in Coupon.objects.filter(code__in=codes, programme=programme, issued_at=now).select_related(
                "programme"
            )
        }
        still = []
        for i, code in zip(missing, codes, strict=True):
            coupon = stored.pop(code, None)  # pop: a code drawn twice in one go serves one customer only
            if coupon is not None and coupon.customer_id == customer_ids[i]:
                issued[i] = coupon
            else:
                still.append(i)
        missing = still
        if not missing:
            return issued  # type: ignore[return-value]
        logger.warning("coupon code collisions; drawing again", extra={"count": len(missing)})
    raise RuntimeError("could not draw unique coupon codes")  # pragma: no cover - 60-bit space
