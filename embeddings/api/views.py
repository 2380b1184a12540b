"""Search REST endpoints: text search (GET), image and/or text search (POST multipart), and
"more like this". Public. The views parse parameters, call embeddings.selectors, and page the
ranked list."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence

from drf_spectacular.utils import extend_schema
from rest_framework.exceptions import NotFound
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.urls import remove_query_param, replace_query_param
from rest_framework.views import APIView

from catalog import selectors as catalog_selectors
from catalog.api.schema import errors
from catalog.attributes import MAX_VALUE_CHARS as MAX_ATTRIBUTE_VALUE_CHARS
from catalog.attributes import facet_attributes
from searchsite.api import SEARCH_THROTTLES, ApiError

from .. import ranking, refine, selectors, suggestions
from ..analytics.services import search_log_record
from .serializers import (
    SearchFormSerializer,
    SearchHitSerializer,
    SearchPartsSerializer,
    SearchQuerySerializer,
    SearchResponseSerializer,
    SimilarQuerySerializer,
    SimilarResponseSerializer,
    SuggestQuerySerializer,
    SuggestResponseSerializer,
)

TAG = "search"
# The most results a search returns; each request ranks only as deep as the page it reads.
SEARCH_DEPTH = selectors.MAX_RESULTS


PAST_THE_END = "The page is past the last page of results: `not_found`."


def _page(
    request: Request, hits: Sequence[selectors.ProductHit], *, page: int, page_size: int
) -> dict:
    count = len(hits)
    last = max(1, math.ceil(count / page_size))
    if page > last:
        raise ApiError(
            f"Page {page} is past the last page of results ({last}).",
            code="not_found",
            status_code=404,
        )
    url = request.build_absolute_uri()
    next_url = replace_query_param(url, "page", page + 1) if page < last else None
    if page <= 1:
        previous_url = None
    elif page == 2:
        previous_url = remove_query_param(url, "page")
    else:
        previous_url = replace_query_param(url, "page", page - 1)
    start = (page - 1) * page_size
    return {
        "count": count,
        "next": next_url,
        "previous": previous_url,
        "results": hits[start : start + page_size],
    }


def _without_blanks(params: dict) -> dict:
    # A form's empty optional fields (price_min=&page=) mean "not given", as in the product list.
    return {key: value for key, value in params.items() if value not in ("", None)}


class SearchView(APIView):
    permission_classes = [AllowAny]
    throttle_classes = SEARCH_THROTTLES  # THROTTLE_SEARCH_ANON / THROTTLE_SEARCH_USER
    # POST is a read (a search by image), not a write: no staff needed.
    parser_classes = [MultiPartParser, FormParser, JSONParser]

    @extend_schema(
        tags=[TAG],
        summary="Search products by text",
        parameters=[SearchQuerySerializer],
        responses={
            200: SearchResponseSerializer,
            **errors(
                400,
                404,
                429,
                described={
                    400: "No `q`, `q` over 500 characters, a bad filter, `not` or paging "
                    "parameter (`error.details` names it), price_min > price_max, only terms "
                    "to leave out, or terms that cancel the query out: `invalid`.",
                    404: PAST_THE_END,
                },
            ),
        },
    )
    def get(self, request: Request) -> Response:
        params = _with_not_terms(request.query_params.dict(), request.query_params)
        attributes = _attribute_filters(request.query_params)
        return self._search(request, params, SearchQuerySerializer, attributes)

    @extend_schema(
        tags=[TAG],
        summary="Search products by image, image and text, or several weighted parts",
        description="Multipart form with an `image` file and/or `q` (`image_weight` balances "
        "them), or a JSON body with `parts`: weighted texts, catalog images and products "
        "(negative weights push away; see docs/API.md for the rule). Filters and `page` may be "
        "body fields or query parameters (query parameters win, so the `next` link works when "
        "the same body is posted to it again).",
        request={
            "multipart/form-data": SearchFormSerializer,
            "application/json": SearchPartsSerializer,
        },
        responses={
            200: SearchResponseSerializer,
            **errors(
                400,
                403,
                404,
                413,
                415,
                429,
                described={
                    400: "Neither `image` nor `q`, a bad parameter or part (`invalid`; an "
                    "unknown `image_id` or `product_id` is named), no positive part, parts "
                    "that cancel out, an unreadable image (`invalid_image`), or too many "
                    "pixels (`image_too_large`: over MAX_IMAGE_PIXELS, or a non-JPEG over "
                    "EMBEDDINGS_QUERY_MAX_PIXELS).",
                    403: "A request authenticated by a session cookie without its CSRF token.",
                    404: PAST_THE_END,
                    415: "The body is not a multipart or urlencoded form, or JSON: "
                    "`unsupported_media_type`.",
                },
            ),
        },
    )
    def post(self, request: Request) -> Response:
        if _is_json(request):
            params = _json_params(request)
            attributes = _attribute_filters(request.query_params, params)
            return self._search(request, params, SearchPartsSerializer, attributes)
        params = {key: request.data.get(key) for key in request.data}
        params.update(request.query_params.dict())
        params = _with_not_terms(params, request.data, request.query_params)
        attributes = _attribute_filters(request.query_params, request.data)
        return self._search(request, params, SearchFormSerializer, attributes)

    def _search(
        self, request: Request, params: dict, serializer_class, attributes=None
    ) -> Response:
        serializer = serializer_class(data=_without_blanks(params))
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        started = time.perf_counter()  # search analytics: latency of search + page load
        modifiers = _modifiers(params.get("modifiers"))
        try:
            query, echo = _steered_query(data)
            text, image = echo["text"], echo["image"]
            hits = selectors.product_search_steered(
                query,
                limit=SEARCH_DEPTH,
                category=data.get("category") or None,
                price_min=data.get("price_min"),
                price_max=data.get("price_max"),
                attributes=attributes or None,
                modifiers=modifiers,
            )
            # Facets count every result the query can return; sorting reorders those results.
            facets = refine.results_facets(hits)
            hits = refine.results_sorted(hits, sort=data["sort"])
        except selectors.SearchError as exc:
            raise ApiError(str(exc)) from None
        body = _page(request, hits, page=data["page"], page_size=data["page_size"])
        # Logged once, on its first page (never fails the search); report clicks on results of
        # any page with that search_id (POST search/clicks/).
        body["search_id"] = None
        if data["page"] == 1:
            body["search_id"] = search_log_record(
                text=text,
                photo=image,
                filters={key: data.get(key) for key in ("category", "price_min", "price_max")},
                result_count=body["count"],
                latency_ms=(time.perf_counter() - started) * 1000,
                source="api",
            )
        body["query"] = echo
        body["did_you_mean"] = suggestions.search_did_you_mean(text=text) if text else None
        body["facets"] = facets
        body["results"] = SearchHitSerializer(
            body["results"], many=True, context={"request": request}
        ).data
        return Response(body)


# -- steerable queries ----------------------------------------------------------------------------


def _attribute_filters(*sources) -> dict[str, tuple[str, ...]]:
    """{attribute: values} of the shop's facet attributes given as parameters (`colour=red`,
    repeated for either of several; in a JSON body a string or a list). Values are matched
    lower-case, like the stored ones."""
    out = {}
    for name in facet_attributes():
        raw: list = []
        for source in sources:
            raw += _all_values(source, name)
        values = []
        for value in raw:
            if not isinstance(value, str) or len(value) > MAX_ATTRIBUTE_VALUE_CHARS:
                raise ApiError(
                    f"{name} must be text of at most {MAX_ATTRIBUTE_VALUE_CHARS} characters.",
                    details={name: ["Give a value such as red."]},
                )
            value = " ".join(value.split()).lower()
            if value and value not in values:
                values.append(value)
        if values:
            out[name] = tuple(values)
    return out


def _modifiers(raw) -> tuple[ranking.Modifier, ...] | None:
    """A search's ranking ``modifiers``: a list in a JSON body, or the same list as JSON text in
    a query or form parameter. None (not given) means the shop's RANK_* defaults; a list, even
    an empty one, replaces them."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            raw = None  # reported as not a list below
    try:
        return ranking.modifiers_parse(raw)
    except ranking.ModifierError as exc:
        raise ApiError(
            str(exc),
            details={"modifiers": ['e.g. [{"field": "boost", "op": "add", "weight": 0.1}]']},
        ) from None


def _is_json(request: Request) -> bool:
    return request.content_type.split(";")[0].strip().lower() == "application/json"


def _json_params(request: Request) -> dict:
    if not isinstance(request.data, dict):
        raise ApiError('The JSON body must be an object, e.g. {"parts": [{"text": "red dress"}]}.')
    params = dict(request.data)
    params.update(request.query_params.dict())
    return params


def _all_values(source, key: str) -> list:
    """Every value of ``key`` in a QueryDict, or in the plain dict DRF gives for a POST with no
    body (request.data is then ``{}``, which has no getlist)."""
    if hasattr(source, "getlist"):
        return source.getlist(key)
    value = source.get(key)
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def _with_not_terms(params: dict, *sources) -> dict:
    """`not` may be repeated: every value of it from each form or query string."""
    terms = [term for source in sources for term in _all_values(source, "not")]
    params = {key: value for key, value in params.items() if key != "not"}
    if terms:
        params["not"] = terms
    return params


def _query_part(part: dict, n: int) -> selectors.QueryPart:
    """A validated JSON part -> a QueryPart; an image or product that cannot be used -> 400
    naming it."""
    weight = part["weight"]
    if "text" in part:
        return selectors.QueryPart(text=part["text"], weight=weight)
    if "image_id" in part:
        vector = selectors.catalog_image_vector(image_id=part["image_id"])
        if vector is None:
            raise ApiError(
                f"Part {n}: there is no image {part['image_id']} of an active product.",
                details={"parts": {str(n - 1): {"image_id": "Unknown image."}}},
            )
        return selectors.QueryPart(image_vec=vector, weight=weight)
    product_id = part["product_id"]
    if catalog_selectors.product_get(product_id=product_id) is None:
        raise ApiError(
            f"Part {n}: there is no active product {product_id}.",
            details={"parts": {str(n - 1): {"product_id": "Unknown product."}}},
        )
    vector = selectors.product_vector(product_id=product_id)
    if vector is None:
        raise ApiError(
            f"Part {n}: product {product_id} has no indexed image yet; search with its "
            "image_id or words instead.",
            details={"parts": {str(n - 1): {"product_id": "No indexed image."}}},
        )
    return selectors.QueryPart(image_vec=vector, weight=weight)


def _steered_query(data: dict) -> tuple[selectors.SteeredQuery, dict]:
    """Validated search parameters -> (the query to rank, the `query` echo of the answer)."""
    exclude, not_weight = data.get("not") or [], data.get("not_weight")
    if "parts" in data:
        parts = [_query_part(part, n) for n, part in enumerate(data["parts"], start=1)]
        query = selectors.steered_query(parts, exclude=exclude, not_weight=not_weight)
        text = query.words
        has_text = bool(text)
        image = any(p.image_vec is not None and p.weight > 0 for p in parts)
    else:
        text = selectors.normalize_query_text(data.get("q"))
        query = selectors.search_query(
            text=text,
            image=data.get("image"),
            image_weight=data.get("image_weight"),
            exclude=exclude,
            not_weight=not_weight,
        )
        has_text, image = bool(text), data.get("image") is not None
    echo = {
        "text": text,
        "image": image,
        "not": list(query.not_words),
        "image_weight": round(1.0 - query.word_share, 6) if has_text and image else None,
    }
    return query, echo


class ProductSimilarView(APIView):
    permission_classes = [AllowAny]
    throttle_classes = SEARCH_THROTTLES  # THROTTLE_SEARCH_ANON / THROTTLE_SEARCH_USER

    @extend_schema(
        tags=[TAG],
        summary="Products that look like this one",
        description="Ranked by similarity to the product's images; the product itself is left out.",
        parameters=[SimilarQuerySerializer],
        responses={
            200: SimilarResponseSerializer,
            **errors(
                400,
                404,
                429,
                described={
                    400: "`limit` is not a whole number 1..100: `invalid`.",
                    404: "No such product, or it is not active: `not_found`.",
                },
            ),
        },
    )
    def get(self, request: Request, pk: int) -> Response:
        params = SimilarQuerySerializer(data=_without_blanks(request.query_params.dict()))
        params.is_valid(raise_exception=True)
        if catalog_selectors.product_get(product_id=pk) is None:
            raise NotFound(f"There is no active product with id {pk}.")
        limit = params.validated_data["limit"]
        # Slice once: a lazily loaded ranking then fetches its products in one query.
        hits = list(selectors.product_similar(product_id=pk, limit=limit)[:limit])
        results = SearchHitSerializer(hits, many=True, context={"request": request}).data
        return Response({"count": len(hits), "results": results})


class SearchSuggestView(APIView):
    """Type-ahead: completions of a prefix from the catalog's words and popular queries."""

    permission_classes = [AllowAny]
    throttle_classes = SEARCH_THROTTLES  # THROTTLE_SEARCH_ANON / THROTTLE_SEARCH_USER

    @extend_schema(
        tags=[TAG],
        summary="Suggest queries as the shopper types",
        description="Completions of `q`: queries that at least SEARCH_SUGGEST_MIN_SEARCHES "
        "searches with results typed over the last SEARCH_SUGGEST_DAYS days (a query typed by "
        "fewer is never shown), category names and the opening words of product titles; most "
        "searches / products first, each text once.",
        parameters=[SuggestQuerySerializer],
        responses={
            200: SuggestResponseSerializer,
            **errors(
                400,
                429,
                described={400: "No `q`, a blank `q`, or `q` over 100 characters: `invalid`."},
            ),
        },
    )
    def get(self, request: Request) -> Response:
        params = SuggestQuerySerializer(data=request.query_params.dict())
        params.is_valid(raise_exception=True)
        try:
            found = suggestions.search_suggest(prefix=params.validated_data["q"])
        except suggestions.SuggestError as exc:
            raise ApiError(str(exc)) from None
        return Response({"suggestions": [{"text": s.text, "kind": s.kind} for s in found]})
