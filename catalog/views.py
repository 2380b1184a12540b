"""Shopper-facing catalog pages and the product image files. "More like this" on the product page
comes from the embeddings app's template tag, so this module never imports embeddings (the
dependency points one way)."""

from __future__ import annotations

import mimetypes
import re
from urllib.parse import quote

from django.conf import settings
from django.core.files.storage import default_storage
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.cache import get_conditional_response
from django.utils.http import http_date
from django.views.decorators.http import require_safe

from .models import ProductImage
from .selectors import product_get
from .thumbnails import THUMBNAIL_PATH

# upload_to of ProductImage: the product id in the path lets a file's owner be found through the
# product index instead of scanning every image row.
_PRODUCT_FILE = re.compile(r"products/(?P<product_id>\d+)/[^/]+")


@require_safe
def product_detail(request: HttpRequest, pk: int) -> HttpResponse:
    product = product_get(product_id=pk)
    if product is None:
        # Inactive products are hidden exactly like missing ones.
        raise Http404("No such product.")
    return render(request, "catalog/product_detail.html", {"product": product})


def _image_visibility(name: str) -> tuple[bool, bool]:
    """(exists, public) for a stored file name: does an image row use it, and does an *active*
    product own one of those rows. Files no image row names (orphans, anything else under
    MEDIA_ROOT) do not exist as far as the site is concerned. A thumbnail
    (catalog.thumbnails) belongs to the image row its name gives, in the product it names, and
    only while that row records thumbnails of the same content: same rules as the original."""
    thumb = THUMBNAIL_PATH.fullmatch(name)
    if thumb:
        rows = ProductImage.objects.filter(
            id=int(thumb["image_id"]),
            product_id=int(thumb["product_id"]),
            thumbnail_hash__startswith=thumb["hash8"],
        )
    else:
        rows = ProductImage.objects.filter(image=name)
        match = _PRODUCT_FILE.fullmatch(name)
        if match:
            rows = rows.filter(product_id=int(match["product_id"]))
    flags = set(rows.values_list("product__is_active", flat=True)[:50])
    return bool(flags), True in flags


def _not_found() -> HttpResponse:
    # Never cached: a product switched back to active must show its images at once.
    response = HttpResponse("Not found.", status=404, content_type="text/plain")
    response["Cache-Control"] = "no-store"
    return response


@require_safe
def product_image_file(request: HttpRequest, path: str) -> HttpResponse:
    """A product image file at MEDIA_URL. Images of inactive products are 404 except for staff
    (session login), like their product pages; unknown names, orphans and anything that is not a
    product image are 404 too. The bytes are sent by Django, or by the web server when
    MEDIA_ACCEL names its header (the web server never serves MEDIA_ROOT directly, so this
    check cannot be bypassed)."""
    if "\x00" in path:  # PostgreSQL refuses NUL in a query: no file can have it anyway
        return _not_found()
    exists, public = _image_visibility(path)
    if not exists or not (public or getattr(request.user, "is_staff", False)):
        return _not_found()
    # Images of active products are the same for everyone and may sit in shared caches; a
    # staff-only image must not (it would leak to the next shopper through a proxy cache).
    cache_control = (
        f"public, max-age={settings.MEDIA_CACHE_SECONDS}" if public else "private, no-store"
    )
    accel = settings.MEDIA_ACCEL
    if accel:
        response = HttpResponse(content_type=mimetypes.guess_type(path)[0] or "")
        if accel == "x-accel-redirect":
            response["X-Accel-Redirect"] = settings.MEDIA_ACCEL_PREFIX + quote(path)
        else:  # x-sendfile (Apache mod_xsendfile, lighttpd)
            response["X-Sendfile"] = default_storage.path(path)
        response["Cache-Control"] = cache_control
        return response
    try:
        handle = default_storage.open(path, "rb")
    except FileNotFoundError:  # a row whose file is gone: nothing to send
        return _not_found()
    response = FileResponse(handle, content_type=mimetypes.guess_type(path)[0])
    response["Cache-Control"] = cache_control
    try:
        modified = int(default_storage.get_modified_time(path).timestamp())
    except (NotImplementedError, OSError):  # a storage without timestamps
        return response
    response["Last-Modified"] = http_date(modified)
    # A browser revalidating a cached image gets a bodiless 304.
    conditional = get_conditional_response(request, last_modified=modified, response=response)
    if conditional is not response:
        response.close()
    return conditional
