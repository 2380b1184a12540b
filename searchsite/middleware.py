"""Request guards that hold for every view: a body too large is refused before it is read, and a
database that is away answers 503 (JSON under /api/, the 503 page elsewhere) instead of a 500.

The API's own errors go through searchsite.api.exception_handler; these catch what happens
before a view runs (the body's size) and what a non-DRF view (the pages) raises."""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.loader import render_to_string

from searchsite.errors import ServiceUnavailable

log = logging.getLogger(__name__)

# Seconds a client is told to wait (Retry-After) when the database is away.
RETRY_AFTER_SECONDS = 5
DATABASE_ERRORS = (OperationalError, InterfaceError)
DATABASE_UNAVAILABLE_MESSAGE = (
    "The shop is temporarily unavailable: the database is unreachable, try again in a few seconds."
)
# Routes that carry at most one image (the searches): their bodies may be one upload plus form
# fields, not the MAX_REQUEST_BYTES a product with many images needs.
ONE_IMAGE_ROUTES = frozenset({"api-v1:search", "embeddings:search"})
FORM_FIELDS_BYTES = 1024 * 1024


def is_api(request: HttpRequest) -> bool:
    return request.path_info.startswith("/api/")


def error_json(status: int, code: str, message: str, **headers: str) -> JsonResponse:
    response = JsonResponse({"error": {"code": code, "message": message}}, status=status)
    for name, value in headers.items():
        response[name.replace("_", "-")] = value
    return response


def error_page(
    request: HttpRequest, status: int, template: str, context: dict | None = None
) -> HttpResponse:
    # Rendered without the request: the context processors would read the session and user,
    # which are in the database that may be what failed.
    return HttpResponse(render_to_string(template, context or {}), status=status)


def database_unavailable(request: HttpRequest, exc: BaseException) -> HttpResponse:
    """The 503 for a database error: logged once, without a traceback per request (an outage
    would flood the log), JSON for the API and the 503 page for the rest."""
    log.error(
        "database unavailable, answering 503 for %s %s: %s: %s",
        request.method,
        request.path,
        type(exc).__name__,
        str(exc).strip() or "(no message)",
    )
    if is_api(request):
        response: HttpResponse = error_json(
            503, "service_unavailable", DATABASE_UNAVAILABLE_MESSAGE
        )
    else:
        response = error_page(request, 503, "503.html")
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


def service_unavailable(request: HttpRequest, exc: ServiceUnavailable) -> HttpResponse:
    """The 503 for a part that is away for a moment (searchsite.errors.ServiceUnavailable: the
    search index being rebuilt, say), with its own message and Retry-After."""
    log.error("answering 503 for %s %s: %s", request.method, request.path, exc)
    if is_api(request):
        response: HttpResponse = error_json(503, exc.code, str(exc))
    else:
        response = error_page(request, 503, "503.html")
    response["Retry-After"] = str(exc.retry_after)
    return response


class DatabaseUnavailableMiddleware:
    """A database error raised by a view (connection refused, connect or statement timeout,
    connection lost) becomes a 503 with Retry-After. Django closes the broken connection at the
    end of the request, so the next request reconnects: recovery needs no restart."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception):
        if isinstance(exception, DATABASE_ERRORS):
            return database_unavailable(request, exception)
        if isinstance(exception, ServiceUnavailable):
            return service_unavailable(request, exception)
        return None


class RequestSizeLimitMiddleware:
    """Refuses a request whose declared body (Content-Length) is larger than the route accepts,
    with 413, before anything reads it: CSRF checks, form and DRF parsing all come later. The
    limits: MAX_REQUEST_BYTES in general (a product with its images), MAX_UPLOAD_BYTES plus 1 MiB
    of form fields for the searches (one image). A body without Content-Length (chunked) is
    never read by Django, so it cannot be used to get around this.

    Must come before CsrfViewMiddleware, which reads POST bodies in its process_view."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_view(self, request: HttpRequest, view_func, view_args, view_kwargs):
        size = _content_length(request)
        if size is None:
            return None
        match = request.resolver_match
        route = match.view_name if match else ""
        if route in ONE_IMAGE_ROUTES:
            limit = settings.MAX_UPLOAD_BYTES + FORM_FIELDS_BYTES
        else:
            limit = settings.MAX_REQUEST_BYTES
        if size <= limit:
            return None
        log.warning("refused a %d-byte body for %s (limit %d)", size, request.path, limit)
        message = (
            f"The request body is {size} bytes; this endpoint accepts at most {limit} bytes "
            f"(each image at most {settings.MAX_UPLOAD_BYTES} bytes). Send smaller images, or "
            "fewer in one request."
        )
        if is_api(request):
            response: HttpResponse = error_json(413, "request_too_large", message)
        else:
            response = error_page(request, 413, "413.html", {"message": message})
        # The body stays unread: gunicorn drains at most 64 KiB of it and then closes the
        # connection, so a client streaming a huge upload is cut off early.
        return response


def _content_length(request: HttpRequest) -> int | None:
    raw = request.META.get("CONTENT_LENGTH")
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        return None
