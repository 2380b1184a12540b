from django.conf import settings
from django.contrib import admin
from django.urls import include, path, re_path
from django.views.static import serve
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

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


def serve_media(request, path):
    # MEDIA_ROOT is read per request (not frozen at import) so settings overrides apply.
    return serve(request, path, document_root=settings.MEDIA_ROOT)


if settings.SERVE_MEDIA:
    # The embedded set-up serves uploads itself; production puts them behind the web server/CDN.
    urlpatterns += [re_path(rf"^{settings.MEDIA_URL.lstrip('/')}(?P<path>.*)$", serve_media)]
