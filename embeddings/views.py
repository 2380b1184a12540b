"""The shopper's search page at `/`: text, photo (cropped in the browser), both, "similar to a
product", or a browse view when there is no query; filters and pagination on every mode.

A photo search is POST -> redirect -> GET: the upload is encoded once, only its vector is kept
in the shopper's session under a short token, and the redirect to `/?qi=<token>&...` makes
pagination and filters plain links that never re-upload or re-encode the photo.
"""

from __future__ import annotations

import base64
import secrets
from urllib.parse import urlencode

import numpy as np
from django.conf import settings
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods

from catalog.selectors import product_get, product_list

from . import runtime, selectors
from .encoder import ImageDecodeError, load_image
from .forms import PhotoSearchForm, SearchForm

PER_PAGE = 24
# Ranked searches stop here: past ten pages the matches are noise, and a bounded ranking keeps
# each page view one small FAISS query (products are loaded only for the page shown).
RESULT_LIMIT = 240
# Photo queries live in the session (database-backed by default), not a per-process cache, so
# any web process or replica can serve page 2; a token is only valid for the shopper who
# uploaded the photo. Only the newest few are kept: each is dim * 4 bytes.
PHOTO_SESSION_KEY = "search_photo_queries"
PHOTO_QUERIES_KEPT = 10
FILTER_FIELDS = ("q", "category", "price_min", "price_max")


@require_http_methods(["GET", "HEAD", "POST"])
def search(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        return _photo_upload(request)
    return _search_page(request)


def _photo_upload(request: HttpRequest) -> HttpResponse:
    form = PhotoSearchForm(request.POST, request.FILES)
    if not form.is_valid():
        initial = {name: request.POST.get(name, "") for name in FILTER_FIELDS}
        context = _context(request, form=SearchForm(initial=initial), photo_form=form, mode="error")
        return render(request, "embeddings/search.html", context, status=400)
    params = {name: form.cleaned_data.get(name) for name in FILTER_FIELDS}
    image = form.cleaned_data.get("image")
    if image is not None:
        # Image alone: the text (which the shopper may edit on the results page) is combined
        # with it on each GET, by the same rule as an upload of both.
        params["qi"] = _photo_store(request, selectors.query_vector(image=image))
    return _redirect_to_search(params)


def _redirect_to_search(params: dict) -> HttpResponse:
    query = urlencode({k: v for k, v in params.items() if v not in (None, "")})
    return redirect(
        f"{reverse('embeddings:search')}?{query}" if query else reverse("embeddings:search")
    )


def _photo_from_catalog(request: HttpRequest, form: SearchForm) -> HttpResponse | None:
    """`/?photo=<image id>` ("search with this photo" on a product page): the catalog image
    becomes a photo query exactly like an upload, then the usual redirect to `?qi=`.
    Returns None (and adds the reason to the form) when the photo cannot be used."""
    image_id = form.cleaned_data["photo"]
    product = product_list().filter(images__id=image_id).first()
    image = next((i for i in product.images.all() if i.id == image_id), None) if product else None
    if image is None:
        form.add_error("photo", "That photo is no longer in the catalog.")
        return None
    # An indexed photo already has its vector; only a photo not (yet) indexed is decoded.
    vector = selectors.stored_image_vector(image_id=image.id)
    if vector is None:
        try:
            with image.image.open("rb") as fh:
                picture = load_image(fh, max_pixels=settings.MAX_IMAGE_PIXELS)
        except (ImageDecodeError, OSError):
            form.add_error("photo", "That photo cannot be read right now; try another one.")
            return None
        vector = selectors.query_vector(image=picture)
    params = {name: form.cleaned_data.get(name) for name in FILTER_FIELDS}
    params["qi"] = _photo_store(request, vector)
    return _redirect_to_search(params)


def _search_page(request: HttpRequest) -> HttpResponse:
    form = SearchForm(request.GET)
    if not form.is_valid():
        context = _context(
            request, form=form, photo_form=PhotoSearchForm(initial=request.GET.dict()), mode="error"
        )
        return render(request, "embeddings/search.html", context, status=400)

    if form.cleaned_data["photo"]:
        response = _photo_from_catalog(request, form)
        if response is not None:
            return response
        context = _context(
            request, form=form, photo_form=PhotoSearchForm(initial=request.GET.dict()), mode="error"
        )
        return render(request, "embeddings/search.html", context, status=404)

    data, filters = form.cleaned_data, form.filters()
    text, token, similar_id = data["q"], data["qi"], data["similar"]
    extra: dict = {}
    status = 200
    results: list | object = []
    try:
        if similar_id:
            mode = "similar"
            extra["similar_product"] = product_get(product_id=similar_id)
            if extra["similar_product"] is None:
                status = 404
            else:
                results = selectors.product_similar(
                    product_id=similar_id, limit=RESULT_LIMIT, **filters
                )
        elif token:
            mode = "photo"
            vector = _photo_load(request, token)
            if vector is None:
                extra["photo_expired"] = True
            else:
                results = selectors.product_search(
                    text=text, image_vec=vector, limit=RESULT_LIMIT, **filters
                )
        elif text:
            mode = "text"
            results = selectors.product_search(text=text, limit=RESULT_LIMIT, **filters)
        else:
            mode = "browse"
            results = product_list(**filters)
    except selectors.SearchError as exc:
        form.add_error(None, str(exc))
        mode, results, status = "error", [], 400

    page = Paginator(results, PER_PAGE).get_page(request.GET.get("page"))
    photo_form = PhotoSearchForm(
        initial={name: request.GET.get(name, "") for name in FILTER_FIELDS}
    )
    page_range = page.paginator.get_elided_page_range(page.number, on_each_side=2, on_ends=1)
    context = _context(
        request,
        form=form,
        photo_form=photo_form,
        mode=mode,
        page_obj=page,
        page_range=list(page_range),
        **extra,
    )
    return render(request, "embeddings/search.html", context, status=status)


def _context(
    request: HttpRequest, *, form: SearchForm, photo_form: PhotoSearchForm, mode: str, **extra
) -> dict:
    return {
        "form": form,
        "photo_form": photo_form,
        "mode": mode,
        "page_obj": None,
        "page_range": [],
        "max_upload_bytes": settings.MAX_UPLOAD_BYTES,
        "header_q": form["q"].value() or "",
        # The upload panel starts open when its own input was wrong or has to be repeated.
        "photo_open": photo_form.is_bound or extra.get("photo_expired", False),
        **extra,
    }


def _photo_store(request: HttpRequest, vector: np.ndarray) -> str:
    token = secrets.token_urlsafe(8)
    stored = dict(request.session.get(PHOTO_SESSION_KEY, {}))
    packed = np.ascontiguousarray(vector, dtype="<f4").tobytes()
    stored[token] = {
        "model": runtime.get_encoder().model_id,
        "vector": base64.b64encode(packed).decode("ascii"),
    }
    # Dicts keep insertion order: drop the oldest beyond the cap.
    request.session[PHOTO_SESSION_KEY] = dict(list(stored.items())[-PHOTO_QUERIES_KEPT:])
    return token


def _photo_load(request: HttpRequest, token: str) -> np.ndarray | None:
    """The stored vector, or None when the token is unknown, expired, or from another model
    (after a model change an old vector would not be comparable to the index)."""
    entry = request.session.get(PHOTO_SESSION_KEY, {}).get(token)
    if not entry or entry.get("model") != runtime.get_encoder().model_id:
        return None
    try:
        return np.frombuffer(base64.b64decode(entry["vector"]), dtype="<f4").astype(np.float32)
    except (KeyError, ValueError, TypeError):
        return None
