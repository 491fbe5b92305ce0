"""The brand in the admin's header (settings BRAND_NAME, BRAND_LOGO) and the project's stylesheet, as the
callables unfold's settings take (each receives the request)."""

from __future__ import annotations

from django.conf import settings
from django.templatetags.static import static


def brand_logo_url(request=None) -> str:
    logo = settings.BRAND_LOGO
    return logo if logo.startswith(("http://", "https://", "/")) else static(logo)


def workspace_css_url(request=None) -> str:
    return static("admin/workspace/workspace.css")
