"""Exceptions any app may raise that the project answers the same way everywhere."""

from __future__ import annotations


class ServiceUnavailable(Exception):
    """A part the request needs is away for a moment (the search index being rebuilt after
    damage was found, say): answered 503 with Retry-After and this message, JSON under /api/
    and the 503 page elsewhere, never a 500 or a wrong answer."""

    code = "service_unavailable"

    def __init__(self, message: str, *, retry_after: int = 30) -> None:
        super().__init__(message)
        self.retry_after = retry_after
