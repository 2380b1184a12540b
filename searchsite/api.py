"""Shared REST plumbing: one JSON error shape and strict pagination.

Every error body looks like::

    {"error": {"code": "invalid", "message": "A sentence a person can act on.", "details": {...}}}
"""

from __future__ import annotations

import logging
import math
import sys

from django.core.exceptions import PermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.views import defaults
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions, pagination, status, throttling
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler
from rest_framework.views import set_rollback

from searchsite.errors import ServiceUnavailable
from searchsite.middleware import (
    DATABASE_ERRORS,
    DATABASE_UNAVAILABLE_MESSAGE,
    RETRY_AFTER_SECONDS,
    database_unavailable,
    error_json,
    is_api,
    service_unavailable,
)

log = logging.getLogger(__name__)

MAX_PAGE_SIZE = 100


class ApiError(exceptions.APIException):
    """A domain error with a status and a message for the client."""

    status_code = status.HTTP_400_BAD_REQUEST
    default_code = "invalid"

    def __init__(
        self, message: str, *, code: str = "invalid", status_code: int = 400, details=None
    ):
        super().__init__(detail=message, code=code)
        self.status_code = status_code
        self.details = details


def _first_message(detail) -> str:
    if isinstance(detail, list) and detail:
        return _first_message(detail[0])
    if isinstance(detail, dict) and detail:
        field, value = next(iter(detail.items()))
        msg = _first_message(value)
        return msg if field in ("non_field_errors", "detail") else f"{field}: {msg}"
    return str(detail)


def exception_handler(exc, context):
    if isinstance(exc, DATABASE_ERRORS):
        request = context.get("request")
        log.error(
            "database unavailable, answering 503 for %s: %s: %s",
            getattr(request, "path", "?"),
            type(exc).__name__,
            str(exc).strip() or "(no message)",
        )
        set_rollback()
        return Response(
            {"error": {"code": "service_unavailable", "message": DATABASE_UNAVAILABLE_MESSAGE}},
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    if isinstance(exc, ServiceUnavailable):
        set_rollback()
        return service_unavailable(context["request"], exc)
    if isinstance(exc, exceptions.Throttled) and exc.wait is not None:
        wait = max(1, math.ceil(exc.wait))
        exc = exceptions.Throttled(
            detail=(
                f"Too many requests; try again in {wait} second{'s' if wait != 1 else ''}. "
                "Clients that need more send an API token (Authorization: Token ...)."
            )
        )
        exc.wait = wait  # DRF's handler turns it into the Retry-After header
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(
            exc.message_dict if hasattr(exc, "error_dict") else exc.messages
        )
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound(str(exc) or "Not found.")
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    detail = response.data
    code = getattr(exc, "default_code", "error")
    if isinstance(exc, exceptions.APIException):
        codes = exc.get_codes()
        code = codes if isinstance(codes, str) else getattr(exc, "default_code", "invalid")
    body = {"error": {"code": code, "message": _first_message(detail)}}
    if isinstance(exc, ApiError) and exc.details is not None:
        body["error"]["details"] = exc.details
    elif isinstance(exc, exceptions.ValidationError):
        body["error"]["details"] = detail
    return Response(
        body,
        status=response.status_code,
        headers=getattr(response, "headers", None)
        and {
            k: v
            for k, v in response.headers.items()
            if k.lower() in {"www-authenticate", "retry-after", "allow"}
        },
    )


@csrf_exempt  # it changes nothing: a POST to a wrong URL gets this 404, not the CSRF page
def api_not_found(request, *args, **kwargs):
    return error_json(404, "not_found", f"No API endpoint at {request.path}; see /api/v1/docs/.")


# Django's error views (urls.py handler400/403/500): the API's in the JSON error shape, the
# pages' unchanged. Errors that reach them were raised outside a DRF view's own handling (in a
# middleware, or by Django before the view: a bad Host header, a body over
# DATA_UPLOAD_MAX_MEMORY_SIZE).


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    if is_api(request):
        return error_json(
            400, "bad_request", "The request could not be read; check its headers and body."
        )
    return defaults.bad_request(request, exception)


def permission_denied(request: HttpRequest, exception: Exception) -> HttpResponse:
    if is_api(request):
        return error_json(
            403,
            "permission_denied",
            "You do not have permission to do this; send a staff user's API token.",
        )
    return defaults.permission_denied(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    # Called while the exception is being handled: a database error raised outside a view (a
    # middleware reading the session, say) still gets the honest 503, not a 500.
    exc = sys.exc_info()[1]
    if isinstance(exc, DATABASE_ERRORS):
        return database_unavailable(request, exc)
    if isinstance(exc, ServiceUnavailable):
        return service_unavailable(request, exc)
    if is_api(request):
        return error_json(
            500,
            "server_error",
            "Something went wrong on our side; it has been logged. Try again later.",
        )
    return defaults.server_error(request)


# Throttles (DRF's, rates in settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]). Their counts live
# in the Django cache: Redis (CACHE_URL) shares them between processes and machines; local memory
# counts per process. A cache that is away lets requests through rather than failing them.


class _FailOpen:
    def allow_request(self, request, view):
        try:
            return super().allow_request(request, view)
        except Exception as exc:  # the cache (Redis) is away: serve rather than fail
            log.warning("throttle %s: cache unavailable (%s); request allowed", self.scope, exc)
            return True


class SearchAnonThrottle(_FailOpen, throttling.AnonRateThrottle):
    """Searches by a client without a token, counted per IP address (THROTTLE_SEARCH_ANON)."""

    scope = "search_anon"


class SearchUserThrottle(_FailOpen, throttling.UserRateThrottle):
    """Searches by a signed-in client, counted per user (THROTTLE_SEARCH_USER)."""

    scope = "search_user"

    def get_cache_key(self, request, view):
        if not request.user or not request.user.is_authenticated:
            return None  # SearchAnonThrottle's
        return super().get_cache_key(request, view)


class AuthTokenThrottle(_FailOpen, throttling.SimpleRateThrottle):
    """Token requests (password guesses) per IP address, signed in or not (THROTTLE_AUTH_TOKEN)."""

    scope = "auth_token"

    def get_cache_key(self, request, view):
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


SEARCH_THROTTLES = [SearchAnonThrottle, SearchUserThrottle]


class PageNumberPagination(pagination.PageNumberPagination):
    page_size_query_param = "page_size"
    max_page_size = MAX_PAGE_SIZE

    def get_page_size(self, request):
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return self.page_size
        try:
            size = int(raw)
        except ValueError:
            raise ApiError(
                f"page_size must be a whole number between 1 and {MAX_PAGE_SIZE}."
            ) from None
        if not 1 <= size <= MAX_PAGE_SIZE:
            raise ApiError(f"page_size must be between 1 and {MAX_PAGE_SIZE}; got {size}.")
        return size
