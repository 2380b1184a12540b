"""Paging of the product list, with the same rules and messages as the search endpoint's
`page` / `page_size` (embeddings.api): a page that is not a whole number >= 1 is a 400, a page
past the last one a 404, and the schema states the bounds."""

from __future__ import annotations

from rest_framework.request import Request

from searchsite.api import MAX_PAGE_SIZE, ApiError, PageNumberPagination


class ProductPagination(PageNumberPagination):
    last_page_strings = ()  # `page=last` is not part of the API (search has no such page)

    def get_page_number(self, request: Request, paginator) -> int:
        raw = request.query_params.get(self.page_query_param, "")
        if raw == "":
            return 1
        try:
            number = int(raw)
        except ValueError:
            raise ApiError(
                f"page must be a whole number of at least 1; got {raw[:40]!r}.",
                details={"page": ["A valid integer is required."]},
            ) from None
        if number < 1:
            raise ApiError(
                f"page must be at least 1; got {number}.",
                details={"page": ["Ensure this value is greater than or equal to 1."]},
            )
        if number > paginator.num_pages:
            raise ApiError(
                f"Page {number} is past the last page of results ({paginator.num_pages}).",
                code="not_found",
                status_code=404,
            )
        return number

    def get_schema_operation_parameters(self, view) -> list[dict]:
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_query_param:
                parameter["schema"] = {"type": "integer", "minimum": 1, "default": 1}
                parameter["description"] = "Page number, from 1; past the last page: 404."
            elif parameter["name"] == self.page_size_query_param:
                parameter["schema"] = {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": MAX_PAGE_SIZE,
                    "default": self.page_size,
                }
                parameter["description"] = f"Products per page, 1..{MAX_PAGE_SIZE}."
        return parameters
