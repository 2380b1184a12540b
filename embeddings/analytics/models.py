"""Logged searches and the clicks on their results. Loaded by embeddings/models.py (the app's
models module), so they belong to the `embeddings` app and its migrations."""

from __future__ import annotations

import uuid

from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.utils import timezone


class SearchEvent(models.Model):
    """One search as a shopper or an API client made it. Nothing here identifies who searched."""

    class Mode(models.TextChoices):
        TEXT = "text", "text"
        PHOTO = "photo", "photo"
        TEXT_PHOTO = "text_photo", "photo + text"
        SIMILAR = "similar", "similar to a product"

    class Source(models.TextChoices):
        PAGE = "page", "search page"
        API = "api", "API"

    # Random (uuid4) and handed to the client to attribute clicks: it must not be guessable,
    # so it is not the auto-increment sequence.
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    # Whitespace-collapsed, lower-cased words; "photo" for a photo alone; "" for "similar to".
    query = models.CharField(max_length=500, blank=True)
    mode = models.CharField(max_length=12, choices=Mode.choices)
    source = models.CharField(max_length=8, choices=Source.choices)
    # Only the filters given: {"category": "shirts", "price_max": "30"}; a "similar" search
    # keeps its product id here as {"similar": 12}.
    filters = models.JSONField(default=dict, blank=True, encoder=DjangoJSONEncoder)
    result_count = models.PositiveIntegerField()
    latency_ms = models.FloatField()

    class Meta:
        verbose_name = "logged search"
        verbose_name_plural = "search analytics"
        indexes = [models.Index(fields=["query", "mode"], name="searchevent_query_mode")]

    def __str__(self) -> str:
        return f"{self.mode} {self.query!r} at {self.created_at:%Y-%m-%d %H:%M}"


class SearchClick(models.Model):
    """A product opened from a search's results; one row per (search, product), however often
    the shopper comes back to it."""

    search = models.ForeignKey(SearchEvent, on_delete=models.CASCADE, related_name="clicks")
    # A plain id, not a foreign key: analytics outlive a deleted product, and deleting products
    # never has to touch this table.
    product_id = models.BigIntegerField(db_index=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["search", "product_id"], name="one_click_per_product")
        ]

    def __str__(self) -> str:
        return f"product {self.product_id} from search {self.search_id}"
