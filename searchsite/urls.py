import re

from django.conf import settings
from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from catalog.views import product_image_file
from searchsite.api import api_not_found

api_v1 = [
    path("", include("catalog.api.urls")),
    path("", include("embeddings.api.urls")),
    path("schema/", SpectacularAPIView.as_view(api_version="v1"), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api-v1:schema"), name="docs"),
    path("redoc/", SpectacularRedocView.as_view(url_name="api-v1:schema"), name="redoc"),
    # Anything else under /api/v1/ (e.g. /products/abc/) is a JSON 404, not an HTML page.
    re_path(r"^.*$", api_not_found),
]

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include((api_v1, "api-v1"))),
    path("", include("catalog.urls")),
    path("", include("embeddings.urls")),
]


if settings.SERVE_MEDIA:
    # Product images go through a view that hides inactive products' files from shoppers (and can
    # hand the sending to nginx/Apache, see MEDIA_ACCEL). Off only when another server publishes
    # MEDIA_ROOT itself, which then makes every file public.
    urlpatterns += [
        re_path(
            rf"^{re.escape(settings.MEDIA_URL.lstrip('/'))}(?P<path>.*)$",
            product_image_file,
            name="media",
        )
    ]

# The API's errors in its JSON shape wherever they arise; a database that is away is a 503.
handler400 = "searchsite.api.bad_request"
handler403 = "searchsite.api.permission_denied"
handler500 = "searchsite.api.server_error"
