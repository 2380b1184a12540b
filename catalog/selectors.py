"""Reads from the catalog."""

from __future__ import annotations

from decimal import Decimal

from django.db.models import Prefetch, QuerySet

from .models import Category, Product, ProductImage


def product_queryset(*, include_inactive: bool = False) -> QuerySet[Product]:
    qs = Product.objects.select_related("category").prefetch_related(
        Prefetch("images", queryset=ProductImage.objects.order_by("position", "id"))
    )
    return qs if include_inactive else qs.filter(is_active=True)


def product_filter(
    qs: QuerySet[Product],
    *,
    category: str | None = None,
    price_min: Decimal | None = None,
    price_max: Decimal | None = None,
    attributes: dict[str, tuple[str, ...]] | None = None,
) -> QuerySet[Product]:
    """Applies the shopper-facing filters. `category` is a slug; `attributes` {name: values}
    keeps products having one of the values of each named attribute."""
    for name, values in (attributes or {}).items():
        qs = qs.filter(**{f"attributes__{name}__in": list(values)})
    if category:
        qs = qs.filter(category__slug=category)
    if price_min is not None:
        qs = qs.filter(price__gte=price_min)
    if price_max is not None:
        qs = qs.filter(price__lte=price_max)
    return qs


def product_list(
    *,
    category: str | None = None,
    price_min: Decimal | None = None,
    price_max: Decimal | None = None,
    attributes: dict[str, tuple[str, ...]] | None = None,
    include_inactive: bool = False,
) -> QuerySet[Product]:
    return product_filter(
        product_queryset(include_inactive=include_inactive),
        category=category,
        price_min=price_min,
        price_max=price_max,
        attributes=attributes,
    )


def product_get(*, product_id: int, include_inactive: bool = False) -> Product | None:
    return product_queryset(include_inactive=include_inactive).filter(pk=product_id).first()


def category_list() -> QuerySet[Category]:
    return Category.objects.all()
