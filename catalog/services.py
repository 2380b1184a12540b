"""Writes to the catalog. Views, serializers, admin actions and commands call these."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from decimal import Decimal

from django.core.files.base import File
from django.db import transaction
from django.utils.text import slugify

from .models import Category, Product, ProductImage


def category_get_or_create(*, name: str) -> Category:
    name = name.strip()
    category = Category.objects.filter(name__iexact=name).first()
    if category is not None:
        return category
    slug = slugify(name)[:140] or "category"
    base, n = slug, 2
    while Category.objects.filter(slug=slug).exists():
        slug, n = f"{base[:130]}-{n}", n + 1
    return Category.objects.create(name=name, slug=slug)


def sku_generate() -> str:
    return f"SKU-{uuid.uuid4().hex[:10].upper()}"


@transaction.atomic
def product_create(
    *,
    title: str,
    sku: str | None = None,
    description: str = "",
    price: Decimal | None = None,
    category: Category | None = None,
    is_active: bool = True,
    attributes: dict[str, str] | None = None,
    boost: float = 0.0,
    stock: int | None = None,
    images: Iterable[File] = (),
) -> Product:
    product = Product(
        attributes=attributes or {},
        title=title.strip(),
        sku=(sku or "").strip() or sku_generate(),
        description=description,
        price=price,
        category=category,
        is_active=is_active,
        boost=boost,
        stock=stock,
    )
    product.full_clean()
    product.save()
    added: list[ProductImage] = []
    try:
        for position, image in enumerate(images):
            added.append(product_image_add(product=product, file=image, position=position))
    except BaseException:
        # The rows roll back with the transaction; the files already written would not.
        for image in added:
            image.image.delete(save=False)
        raise
    return product


# What staff may edit on a product (the admin form shows these, product_update accepts them).
PRODUCT_EDITABLE_FIELDS = (
    "title",
    "sku",
    "description",
    "price",
    "category",
    "is_active",
    "attributes",
    "boost",
    "stock",
)


@transaction.atomic
def product_update(*, product: Product, **fields) -> Product:
    allowed = set(PRODUCT_EDITABLE_FIELDS)
    unknown = set(fields) - allowed
    if unknown:
        raise ValueError(f"Cannot update {sorted(unknown)}; allowed fields: {sorted(allowed)}")
    for name, value in fields.items():
        setattr(product, name, value)
    product.full_clean()
    product.save()
    return product


@transaction.atomic
def product_delete(*, product: Product) -> None:
    # Deleting cascades to the images; the embeddings app removes them from the index.
    product.delete()


@transaction.atomic
def product_image_add(
    *, product: Product, file: File, position: int | None = None, alt_text: str = ""
) -> ProductImage:
    if position is None:
        last = product.images.order_by("-position").values_list("position", flat=True).first()
        position = 0 if last is None else last + 1
    image = ProductImage(product=product, position=position, alt_text=alt_text)
    # Every field but the file is checked before the file is written (position past the
    # database's integer range, alt_text too long ...): a rejected row leaves nothing in storage.
    image.clean_fields(exclude=["image", "product"])
    image.image.save(getattr(file, "name", None) or "upload.jpg", file, save=False)
    try:
        image.save()
    except BaseException:
        image.image.delete(save=False)
        raise
    return image


@transaction.atomic
def product_image_delete(*, image: ProductImage) -> None:
    image.delete()


def product_images_mark_pending(*, image_ids: Iterable[int]) -> int:
    """Marks images as waiting for (re-)indexing. Returns how many rows changed."""
    return ProductImage.objects.filter(id__in=list(image_ids)).update(
        index_status=ProductImage.IndexStatus.PENDING, index_error=""
    )
