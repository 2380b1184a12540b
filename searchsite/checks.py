"""Project system checks (`manage.py check --deploy`)."""

from __future__ import annotations

from django.conf import settings
from django.core.checks import Tags, Warning, register


@register(Tags.caches, deploy=True)
def shared_cache(app_configs, **kwargs):
    """A production deployment runs several processes; what the Django cache holds must be seen
    by all of them."""
    backend = settings.CACHES.get("default", {}).get("BACKEND", "")
    if backend.endswith("LocMemCache"):
        return [
            Warning(
                "The Django cache is local memory (CACHE_URL is not set): each process keeps its "
                "own, so the API's rate limits count per process (N workers allow N times the "
                "rate) and a photo search on the page can read as expired when its next page "
                "lands on another worker.",
                hint="Set CACHE_URL=redis://<host>:6379/1 (a Redis database of its own).",
                id="searchsite.W001",
            )
        ]
    return []
