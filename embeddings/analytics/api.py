"""POST /api/v1/search/clicks/: a storefront tells which product a shopper opened from the
results of a search (its `search_id` from the search response). Anonymous, throttled with the
searches (THROTTLE_SEARCH_ANON / THROTTLE_SEARCH_USER)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from catalog.api.schema import errors
from searchsite.api import SEARCH_THROTTLES, ApiError

from .services import ClickError, search_click_record

MAX_ID = 2**63 - 1  # a product id the database can hold


class SearchClickSerializer(serializers.Serializer):
    search_id = serializers.UUIDField(
        help_text="`search_id` of a search response from the last SEARCH_LOG_CLICK_HOURS (24).",
        error_messages={"invalid": "search_id must be the search_id of a search response."},
    )
    product_id = serializers.IntegerField(
        min_value=1, max_value=MAX_ID, help_text="Id of the product opened from its results."
    )


class SearchClickView(APIView):
    permission_classes = [AllowAny]
    throttle_classes = SEARCH_THROTTLES  # THROTTLE_SEARCH_ANON / THROTTLE_SEARCH_USER

    @extend_schema(
        tags=["search"],
        summary="Report a product opened from search results",
        description="Counts toward the search analytics' click-through rate. A repeat of the "
        "same (search_id, product_id) is counted once. JSON or form body.",
        request=SearchClickSerializer,
        responses={
            204: None,
            **errors(
                400,
                403,
                413,
                415,
                429,
                described={
                    400: "A missing or malformed field (`invalid`), no search with this id in "
                    "the last SEARCH_LOG_CLICK_HOURS (`unknown_search`), or no active product "
                    "with this id (`unknown_product`).",
                    403: "A request authenticated by a session cookie without its CSRF token.",
                    415: "The body is not JSON or a form: `unsupported_media_type`.",
                },
            ),
        },
    )
    def post(self, request: Request) -> Response:
        serializer = SearchClickSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            search_click_record(**serializer.validated_data)
        except ClickError as exc:
            raise ApiError(str(exc), code=exc.code) from None
        return Response(status=status.HTTP_204_NO_CONTENT)
