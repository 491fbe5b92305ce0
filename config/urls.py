from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from config.health import healthz
from crm.api.errors import api_not_found

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("i18n/", include("django.conf.urls.i18n")),
    path("api/v1/", include("crm.api.urls")),
    path("api/v1/", include("loyalty.api.urls")),
    path("api/v1/", include("campaigns.api.urls")),
    path("analytics/", include("crm.urls_analytics")),
    path("member/", include("loyalty.urls")),
    # Tracking and unsubscribe links of messages (/m/...), and the email providers' webhooks (anymail's
    # URLs, e.g. /anymail/postmark/tracking/; secured by ANYMAIL["WEBHOOK_SECRET"], basic auth).
    path("", include("campaigns.urls")),
    path("anymail/", include("anymail.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path(
        "api/redoc/",
        SpectacularRedocView.as_view(url_name="api-schema", template_name="api_docs/redoc.html"),
        name="api-redoc",
    ),
    # After every API route: the rest of /api/ answers 404 in the API's error shape, not an HTML page.
    re_path(r"^api/", api_not_found, name="api-not-found"),
    path("admin/", admin.site.urls),
]
