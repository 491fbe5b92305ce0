"""The API documentation pages (Swagger UI at /api/docs/, Redoc at /api/redoc/) work without the internet:
their scripts and styles come from drf-spectacular-sidecar through our own static files, never a CDN.

The browser test blocks every request that does not go to the live server, so a page that still pulled
a script from jsdelivr would stay blank and the test would fail."""

import re
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import expect


def _asset_urls(html: str) -> list[str]:
    return re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html)


@pytest.mark.parametrize("path", ["/api/docs/", "/api/redoc/"])
def test_docs_pages_load_their_scripts_from_our_static_files(client, path):
    response = client.get(path)

    assert response.status_code == 200
    html = response.content.decode()
    assets = _asset_urls(html)
    assert any("/static/drf_spectacular_sidecar/" in url for url in assets), assets
    external = [url for url in assets if urlsplit(url).netloc]
    assert external == [], f"{path} loads assets from elsewhere: {external}"
    assert "cdn.jsdelivr.net" not in html


def _offline(page, live_server):
    """Answer any request that leaves the live server with a network error, as an offline machine would."""
    own = urlsplit(live_server.url).netloc
    blocked: list[str] = []

    def route(r):
        if urlsplit(r.request.url).netloc in (own, ""):
            r.continue_()
        else:
            blocked.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    return blocked


def test_swagger_ui_renders_the_operations_offline(page, live_server):
    blocked = _offline(page, live_server)

    page.goto("/api/docs/")

    expect(page.locator(".swagger-ui .opblock").first).to_be_visible()
    expect(page.locator(".swagger-ui")).to_contain_text("/api/v1/me/points")
    assert page.locator(".swagger-ui .opblock").count() > 10
    assert blocked == []


def test_redoc_renders_the_operations_offline(page, live_server):
    blocked = _offline(page, live_server)

    page.goto("/api/redoc/")

    expect(page.locator("[role=menuitem]").first).to_be_visible()
    expect(page.locator("body")).to_contain_text("Marketing operations API")
    expect(page.locator("body")).to_contain_text("/api/v1/me/points")
    assert page.locator("[role=menuitem]").count() > 10
    assert blocked == []
