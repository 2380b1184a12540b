"""Shared REST plumbing: one JSON error shape and strict pagination.

Every error body looks like::

    {"error": {"code": "invalid", "message": "A sentence a person can act on.", "details": {...}}}
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from rest_framework import exceptions, pagination, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

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


def api_not_found(request, *args, **kwargs):
    from django.http import JsonResponse

    return JsonResponse(
        {
            "error": {
                "code": "not_found",
                "message": f"No API endpoint at {request.path}; see /api/v1/docs/.",
            }
        },
        status=404,
    )


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
