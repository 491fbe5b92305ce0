"""Coupon codes: bulk generation, validation rules, and redemption that uses a code exactly as often as
it may be used, even when tills race."""

import threading
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.utils import timezone

from loyalty.models.rewards import Coupon, CouponRedemption
from loyalty.services import coupons as coupons_service
from loyalty.services.coupons import (
    CODE_ALPHABET,
    CouponCurrency,
    CouponExpired,
    CouponInactive,
    CouponMinSpend,
    CouponNotFound,
    CouponNotYetValid,
    CouponOrderConflict,
    CouponUsedUp,
    CouponWrongCustomer,
    code_display,
    code_normalise,
    codes_generate,
    coupon_codes_generate,
    coupon_issue,
    coupon_redeem,
    coupon_revoke,
    coupon_validate,
)
from tests.factories import CustomerFactory
from tests.loyalty.test_member_support import (
    member_test_setup,  # noqa: F401
    programme_make,
)

D = Decimal


# --- Codes ----------------------------------------------------------------------------------------


def test_codes_are_twelve_characters_without_look_alikes():
    codes = codes_generate(5000)

    assert len(codes) == 5000
    assert all(len(c) == 12 for c in codes)
    assert set("".join(codes)) <= set(CODE_ALPHABET)
    assert not set("01IO") & set(CODE_ALPHABET)
    assert len(set(codes)) == 5000


def test_codes_use_the_whole_alphabet_evenly():
    counts = {ch: 0 for ch in CODE_ALPHABET}
    for ch in "".join(codes_generate(20_000)):
        counts[ch] += 1
    expected = 20_000 * 12 / 32
    # 240,000 draws: each letter within 5 % of its share (a biased mapping would miss by far more).
    assert all(abs(n - expected) < expected * 0.05 for n in counts.values())


def test_typed_codes_are_normalised():
    assert code_normalise(" abcd-efgh jkm2 ") == "ABCDEFGHJKM2"
    assert code_display("ABCDEFGHJKM2") == "ABCD-EFGH-JKM2"


# --- Bulk generation ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_bulk_generation_creates_the_exact_number_of_unique_codes():
    programme = programme_make(uses_per_code=3)

    batch = coupon_codes_generate(programme=programme, quantity=20_000)

    coupons = Coupon.objects.filter(batch=batch)
    assert coupons.count() == 20_000
    assert coupons.values("code").distinct().count() == 20_000
    assert set(coupons.values_list("max_uses", flat=True)) == {3}


@pytest.mark.django_db
def test_bulk_generation_replaces_codes_that_collide_with_existing_ones(monkeypatch):
    programme = programme_make()
    taken = coupon_codes_generate(programme=programme, quantity=50)
    taken_codes = list(Coupon.objects.filter(batch=taken).values_list("code", flat=True))
    real = coupons_service.codes_generate
    calls = []

    def first_draw_collides(count, **kwargs):
        calls.append(count)
        if len(calls) == 1:
            return taken_codes[:10] + real(count - 10)  # 10 collide with existing codes
        return real(count)

    monkeypatch.setattr(coupons_service, "codes_generate", first_draw_collides)
    batch = coupon_codes_generate(programme=programme, quantity=100)

    assert Coupon.objects.filter(batch=batch).count() == 100
    assert calls == [100, 10]
    assert Coupon.objects.count() == 150


@pytest.mark.django_db
def test_bulk_generation_falls_back_to_bulk_create_off_postgresql(monkeypatch):
    programme = programme_make()
    monkeypatch.setattr(connection, "vendor", "sqlite")

    batch = coupon_codes_generate(programme=programme, quantity=500)

    assert Coupon.objects.filter(batch=batch).count() == 500


# --- Validation -----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_amount_coupon_gives_its_value_once_the_minimum_spend_is_reached():
    programme = programme_make(discount_value=D("20"), min_spend=D("100"))
    coupon = coupon_issue(programme=programme, customer=None)

    assert coupon_validate(code=coupon.code, order_total=D("100.00"), currency="CNY").discount == D("20.00")
    with pytest.raises(CouponMinSpend):
        coupon_validate(code=coupon.code, order_total=D("99.99"), currency="CNY")
    with pytest.raises(CouponCurrency):
        coupon_validate(code=coupon.code, order_total=D("150"), currency="USD")


@pytest.mark.django_db
def test_percent_coupon_rounds_to_the_cent_and_respects_its_cap():
    programme = programme_make(
        discount_kind="percent", discount_value=D("15"), min_spend=D("0"), max_discount=D("30")
    )
    coupon = coupon_issue(programme=programme, customer=None)

    assert coupon_validate(code=coupon.code, order_total=D("99.99"), currency="cny").discount == D("15.00")
    assert coupon_validate(code=coupon.code, order_total=D("1000"), currency="CNY").discount == D("30.00")


@pytest.mark.django_db
def test_discount_never_exceeds_the_order():
    programme = programme_make(discount_value=D("50"), min_spend=D("0"))
    coupon = coupon_issue(programme=programme, customer=None)

    assert coupon_validate(code=coupon.code, order_total=D("30"), currency="CNY").discount == D("30.00")


@pytest.mark.django_db
def test_validity_window_revocation_and_owner_are_enforced():
    now = timezone.now()
    owner, stranger = CustomerFactory(), CustomerFactory()
    later = programme_make(valid_from=now + timedelta(days=1))
    expiring = programme_make(valid_days_after_issue=7)
    not_yet = coupon_issue(programme=later, customer=None)
    personal = coupon_issue(programme=expiring, customer=owner, now=now - timedelta(days=8))
    fresh = coupon_issue(programme=expiring, customer=owner)
    ok = {"order_total": D("200"), "currency": "CNY"}

    with pytest.raises(CouponNotYetValid):
        coupon_validate(code=not_yet.code, **ok)
    with pytest.raises(CouponExpired):
        coupon_validate(code=personal.code, **ok)
    with pytest.raises(CouponWrongCustomer):
        coupon_validate(code=fresh.code, customer_id=stranger.pk, **ok)
    assert coupon_validate(code=fresh.code, customer_id=owner.pk, **ok).discount == D("20.00")
    coupon_revoke(coupon=fresh)
    with pytest.raises(CouponInactive):
        coupon_validate(code=fresh.code, **ok)
    with pytest.raises(CouponNotFound):
        coupon_validate(code="NOPE", **ok)


# --- Redemption -----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_single_use_code_redeems_once_and_the_same_order_replays():
    coupon = coupon_issue(programme=programme_make(), customer=None)
    order = {"order_total": D("150.00"), "currency": "CNY"}

    first = coupon_redeem(code=code_display(coupon.code).lower(), order_reference="POS-1", **order)
    replay = coupon_redeem(code=coupon.code, order_reference="POS-1", **order)

    assert first.created and not replay.created and replay.redemption.pk == first.redemption.pk
    assert first.redemption.discount == D("20.00")
    with pytest.raises(CouponUsedUp):
        coupon_redeem(code=coupon.code, order_reference="POS-2", **order)
    with pytest.raises(CouponOrderConflict):
        coupon_redeem(code=coupon.code, order_reference="POS-1", order_total=D("151"), currency="CNY")
    coupon.refresh_from_db()
    assert coupon.uses_count == 1


@pytest.mark.django_db
def test_multi_use_code_redeems_up_to_its_limit_and_unlimited_never_runs_out():
    limited = coupon_issue(programme=programme_make(uses_per_code=3, min_spend=D("0")), customer=None)
    unlimited = coupon_issue(programme=programme_make(uses_per_code=None, min_spend=D("0")), customer=None)
    order = {"order_total": D("10"), "currency": "CNY"}

    for n in range(3):
        coupon_redeem(code=limited.code, order_reference=f"L-{n}", **order)
    with pytest.raises(CouponUsedUp):
        coupon_redeem(code=limited.code, order_reference="L-3", **order)
    for n in range(10):
        coupon_redeem(code=unlimited.code, order_reference=f"U-{n}", **order)

    assert CouponRedemption.objects.filter(coupon=limited).count() == 3
    assert CouponRedemption.objects.filter(coupon=unlimited).count() == 10


def _race(n_threads, work):
    """Run `work(i)` in n threads released at the same instant; returns [(i, result or exception)]."""
    barrier = threading.Barrier(n_threads)
    results = []
    lock = threading.Lock()

    def run(i):
        try:
            barrier.wait()
            outcome = work(i)
        except Exception as exc:  # noqa: BLE001 - the test inspects what each thread got
            outcome = exc
        finally:
            connection.close()
        with lock:
            results.append((i, outcome))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


@pytest.mark.django_db(transaction=True)
def test_one_single_use_code_redeemed_from_many_tills_at_once_succeeds_exactly_once():
    coupon = coupon_issue(programme=programme_make(), customer=None)

    results = _race(
        16,
        lambda i: coupon_redeem(
            code=coupon.code, order_reference=f"TILL-{i}", order_total=D("188.00"), currency="CNY"
        ),
    )

    wins = [r for _i, r in results if not isinstance(r, Exception)]
    losses = [r for _i, r in results if isinstance(r, Exception)]
    assert len(results) == 16
    assert len(wins) == 1 and all(w.created for w in wins)
    assert len(losses) == 15 and all(isinstance(e, CouponUsedUp) for e in losses), losses
    coupon.refresh_from_db()
    assert coupon.uses_count == 1
    assert CouponRedemption.objects.filter(coupon=coupon).count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_multi_use_code_raced_by_many_tills_is_used_exactly_its_limit():
    coupon = coupon_issue(programme=programme_make(uses_per_code=5, min_spend=D("0")), customer=None)

    results = _race(
        16,
        lambda i: coupon_redeem(
            code=coupon.code, order_reference=f"TILL-{i}", order_total=D("10"), currency="CNY"
        ),
    )

    assert sum(not isinstance(r, Exception) for _i, r in results) == 5
    assert all(isinstance(r, CouponUsedUp) for _i, r in results if isinstance(r, Exception))
    coupon.refresh_from_db()
    assert coupon.uses_count == 5 == CouponRedemption.objects.filter(coupon=coupon).count()
