"""The shop's catalog. Catalog rows only *mark* what needs embedding (ProductImage.index_status);
the embeddings app listens to these models and does the work, never the reverse."""

from __future__ import annotations

import hashlib

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.urls import reverse
from django.utils.text import slugify

from .attributes import attributes_normalise


class Category(models.Model):
    name = models.CharField(max_length=120, unique=True)
    slug = models.SlugField(max_length=140, unique=True, blank=True)

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "categories"

    def __str__(self) -> str:
        return self.name

    def save(self, *args, **kwargs):
        if not self.slug:
            self.slug = slugify(self.name)[:140] or "category"
        super().save(*args, **kwargs)


class Product(models.Model):
    title = models.CharField(max_length=255)
    description = models.TextField(blank=True)
    price = models.DecimalField(
        max_digits=10, decimal_places=2, null=True, blank=True, validators=[MinValueValidator(0)]
    )
    category = models.ForeignKey(
        Category, null=True, blank=True, on_delete=models.SET_NULL, related_name="products"
    )
    sku = models.CharField("SKU", max_length=64, unique=True)
    is_active = models.BooleanField(
        "active", default=True, help_text="Inactive products are hidden from search and pages."
    )
    # {name: value}, lower-case (catalog.attributes): colour, pattern, type, usage, gender, ...
    attributes = models.JSONField(
        default=dict,
        blank=True,
        help_text='Name: value pairs, e.g. {"colour": "red", "pattern": "striped"}; '
        "stored lower-case.",
    )
    # Business ranking signals (embeddings/ranking.py): read from the engine's columns, never
    # per request. All of them weigh nothing until a RANK_* setting or a request's modifiers say.
    boost = models.FloatField(
        default=0.0,
        validators=[MinValueValidator(-10.0), MaxValueValidator(10.0)],
        help_text="Staff-set ranking boost, typically -1..1; 0 ranks by relevance alone.",
    )
    stock = models.IntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(0)],
        help_text="Units in stock; leave empty when the shop does not track stock.",
    )
    # log(1 + search clicks over the last RANK_POPULARITY_DAYS), kept by a periodic task.
    popularity = models.FloatField(default=0.0, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["is_active", "category"]), models.Index(fields=["price"])]

    def __str__(self) -> str:
        return self.title

    def save(self, *args, **kwargs):
        # Every write path (admin, API, import, shell) stores the same normal form.
        self.attributes = attributes_normalise(self.attributes)
        super().save(*args, **kwargs)

    def get_absolute_url(self) -> str:
        return reverse("catalog:product-detail", args=[self.pk])

    def clean(self) -> None:
        super().clean()
        try:
            self.attributes = attributes_normalise(self.attributes)
        except ValidationError as exc:
            raise ValidationError({"attributes": exc.messages}) from None

    @property
    def primary_image(self) -> ProductImage | None:
        images = list(self.images.all())
        return images[0] if images else None


def product_image_path(instance: ProductImage, filename: str) -> str:
    return f"products/{instance.product_id or 'new'}/{filename}"


class ProductImage(models.Model):
    class IndexStatus(models.TextChoices):
        PENDING = "pending", "pending"
        INDEXED = "indexed", "indexed"
        FAILED = "failed", "failed"

    product = models.ForeignKey(Product, on_delete=models.CASCADE, related_name="images")
    image = models.ImageField(upload_to=product_image_path, max_length=255)
    alt_text = models.CharField(max_length=255, blank=True)
    position = models.PositiveIntegerField(default=0)
    # sha256 of the file's bytes: lets the embed task skip an image whose content has not changed.
    content_hash = models.CharField(max_length=64, blank=True, editable=False)
    index_status = models.CharField(
        max_length=10, choices=IndexStatus.choices, default=IndexStatus.PENDING, editable=False
    )
    index_error = models.TextField(blank=True, editable=False)
    indexed_at = models.DateTimeField(null=True, blank=True, editable=False)
    # When its embedding was last queued: the periodic reconcile re-queues an image still pending
    # a grace period after this (its task was lost: broker down at save, a worker killed).
    queued_at = models.DateTimeField(null=True, blank=True, editable=False)
    # Pixel size of the upright original (EXIF rotation applied) and the thumbnails made of it
    # (catalog.thumbnails): the content hash they were made from and their widths ("160,320").
    # Pages read these fields only, so knowing which thumbnails exist costs no storage access.
    width = models.PositiveIntegerField(null=True, blank=True, editable=False)
    height = models.PositiveIntegerField(null=True, blank=True, editable=False)
    thumbnail_hash = models.CharField(max_length=64, blank=True, editable=False)
    thumbnail_widths = models.CharField(max_length=100, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["position", "id"]
        indexes = [models.Index(fields=["index_status"])]

    def __str__(self) -> str:
        return f"{self.product_id}: {self.image.name}"

    def compute_content_hash(self) -> str:
        digest = hashlib.sha256()
        self.image.open("rb")
        try:
            self.image.seek(0)
            for chunk in self.image.chunks():
                digest.update(chunk)
        finally:
            self.image.seek(0)
        return digest.hexdigest()
