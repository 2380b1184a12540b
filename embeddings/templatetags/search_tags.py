"""Template tags that bring search into other apps' pages (the catalog's product page uses
``{% load search_tags %}{% more_like_this product limit=8 %}``) without the catalog importing
the embeddings app."""

from __future__ import annotations

import logging

from django import template

from embeddings.selectors import ProductHit, product_similar

register = template.Library()
log = logging.getLogger(__name__)


@register.inclusion_tag("embeddings/_more_like_this.html")
def more_like_this(product, limit: int = 8) -> dict:
    try:
        # Sliced, so the ranked ids become products in one query (iterating would load one
        # product per query).
        hits = list(product_similar(product_id=product.pk, limit=limit)[:limit])
    except Exception:
        # "More like this" is an extra: a broken model or index must not take the product
        # page down with it. The error is logged for staff; the shopper sees no section.
        log.exception("more_like_this failed for product %s", product.pk)
        hits = []
    return {"product": product, "hits": hits}


@register.filter
def matched_image(hit: ProductHit):
    """The product image that matched the query (several images collapse into one hit); the
    product's first image if that one is gone."""
    images = list(hit.product.images.all())
    return next(
        (image for image in images if image.id == hit.image_id), images[0] if images else None
    )
