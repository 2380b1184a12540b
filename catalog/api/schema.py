"""The API's error responses as the OpenAPI schema states them: one description per status, so
every endpoint lists each 4xx/5xx it can really answer (schemathesis holds the schema to that),
all with the one error body of searchsite.api. Also the token endpoint's schema."""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiViewExtension
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers

from .serializers import ErrorSerializer

# What each status means anywhere in this API; an endpoint may say it more precisely.
DESCRIPTIONS: dict[int, str] = {
    400: "Bad input: `error.code` is `invalid` (`error.details` names the fields), "
    "`invalid_image` or `image_too_large`.",
    401: "The credentials are missing (writes) or not valid (a wrong or deleted token, on any "
    "endpoint): `not_authenticated` / `authentication_failed`.",
    403: "The user is not staff, or a session request without its CSRF token: `permission_denied`.",
    404: "No such object, or the page is past the last page: `not_found`.",
    413: "Too large: an uploaded file over MAX_UPLOAD_BYTES (`file_too_large`) or a request "
    "body over MAX_REQUEST_BYTES (`request_too_large`).",
    415: "The request body's type is not one this endpoint takes, or an uploaded file is not "
    "a JPEG, PNG, WebP, GIF, BMP or TIFF image: `unsupported_media_type`.",
    414: "The URL is longer than the web server accepts (gunicorn's limit_request_line, about "
    "4 KB): answered by the server before the API, so not in the JSON error shape. Shorten the "
    "query string (a search can POST its text as a form field instead).",
    429: "Too many requests from this client: `throttled`; retry after the `Retry-After` "
    "header's seconds.",
    503: "The database or the search index is unavailable for a moment: "
    "`service_unavailable`; retry after the `Retry-After` header's seconds.",
}

# Every endpoint reads the database and authenticates a token when one is sent, and the server
# in front refuses an overlong URL on any of them.
ALWAYS = (401, 414, 503)
# Answered by the server, not the API: no body shape to promise.
NO_BODY = {414}


def error(description: str) -> OpenApiResponse:
    return OpenApiResponse(ErrorSerializer, description=description)


def errors(*statuses: int, described: dict[int, str] | None = None) -> dict[int, OpenApiResponse]:
    """Error responses for ``statuses`` plus 401, 414 and 503; ``described`` says what a status means
    on this endpoint when it is narrower than the general description."""
    described = described or {}
    wanted = sorted(set(statuses) | set(ALWAYS))
    return {
        status: OpenApiResponse(description=DESCRIPTIONS[status])
        if status in NO_BODY
        else error(described.get(status, DESCRIPTIONS[status]))
        for status in wanted
    }


class ObtainAuthTokenSchema(OpenApiViewExtension):
    """POST auth/token/ (DRF's ObtainAuthToken, routed in catalog/api/urls.py): its answer is
    `{"token": ...}`, not the credentials the default schema would show, and wrong credentials
    are a 400."""

    target_class = "rest_framework.authtoken.views.ObtainAuthToken"
    match_subclasses = True
    priority = 1  # over drf-spectacular's own extension for this view

    def view_replacement(self):
        @extend_schema(
            tags=["auth"],
            summary="Get a token for a user",
            description="Form or JSON `username` and `password`; send the token as "
            "`Authorization: Token <key>`. Limited per client address (THROTTLE_AUTH_TOKEN).",
            responses={
                200: inline_serializer("AuthToken", {"token": serializers.CharField()}),
                **errors(
                    400,
                    413,
                    415,
                    429,
                    described={400: "Wrong username or password, or one of them missing."},
                ),
            },
        )
        class DocumentedObtainAuthToken(self.target):
            pass

        return DocumentedObtainAuthToken
