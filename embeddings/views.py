"""The shopper's search page at `/`: text, photo (cropped in the browser), both, "similar to a
product", or a browse view when there is no query; filters and pagination on every mode.

A photo search is POST -> redirect -> GET: the upload is encoded once, only its vector is kept
(in the Django cache, under an unguessable token, for SEARCH_PHOTO_TTL seconds after its last
use), and the redirect to `/?qi=<token>&...` makes pagination and filters plain links that never
re-upload or re-encode the photo.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from decimal import Decimal
from urllib.parse import urlencode

import numpy as np
from django.conf import settings
from django.core.cache import cache
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods

from catalog.selectors import product_get, product_list

from . import refine, runtime, selectors, suggestions
from .analytics.services import search_log_record
from .encoder import ImageDecodeError, load_image
from .forms import PhotoSearchForm, SearchForm

PER_PAGE = 24
# Ranked searches stop here: past ten pages the matches are noise, and a bounded ranking keeps
# each page view one small FAISS query (products are loaded only for the page shown).
RESULT_LIMIT = 240
# Photo queries live in the Django cache (Redis in production, so any web process or replica can
# serve page 2), not in the session: a session would be a database row per anonymous search, kept
# for two weeks, and a signed cookie cannot hold a vector (dim * 4 bytes, several per shopper)
# within browsers' 4 KB. The cache expires them by itself, so no cleanup job is needed. The token
# (128 random bits) is the only key: whoever has the link can page through that search, as with
# a text search link; the photo itself is never kept.
PHOTO_CACHE_PREFIX = "search-photo:"
PHOTO_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,64}")
logger = logging.getLogger(__name__)
FILTER_FIELDS = ("q", "category", "price_min", "price_max", "image_weight", "sort")


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
        token = photo_query_store(selectors.query_vector(image=image))
        if token is None:
            form.add_error(None, PHOTO_UNAVAILABLE)
            initial = {name: request.POST.get(name, "") for name in FILTER_FIELDS}
            context = _context(
                request, form=SearchForm(initial=initial), photo_form=form, mode="error"
            )
            return render(request, "embeddings/search.html", context, status=503)
        params["qi"] = token
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
                picture = load_image(
                    fh,
                    max_pixels=settings.MAX_IMAGE_PIXELS,
                    min_side=runtime.get_encoder().decode_side,
                )
        except (ImageDecodeError, OSError):
            form.add_error("photo", "That photo cannot be read right now; try another one.")
            return None
        vector = selectors.query_vector(image=picture)
    token = photo_query_store(vector)
    if token is None:
        form.add_error("photo", PHOTO_UNAVAILABLE)
        return None
    params = {name: form.cleaned_data.get(name) for name in FILTER_FIELDS}
    params["qi"] = token
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

    started = time.perf_counter()  # search analytics: latency of search + page load
    data, filters = form.cleaned_data, form.filters()
    text, token, similar_id = data["q"], data["qi"], data["similar"]
    # "shirt -striped": the words to find, and the terms to leave out (steerable queries).
    words, excluded = form.query_terms()
    extra: dict = {"excluded": excluded, "query_words": words}
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
            vector = photo_query_load(token)
            if vector is None:
                extra["photo_expired"] = True
            else:
                results = selectors.product_search(
                    text=words,
                    image_vec=vector,
                    image_weight=data["image_weight"],
                    exclude=excluded,
                    limit=RESULT_LIMIT,
                    **filters,
                )
        elif text:
            mode = "text"
            results = selectors.product_search(
                text=words, exclude=excluded, limit=RESULT_LIMIT, **filters
            )
            # Offered as a whole new q, so only for a query without left-out terms.
            if not excluded:
                extra["did_you_mean"] = suggestions.search_did_you_mean(text=text)
        else:
            mode = "browse"
            results = product_list(**filters)
    except selectors.SearchError as exc:
        form.add_error(None, str(exc))
        mode, results, status = "error", [], 400

    extra["attribute_params"] = [
        (name, value)
        for name, values in (filters.get("attributes") or {}).items()
        for value in values
    ]
    extra["keep_params"] = [
        (key, value)
        for key, values in request.GET.lists()
        if key not in ("sort", "page", "sid")
        for value in values
    ]
    if mode != "error" and not isinstance(results, list):
        # Facets count what the query can return; sorting reorders those same results.
        extra["facets"] = facet_links(request, refine.results_facets(results))
        results = refine.results_sorted(results, sort=data["sort"] or "relevance")
    page = Paginator(results, PER_PAGE).get_page(request.GET.get("page"))
    if mode in ("text", "photo", "similar") and status == 200 and "photo_expired" not in extra:
        # Never fails the search; a later page carries the first page's id (sid) and is not
        # logged again. Result links carry the id so a product opened from them counts a click.
        extra["search_id"] = search_log_record(
            text=text,
            photo=mode == "photo",
            similar_id=similar_id if mode == "similar" else None,
            filters=filters,
            result_count=page.paginator.count,
            latency_ms=(time.perf_counter() - started) * 1000,
            source="page",
            reuse=request.GET.get("sid"),
        )
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


PHOTO_UNAVAILABLE = "Photo search is unavailable right now; try again in a minute."


def facet_links(request: HttpRequest, facets: dict[str, list[dict]]) -> list[dict]:
    """The sidebar's facets: each value with its count, whether it is selected, and the link
    that selects it (or clears it when selected). Links keep the query, sort and other filters
    and go back to page 1."""
    params = request.GET.copy()
    for key in ("page", "sid"):
        params.pop(key, None)

    def link(**changes) -> str:
        query = params.copy()
        for key, value in changes.items():
            query.pop(key, None)
            if value not in (None, ""):
                query[key] = value
        return "?" + query.urlencode()

    out = []
    category = params.get("category", "")
    values = [
        {**f, "selected": f["value"] == category, "href": link(category=None)}
        if f["value"] == category
        else {**f, "selected": False, "href": link(category=f["value"])}
        for f in facets.pop("category", [])
    ]
    if values:
        out.append({"name": "category", "title": "Category", "values": values})
    prices = []
    for f in facets.pop("price", []):
        # A bucket is min <= price < max; price_max is inclusive and prices have cents.
        low = f"{f['min']}"
        high = "" if f["max"] is None else f"{Decimal(str(f['max'])) - Decimal('0.01')}"
        selected = params.get("price_min", "") == low and params.get("price_max", "") == high
        label = f"{f['min']}+" if f["max"] is None else f"{f['min']} – {f['max']}"
        href = (
            link(price_min=None, price_max=None)
            if selected
            else link(price_min=low, price_max=high)
        )
        prices.append({**f, "label": label, "selected": selected, "href": href})
    for name, entries in facets.items():
        chosen = [" ".join(v.split()).lower() for v in params.getlist(name)]
        values = []
        for f in entries:
            selected = f["value"] in chosen
            # Values of one attribute add up (OR): a click adds the value, or takes it away.
            after = [v for v in chosen if v != f["value"]] if selected else [*chosen, f["value"]]
            query = params.copy()
            query.setlist(name, after)
            values.append({**f, "selected": selected, "href": "?" + query.urlencode()})
        if values:
            out.append(
                {"name": name, "title": name.replace("_", " ").capitalize(), "values": values}
            )
    if prices:
        out.append({"name": "price", "title": "Price", "values": prices})
    return out


def photo_query_store(vector: np.ndarray) -> str | None:
    """Keeps a photo query's unit vector for SEARCH_PHOTO_TTL seconds; returns its token, or None
    when the cache cannot be reached."""
    token = secrets.token_urlsafe(16)
    entry = {
        "model": runtime.get_encoder().model_id,
        "vector": np.ascontiguousarray(vector, dtype="<f4").tobytes(),
    }
    try:
        cache.set(PHOTO_CACHE_PREFIX + token, entry, timeout=settings.SEARCH_PHOTO_TTL)
    except Exception:  # the cache backend's own connection errors (Redis down, ...)
        logger.exception("Could not keep a photo query in the cache")
        return None
    return token


def photo_query_load(token: str) -> np.ndarray | None:
    """The stored vector, or None when the token is malformed, unknown or expired, the cache is
    unreachable, or the vector is from another model (after a model change an old vector would
    not be comparable to the index). Each use restarts the token's SEARCH_PHOTO_TTL."""
    if not PHOTO_TOKEN.fullmatch(token):
        return None
    key = PHOTO_CACHE_PREFIX + token
    try:
        entry = cache.get(key)
        if entry:
            cache.touch(key, timeout=settings.SEARCH_PHOTO_TTL)
    except Exception:
        logger.exception("Could not read a photo query from the cache")
        return None
    if not isinstance(entry, dict) or entry.get("model") != runtime.get_encoder().model_id:
        return None
    try:
        return np.frombuffer(entry["vector"], dtype="<f4").astype(np.float32)
    except (KeyError, ValueError, TypeError):
        return None
