"""Records a click when a product page is opened from a search result.

Result links on the search page carry the search's id (`/products/12/?sid=<id>`). The catalog's
product page knows nothing of analytics (the catalog never imports this app), so the click is
recorded here, after the page rendered: only a product page that answered 200 counts, i.e. an
active product the shopper actually saw.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse

from .services import ClickError, search_click_record

logger = logging.getLogger(__name__)

PRODUCT_PAGE = "catalog:product-detail"
PARAM = "sid"


class SearchClickMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        search_id = request.GET.get(PARAM) if request.method == "GET" else None
        if search_id and response.status_code == 200:
            match = getattr(request, "resolver_match", None)
            if match is not None and match.view_name == PRODUCT_PAGE:
                self._record(search_id, match.kwargs.get("pk"))
        return response

    @staticmethod
    def _record(search_id: str, product_id: int | None) -> None:
        if product_id is None:
            return
        try:
            search_click_record(search_id=search_id, product_id=int(product_id))
        except ClickError as exc:
            # An old, edited or shared link: the page was served, there is just nothing to count.
            logger.debug("click not recorded: %s", exc)
        except DatabaseError as exc:
            logger.warning("click not recorded (the page was served): %s", exc)
