"""The address of the client behind our own proxies: django-axes' AXES_CLIENT_IP_CALLABLE.

settings.TRUSTED_PROXY_COUNT says how many proxies in front of the web servers append the address they
saw to X-Forwarded-For. The client is then the TRUSTED_PROXY_COUNT-th address from the right; anything
to its left was written by the client and proves nothing. With 0 (the default) the header is ignored
and the peer's address (REMOTE_ADDR) is the client. This is exactly DRF's `get_ident` with
NUM_PROXIES = TRUSTED_PROXY_COUNT (config/settings.py sets both from one variable), so the member
sign-in throttle and the lockout count the same client.
"""

import ipaddress

from django.conf import settings


def client_ip_address(request) -> str | None:
    peer = request.META.get("REMOTE_ADDR")
    proxies = settings.TRUSTED_PROXY_COUNT
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR")
    if not proxies or forwarded is None:
        return peer
    addresses = forwarded.split(",")
    candidate = addresses[-min(proxies, len(addresses))].strip()
    try:
        ipaddress.ip_address(candidate)
    except ValueError:
        # A proxy that wrote no usable address (or a client that reached us with fewer hops than
        # configured): axes keeps the address in an inet column, so count the peer rather than fail.
        return peer
    return candidate
