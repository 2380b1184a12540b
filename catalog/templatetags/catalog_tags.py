"""Template filters for catalog pages: ``{% load catalog_tags %}{{ product.price|money }}``."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from django import template
from django.conf import settings
from django.utils.html import escape
from django.utils.safestring import mark_safe

from ..thumbnails import image_thumbnails

register = template.Library()

# Symbols written before the amount; every other currency is written as "12.50 CHF".
SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£", "INR": "₹", "JPY": "¥", "CNY": "¥", "KRW": "₩"}
# ISO 4217 currencies without minor units.
ZERO_DECIMAL = {"JPY", "KRW", "VND", "CLP", "ISK", "UGX", "PYG", "XAF", "XOF"}


def format_money(value, currency: str) -> str:
    if value is None or value == "":
        return ""
    try:
        amount = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return str(value)
    places = 0 if currency in ZERO_DECIMAL else 2
    number = f"{amount:,.{places}f}"
    symbol = SYMBOLS.get(currency)
    return f"{symbol}{number}" if symbol else f"{number} {currency}"


@register.filter
def money(value) -> str:
    """A price in the shop's currency (settings.SHOP_CURRENCY): "$1,299.00", "12.50 CHF"."""
    return format_money(value, settings.SHOP_CURRENCY)


# A grid card is ~220 CSS px wide beside the filters on a desktop, about half the screen on a phone
# (shop.css .grid). The product page passes its own sizes for the gallery.
GRID_SIZES = "(max-width: 760px) 50vw, 240px"


def _sources(image, max_width: int | None) -> dict:
    """src, srcset, width, height of an image's thumbnails up to ``max_width`` (all by default),
    or of the original while it has none."""
    thumbs = image_thumbnails(image)
    if max_width is not None:
        thumbs = [t for t in thumbs if t.width <= max_width] or thumbs[:1]
    if not thumbs:
        return {"src": image.image.url, "srcset": "", "width": image.width, "height": image.height}
    # src for the rare browser without srcset: the largest of the set (sharp when shown big).
    largest = thumbs[-1]
    return {
        "src": largest.url,
        "srcset": ", ".join(f"{t.url} {t.width}w" for t in thumbs),
        "width": largest.width,
        "height": largest.height,
    }


@register.simple_tag
def product_img_sources(image, *, max_width: int | None = None) -> dict:
    """``{% product_img_sources image as s %}``: ``s.src``, ``s.srcset``, ``s.width``,
    ``s.height`` (for scripts that swap pictures, e.g. the product gallery)."""
    return _sources(image, max_width) if image is not None else {}


@register.simple_tag
def product_img(
    image,
    *,
    alt: str = "",
    sizes: str = GRID_SIZES,
    max_width: int | None = None,
    loading: str = "lazy",
    **attrs,
) -> str:
    """``<img>`` of a product image from its thumbnails: ``src``, ``srcset`` (every thumbnail up to
    ``max_width``), ``sizes``, and ``width``/``height`` so the browser reserves the space before
    the file arrives. Until the thumbnails are made (the embedding worker makes them), the
    original, with its size when known. Extra keyword arguments become attributes
    (``data_gallery_main=True`` -> ``data-gallery-main``). Reads the row's fields only: no query,
    no storage access."""
    if image is None:
        return ""
    values = _sources(image, max_width)
    if values["srcset"]:
        values["sizes"] = sizes
    values.update(alt=alt or image.alt_text, loading=loading, decoding="async")
    for key, value in attrs.items():
        values[key.replace("_", "-")] = value
    parts = []
    for key, value in values.items():
        if value is None or value is False or value == "":
            continue
        # escape(), not format_html's conditional escape: a template's string literal arrives
        # marked safe, and an attribute value must be escaped whatever its origin.
        parts.append(escape(key) if value is True else f'{escape(key)}="{escape(value)}"')
    return mark_safe("<img " + " ".join(parts) + ">")
