"""The per-image arrays kept beside the vectors, and the shopper filters evaluated on them.

Row ``r`` of every array describes the vector stored under id ``r``: which image it is, which
product owns it, and the product's active flag, category and price. Ranking and filtering read
only these arrays; the database is asked once, for the products of the page shown.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

NO_CATEGORY = -1

# name -> dtype; the snapshot stores one .npy file per name.
COLUMNS: dict[str, np.dtype] = {
    "image_id": np.dtype(np.int64),
    "product_id": np.dtype(np.int64),
    "category_id": np.dtype(np.int32),  # NO_CATEGORY when the product has none
    "price": np.dtype(np.float64),  # NaN when the product has no price
    "active": np.dtype(np.bool_),
}


@dataclass(frozen=True)
class Attrs:
    """What a filter needs of one image's product."""

    product_id: int
    active: bool
    category_id: int | None
    price: float | None


def columns_from(image_ids: Iterable[int], attrs: Iterable[Attrs]) -> dict[str, np.ndarray]:
    attrs = list(attrs)
    ids = np.fromiter(image_ids, dtype=np.int64, count=len(attrs))
    return {
        "image_id": ids,
        "product_id": np.fromiter((a.product_id for a in attrs), np.int64, len(attrs)),
        "category_id": np.fromiter(
            (NO_CATEGORY if a.category_id is None else a.category_id for a in attrs),
            np.int32,
            len(attrs),
        ),
        "price": np.fromiter(
            (np.nan if a.price is None else float(a.price) for a in attrs), np.float64, len(attrs)
        ),
        "active": np.fromiter((bool(a.active) for a in attrs), np.bool_, len(attrs)),
    }


def empty_columns() -> dict[str, np.ndarray]:
    return {name: np.zeros(0, dtype=dtype) for name, dtype in COLUMNS.items()}


@dataclass(frozen=True)
class Filter:
    """Shopper filters. ``category_ids`` None = any category; an empty tuple matches nothing
    (a category that does not exist). Prices are inclusive; a product without a price never
    matches a price bound (as in SQL). Inactive products never match."""

    category_ids: tuple[int, ...] | None = None
    price_min: float | None = None
    price_max: float | None = None
    exclude_product_ids: frozenset[int] = frozenset()
    product_ids: frozenset[int] | None = None  # only these products (None: any)

    @property
    def is_empty(self) -> bool:
        return (
            self.category_ids is None
            and self.price_min is None
            and self.price_max is None
            and not self.exclude_product_ids
            and self.product_ids is None
        )

    def mask(self, cols: dict[str, np.ndarray]) -> np.ndarray:
        """Boolean row mask of the rows this filter keeps (active ones only)."""
        keep = np.array(cols["active"], dtype=bool, copy=True)
        if self.category_ids is not None:
            if len(self.category_ids) == 1:
                keep &= cols["category_id"] == self.category_ids[0]
            else:
                keep &= np.isin(cols["category_id"], np.asarray(self.category_ids, np.int32))
        if self.price_min is not None:
            keep &= cols["price"] >= self.price_min
        if self.price_max is not None:
            keep &= cols["price"] <= self.price_max
        if self.exclude_product_ids:
            keep &= ~np.isin(cols["product_id"], np.fromiter(self.exclude_product_ids, np.int64))
        if self.product_ids is not None:
            keep &= np.isin(cols["product_id"], np.fromiter(self.product_ids, np.int64))
        return keep
