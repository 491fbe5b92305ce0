"""The member portal under /member/: server-rendered pages where a member signs in and sees only their own
points, history, rewards, coupons and referral link.

The member is kept in the session under its own keys, beside (never instead of) a staff login: signing a
member in or out does not touch `request.user`. Every page looks the member up from the session and reads
only rows of that customer; an id in a URL that belongs to someone else is a plain 404.
"""

from __future__ import annotations

import uuid
from functools import wraps

import segno
from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import Http404, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme, urlencode
from django.utils.safestring import mark_safe
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_http_methods, require_POST

from loyalty.models import EntryKind
from loyalty.selectors import AccountHistory, account_expiring_points
from loyalty.services.coupons import code_display, coupon_unusable_reason, member_coupons
from loyalty.services.ledger import LoyaltyError
from loyalty.services.members import (
    MagicLinkInvalid,
    MemberLockedOut,
    magic_link_consume,
    magic_link_send,
    member_account,
    member_for_session,
    member_password_set,
    member_session_hash,
    member_sign_in,
    member_summary,
    referral_stats,
    ruleset_cached,
    signup_link_send,
)
from loyalty.services.rewards import reward_redeem, reward_redemption_for_member, rewards_catalogue

SESSION_MEMBER = "loyalty_member_customer_id"
SESSION_HASH = "loyalty_member_hash"
HISTORY_PAGE_SIZE = 20


# --- Session --------------------------------------------------------------------------------------


def _sign_member_in(request, login) -> None:
    # A new session key on sign-in, so a key planted before it (session fixation) is worthless after.
    request.session.cycle_key()
    request.session[SESSION_MEMBER] = login.customer_id
    request.session[SESSION_HASH] = member_session_hash(login)


def _sign_member_out(request) -> None:
    request.session.pop(SESSION_MEMBER, None)
    request.session.pop(SESSION_HASH, None)
    request.session.cycle_key()


def member_required(view):
    @wraps(view)
    def wrapper(request, *args, **kwargs):
        login = member_for_session(
            customer_id=request.session.get(SESSION_MEMBER), session_hash=request.session.get(SESSION_HASH)
        )
        if login is None:
            if request.session.get(SESSION_MEMBER):
                _sign_member_out(request)  # password changed elsewhere, or the member was erased
            return redirect(f"{reverse('loyalty:login')}?{urlencode({'next': request.get_full_path()})}")
        request.member = login
        return view(request, *args, **kwargs)

    return wrapper


def _next_url(request, default: str) -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    if target.startswith("/member/") and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return default


def _link_builder(request):
    return lambda token: request.build_absolute_uri(reverse("loyalty:link", args=[token]))


# --- Forms ----------------------------------------------------------------------------------------


class PasswordSignInForm(forms.Form):
    email = forms.EmailField(label=gettext_lazy("Email"))
    password = forms.CharField(label=gettext_lazy("Password"), widget=forms.PasswordInput, strip=False)


class EmailLinkForm(forms.Form):
    email = forms.EmailField(label=gettext_lazy("Email"))


class JoinForm(forms.Form):
    email = forms.EmailField(label=gettext_lazy("Email"))
    name = forms.CharField(label=gettext_lazy("Name"), max_length=200, required=False)
    ref = forms.CharField(max_length=16, required=False, widget=forms.HiddenInput)


class SetPasswordForm(forms.Form):
    password1 = forms.CharField(label=gettext_lazy("New password"), widget=forms.PasswordInput, strip=False)
    password2 = forms.CharField(label=gettext_lazy("Repeat it"), widget=forms.PasswordInput, strip=False)

    def clean(self):
        data = super().clean()
        if data.get("password1") != data.get("password2"):
            raise ValidationError(_("The two passwords differ."))
        return data


# --- Signing in -----------------------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
def login_view(request):
    next_url = _next_url(request, reverse("loyalty:home"))
    form = PasswordSignInForm(request.POST or None)
    link_form = EmailLinkForm()
    if request.method == "POST" and form.is_valid():
        try:
            login = member_sign_in(
                request=request, email=form.cleaned_data["email"], password=form.cleaned_data["password"]
            )
        except MemberLockedOut as exc:
            form.add_error(None, exc.message)
        else:
            if login is not None:
                _sign_member_in(request, login)
                return HttpResponseRedirect(next_url)
            form.add_error(None, _("Wrong email or password."))
    return render(
        request,
        "loyalty/member/login.html",
        {"form": form, "link_form": link_form, "next": next_url},
        status=200 if not form.errors else 400,
    )


@require_POST
def link_request_view(request):
    form = EmailLinkForm(request.POST)
    if not form.is_valid():
        return render(
            request,
            "loyalty/member/login.html",
            {"form": PasswordSignInForm(), "link_form": form, "next": _next_url(request, "")},
            status=400,
        )
    # The same page whether or not the address is a member's: the form must not reveal who is one.
    magic_link_send(email=form.cleaned_data["email"], build_url=_link_builder(request))
    return render(request, "loyalty/member/link_sent.html", {"email": form.cleaned_data["email"]})


@require_http_methods(["GET", "POST"])
def link_view(request, token: str):
    # GET only shows a button: mail scanners that open links must not use up the one-time token.
    if request.method == "GET":
        return render(request, "loyalty/member/link_confirm.html", {"token": token})
    try:
        login = magic_link_consume(token=token)
    except MagicLinkInvalid as exc:
        return render(request, "loyalty/member/link_invalid.html", {"message": exc.message}, status=400)
    _sign_member_in(request, login)
    return redirect("loyalty:home")


@require_http_methods(["GET", "POST"])
def join_view(request):
    form = JoinForm(request.POST or None, initial={"ref": request.GET.get("ref", "")})
    if request.method == "POST" and form.is_valid():
        signup_link_send(
            email=form.cleaned_data["email"],
            name=form.cleaned_data["name"],
            referral_code=form.cleaned_data["ref"],
            build_url=_link_builder(request),
        )
        return render(
            request, "loyalty/member/link_sent.html", {"email": form.cleaned_data["email"], "joining": True}
        )
    return render(request, "loyalty/member/join.html", {"form": form, "ref": request.GET.get("ref", "")})


@require_POST
def logout_view(request):
    _sign_member_out(request)
    return redirect("loyalty:login")


# --- Member pages ---------------------------------------------------------------------------------


@member_required
def home_view(request):
    customer = request.member.customer
    now = timezone.now()
    summary = member_summary(customer=customer, now=now)
    stats = referral_stats(customer=customer)
    return render(
        request,
        "loyalty/member/home.html",
        {
            "summary": summary,
            "expiring": account_expiring_points(account=member_account(customer=customer), now=now),
            "referral_link": request.build_absolute_uri(f"{reverse('loyalty:join')}?ref={stats.code}"),
            "referral": stats,
        },
    )


@member_required
def history_view(request):
    account = member_account(customer=request.member.customer)
    page = Paginator(AccountHistory(account=account), HISTORY_PAGE_SIZE).get_page(request.GET.get("page"))
    expiring = account_expiring_points(account=account, now=timezone.now()) if page.number == 1 else []
    return render(
        request,
        "loyalty/member/history.html",
        {"page": page, "expiring": expiring, "kinds": EntryKind.choices},
    )


@member_required
def tiers_view(request):
    """Every tier with its threshold and benefits, the member's own marked, and the way to the next."""
    summary = member_summary(customer=request.member.customer, now=timezone.now())
    ruleset = ruleset_cached()
    current_rank = summary.tier.rank if summary.tier else -1
    tiers = [
        {
            "tier": tier,
            "threshold": ruleset.threshold_of(tier),
            # 1.5, 2 or 10, not 1.50 or 1E+1
            "multiplier": f"{tier.earn_multiplier.normalize():f}",
            "current": summary.tier is not None and tier.pk == summary.tier.pk,
            "reached": tier.rank <= current_rank,
        }
        for tier in ruleset.tiers
    ]
    return render(
        request,
        "loyalty/member/tiers.html",
        {"summary": summary, "tiers": tiers, "basis": ruleset.programme.tier_basis},
    )


@member_required
def rewards_view(request):
    customer = request.member.customer
    account = member_account(customer=customer)
    offers = rewards_catalogue(customer=customer, available_points=account.available, tier_id=account.tier_id)
    return render(
        request,
        "loyalty/member/rewards.html",
        {
            "offers": offers,
            "available": account.available,
        },
    )


def _offer(request, pk: int):
    """The reward `pk` as this member sees it in the catalogue (None when it is not on offer)."""
    customer = request.member.customer
    account = member_account(customer=customer)
    offers = rewards_catalogue(customer=customer, available_points=account.available, tier_id=account.tier_id)
    return account, next((offer for offer in offers if offer.reward.pk == pk), None)


@member_required
@require_http_methods(["GET", "POST"])
def reward_redeem_view(request, pk: int):
    """GET: the confirmation page (what it costs, what is left after). POST, from its button: redeem.

    The confirmation is a page of its own, not a script's dialog, so that it works in any browser, and
    its form carries one idempotency key: a double tap or a resubmitted form redeems once."""
    if request.method == "GET":
        account, offer = _offer(request, pk)
        if offer is None:
            raise Http404
        return render(
            request,
            "loyalty/member/redeem_confirm.html",
            {
                "offer": offer,
                "available": account.available,
                "remaining": account.available - offer.reward.points_price,
                "idempotency_key": uuid.uuid4().hex,
            },
        )
    key = request.POST.get("idempotency_key", "")
    if not 8 <= len(key) <= 100:
        key = uuid.uuid4().hex
    try:
        result = reward_redeem(customer=request.member.customer, reward_id=pk, idempotency_key=f"{key}:{pk}")
    except LoyaltyError as exc:
        messages.error(request, exc.message)
        return redirect("loyalty:rewards")
    if result.created:
        messages.success(request, _("Redeemed! Your coupon is below."))
    return redirect("loyalty:redemption", pk=result.redemption.pk)


def _coupon_qr_svg(code: str) -> str:
    """The coupon's code as a QR code, inline SVG sized by CSS, for the till's scanner (核销).

    A regular QR code, never a Micro QR (which segno.make picks for short texts): phone cameras and
    most till scanners do not read Micro QR. The text is the bare code, as the till API takes it."""
    qr = segno.make_qr(code, error="m")
    return qr.svg_inline(scale=1, border=4, omitsize=True, svgclass="qr", title=code_display(code))


@member_required
def redemption_view(request, pk: int):
    redemption = reward_redemption_for_member(customer_id=request.member.customer_id, redemption_id=pk)
    if redemption is None:
        raise Http404
    return render(
        request,
        "loyalty/member/redemption.html",
        {
            "redemption": redemption,
            "display_code": code_display(redemption.coupon.code),
            # segno writes the SVG itself; the code it encodes is ours (A-Z, 2-9), so nothing to escape.
            "qr_svg": mark_safe(_coupon_qr_svg(redemption.coupon.code)),  # noqa: S308
        },
    )


@member_required
def coupons_view(request):
    now = timezone.now()
    coupons = []
    for coupon in member_coupons(customer_id=request.member.customer_id)[:200]:
        _valid_from, valid_until = coupon.effective_window()
        unusable = coupon_unusable_reason(coupon=coupon, now=now)
        coupons.append(
            {
                "coupon": coupon,
                "display_code": code_display(coupon.code),
                "valid_until": valid_until,
                "usable": unusable is None,
                "qr_svg": mark_safe(_coupon_qr_svg(coupon.code)) if unusable is None else "",  # noqa: S308
                "unusable_message": unusable.message if unusable is not None else "",
            }
        )
    return render(request, "loyalty/member/coupons.html", {"coupons": coupons})


@member_required
def referral_view(request):
    stats = referral_stats(customer=request.member.customer)
    link = request.build_absolute_uri(f"{reverse('loyalty:join')}?ref={stats.code}")
    return render(request, "loyalty/member/referral.html", {"referral": stats, "referral_link": link})


@member_required
@require_http_methods(["GET", "POST"])
def password_view(request):
    form = SetPasswordForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            login = member_password_set(login=request.member, password=form.cleaned_data["password1"])
        except ValidationError as exc:
            form.add_error("password1", exc)
        else:
            # Keep this session signed in; every other session of the member now fails the hash check.
            request.session[SESSION_HASH] = member_session_hash(login)
            messages.success(request, _("Your password has been set."))
            return redirect("loyalty:home")
    return render(request, "loyalty/member/password.html", {"form": form})
