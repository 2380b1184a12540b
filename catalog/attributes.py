"""Product attributes (colour, pattern, type, usage, gender, ...): a small dict per product.

Stored as ``Product.attributes`` {name: value}, both lower-case and trimmed, so "Navy Blue" from
one import and "navy blue" from an admin edit are one facet value. Which attributes are shown as
facets and filterable is the shop's choice: settings.CATALOG_FACET_ATTRIBUTES.
"""

from __future__ import annotations

import re

from django.conf import settings
from django.core.exceptions import ValidationError

NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")
MAX_VALUE_CHARS = 60
MAX_ATTRIBUTES = 20


def attributes_normalise(raw: object) -> dict[str, str]:
    """{name: value} with names and values trimmed and lower-cased, empty values dropped.
    Raises ValidationError (a message a person can act on) for anything else than a flat dict
    of short text values with simple names."""
    if raw is None or raw == "":
        return {}
    if not isinstance(raw, dict):
        raise ValidationError(
            'Attributes must be an object of name: value, e.g. {"colour": "red"}.'
        )
    out: dict[str, str] = {}
    for name, value in raw.items():
        key = " ".join(str(name).split()).lower().replace(" ", "_")
        if not NAME.fullmatch(key):
            raise ValidationError(
                f"Attribute name {name!r}: use letters, digits and underscores (e.g. colour)."
            )
        if value is None:
            continue
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise ValidationError(f'Attribute {key!r}: the value must be text, e.g. "red".')
        text = " ".join(str(value).split()).lower()
        if len(text) > MAX_VALUE_CHARS:
            raise ValidationError(
                f"Attribute {key!r}: the value is {len(text)} characters; at most {MAX_VALUE_CHARS}."
            )
        if text:
            out[key] = text
    if len(out) > MAX_ATTRIBUTES:
        raise ValidationError(f"A product has at most {MAX_ATTRIBUTES} attributes.")
    return out


def facet_attributes() -> tuple[str, ...]:
    """The shop's facetable attributes, in display order (settings.CATALOG_FACET_ATTRIBUTES)."""
    return tuple(settings.CATALOG_FACET_ATTRIBUTES)
