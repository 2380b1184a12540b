"""Vectors live in the database (the source of truth); the FAISS index is derived from them.

Every write that changes what the index should contain appends an IndexChange row. Its
auto-increment id is the *change sequence*: a serving process remembers the last id it applied
and asks only for newer rows (plus ids it saw missing, which may belong to transactions that
had not committed yet), so syncing is a small delta, never a full reload.

The log is pruned (``manage.py prune_index_changes``, daily from celery beat): rows older than
a few days go, and an IndexChangePrune row records the highest id removed. An index (or a
snapshot) whose sequence is below it can no longer catch up through the log, so it rebuilds
from the stored vectors instead.
"""

from __future__ import annotations

import numpy as np
from django.conf import settings
from django.db import models

from catalog.models import ProductImage


class ImageEmbedding(models.Model):
    image = models.ForeignKey(ProductImage, on_delete=models.CASCADE, related_name="embeddings")
    # Names the model *and* its weights (see ClipEncoder.model_id); vectors of different model
    # ids are never put in one index.
    model_id = models.CharField(max_length=255, db_index=True)
    dim = models.PositiveIntegerField()
    vector = models.BinaryField()  # float32, little-endian, L2-normalised, `dim` values
    content_hash = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["image", "model_id"], name="one_embedding_per_image_model"
            )
        ]

    def __str__(self) -> str:
        return f"image {self.image_id} / {self.model_id}"

    @property
    def array(self) -> np.ndarray:
        return np.frombuffer(bytes(self.vector), dtype="<f4").astype(np.float32)

    @staticmethod
    def pack(vector: np.ndarray) -> bytes:
        return np.ascontiguousarray(vector, dtype="<f4").tobytes()


class IndexChange(models.Model):
    class Op(models.TextChoices):
        UPSERT = "upsert", "upsert"
        DELETE = "delete", "delete"
        # A product's searchable fields changed (title, price, category, active ...) or it was
        # deleted: its images' filter columns and its full-text entry are re-read.
        PRODUCT = "product", "product"

    # id (auto-increment) is the change sequence number.
    image_id = models.BigIntegerField(db_index=True, null=True, blank=True)
    product_id = models.BigIntegerField(null=True, blank=True)
    # Blank for a delete: a deleted image leaves every model's index.
    model_id = models.CharField(max_length=255, blank=True)
    op = models.CharField(max_length=8, choices=Op.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        if self.op == self.Op.PRODUCT:
            return f"#{self.id} product {self.product_id}"
        return f"#{self.id} {self.op} image {self.image_id}"


class IndexChangePrune(models.Model):
    """Every IndexChange row with ``id <= pruned_through`` has been deleted."""

    pruned_through = models.BigIntegerField()
    deleted = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-pruned_through"]

    def __str__(self) -> str:
        return f"pruned through #{self.pruned_through} ({self.deleted} rows)"


# Search analytics keeps its models in its own package; imported here so Django registers them
# with this app (and its migrations).
from .analytics.models import SearchClick, SearchEvent  # noqa: E402, F401

# -- Bulk import from the admin (issue 11, item 5) ----------------------------------------------


def _import_upload_to(instance: CatalogImport, filename: str) -> str:
    # One folder per job under MEDIA_ROOT/imports/jobs/. The media view serves only names that a
    # ProductImage row uses, so nothing here is ever reachable through MEDIA_URL.
    import uuid
    from pathlib import PurePath

    if not instance.folder:
        instance.folder = f"imports/jobs/{uuid.uuid4().hex}"
    return f"{instance.folder}/{PurePath(filename).name}"


class CatalogImport(models.Model):
    """One bulk import started from the admin: the uploaded CSV (and ZIP of images), how its
    columns map to product fields, and how far the worker got. Rows are imported by
    ``embeddings.bulk_import.catalog_import`` (idempotent by SKU), run by
    ``embeddings.import_jobs.catalog_import_run`` in a Celery task."""

    class Status(models.TextChoices):
        NEW = "new", "waiting for column mapping"
        QUEUED = "queued", "queued"
        RUNNING = "running", "running"
        DONE = "done", "done"
        FAILED = "failed", "failed"

    folder = models.CharField(max_length=100, editable=False)
    csv_file = models.FileField(upload_to=_import_upload_to, max_length=255)
    zip_file = models.FileField(upload_to=_import_upload_to, max_length=255, blank=True)
    csv_name = models.CharField(max_length=255)
    zip_name = models.CharField(max_length=255, blank=True)
    header = models.JSONField(default=list)  # the CSV's column names, for the mapping form
    # {"sku": "...", "title": "...", "path": "...", "price": "", "category": "",
    #  "description": [...]}: the CSV column of each product field ("" = not imported)
    columns = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.NEW)
    error = models.TextField(blank=True)  # why a failed job stopped, and what it had done
    rows_total = models.PositiveIntegerField(default=0)
    rows_done = models.PositiveIntegerField(default=0)
    created = models.PositiveIntegerField(default=0)
    updated = models.PositiveIntegerField(default=0)
    unchanged = models.PositiveIntegerField(default=0)
    skipped = models.PositiveIntegerField(default=0)
    errors = models.JSONField(default=list, blank=True)  # [[CSV line, reason], ...]
    image_ids = models.JSONField(default=list, blank=True)  # images created or replaced
    embedded = models.JSONField(default=dict, blank=True)  # outcome counts of the embedding pass
    embed_error = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)  # also the worker's heartbeat
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)  # rows imported (or failed)
    embedded_at = models.DateTimeField(null=True, blank=True)  # embedding pass over

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "catalog import"

    def __str__(self) -> str:
        return f"import #{self.pk} of {self.csv_name}"

    @property
    def is_active(self) -> bool:
        """Still changing: rows being imported, or their images being embedded."""
        if self.status in (self.Status.QUEUED, self.Status.RUNNING):
            return True
        return self.status == self.Status.DONE and self.embedded_at is None
