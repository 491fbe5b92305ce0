"""The pages a message's links open: the open pixel, the click redirect and unsubscribe. Thin: they read the
signed token (campaigns/signing.py) and call campaigns.services.tracking.

None of them needs a session: the token is the proof. A bad or forged token gets a 404 page (the pixel a
404 with no body worth showing), never a 500; a click never goes to a URL the request names, only to the
message's own recorded links."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.utils import timezone, translation
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods

from campaigns import signing
from campaigns.models import Message
from campaigns.services.tracking import LinkNotFound, click_record, open_record, unsubscribe_apply
from crm.models import Customer

# A transparent 1x1 GIF.
PIXEL = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)


def _no_index(response):
    response["X-Robots-Tag"] = "noindex, nofollow"
    response["Referrer-Policy"] = "no-referrer"
    return response


def _invalid(request, message: str, status: int = 404):
    return _no_index(render(request, "campaigns/link_invalid.html", {"message": message}, status=status))


@never_cache
@require_GET
def open_pixel(request, token: str):
    try:
        message_id = signing.open_token_read(token)
    except signing.BadToken:
        response = HttpResponse(PIXEL, content_type="image/gif", status=404)
        return _no_index(response)
    open_record(message_id=message_id, now=timezone.now())
    return _no_index(HttpResponse(PIXEL, content_type="image/gif"))


@never_cache
@require_GET
def click(request, token: str):
    try:
        ref = signing.click_token_read(token)
        url = click_record(message_id=ref.message_id, link=ref.link, now=timezone.now())
    except (signing.BadToken, LinkNotFound):
        return _invalid(request, _("This link is not valid. It may have been copied incompletely."))
    # HttpResponseRedirect allows only http, https and ftp, so even a stored link of another scheme
    # (never recorded by tracked_content) could not become a javascript: redirect.
    return _no_index(HttpResponseRedirect(url))


def _mask(channel: str, address: str) -> str:
    """Enough of the address for the customer to recognise it, not enough to give it away."""
    if not address:
        return ""
    if channel == "email" and "@" in address:
        name, _at, domain = address.partition("@")
        return f"{name[:1]}***@{domain}"
    if channel == "sms":
        return f"{address[:-4][:5]}****{address[-4:]}" if len(address) > 6 else "****"
    return ""


def _customer_language(message: Message | None) -> str:
    language = ""
    if message is not None:
        language = (
            Customer.objects.filter(pk=message.customer_id).values_list("language", flat=True).first() or ""
        )
    return language or settings.MESSAGING_DEFAULT_LANGUAGE


@never_cache
@csrf_exempt  # RFC 8058: mailbox providers POST here without a session; the signed token is the proof
@require_http_methods(["GET", "HEAD", "POST"])
def unsubscribe(request, token: str):
    """GET shows a confirmation (link scanners and mail clients prefetch GETs: a GET must change
    nothing); POST unsubscribes, whether the customer's button or the mailbox provider's one-click
    POST (body List-Unsubscribe=One-Click)."""
    try:
        message_id = signing.unsubscribe_token_read(token)
    except signing.BadToken:
        return _invalid(
            request, _("This unsubscribe link is not valid. It may have been copied incompletely.")
        )
    one_click = request.method == "POST" and request.POST.get("List-Unsubscribe") == "One-Click"
    message = Message.objects.filter(pk=message_id).only("customer_id", "channel", "address").first()
    # The page speaks the customer's language unless the visitor chose one with the language buttons.
    language = request.COOKIES.get(settings.LANGUAGE_COOKIE_NAME) or _customer_language(message)
    with translation.override(language):
        if request.method == "POST":
            result = unsubscribe_apply(
                message_id=message_id, how="one_click" if one_click else "link", now=timezone.now()
            )
            if one_click:
                return _no_index(HttpResponse(_("You are unsubscribed."), content_type="text/plain"))
            context = {"channel": result.channel, "done": True, "message": message}
        else:
            context = {"channel": message.channel if message else "", "done": False, "message": message}
        if message is None:
            return _invalid(request, _("This unsubscribe link no longer works: the message was deleted."))
        context.update(
            {
                "token": token,
                "channel_label": message.get_channel_display(),
                "address": _mask(message.channel, message.address),
            }
        )
        return _no_index(render(request, "campaigns/unsubscribe.html", context))
