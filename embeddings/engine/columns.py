"""The per-image arrays kept beside the vectors, and the shopper filters evaluated on them.

Row ``r`` of every array describes the vector stored under id ``r``: which image it is, which
product owns it, and the product's active flag, category, price and attribute values (slot ``i``
holds a code of the value of the shop's i-th facet attribute; ``attribute_code``), and its
business ranking signals (boost, stock, creation time, popularity; embeddings/ranking.py).
Ranking and filtering read only these arrays; the database is asked once, for the products of
the page shown.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

NO_CATEGORY = -1
# Facet attributes kept beside the vectors (settings.CATALOG_FACET_ATTRIBUTES, in order): a fixed
# number of int32 slots, so the columns (and the snapshot's files) do not depend on settings.
ATTRIBUTE_SLOTS = 8
NO_VALUE = 0  # the product has no value for the slot's attribute
NO_STOCK = -1  # the shop does not track the product's stock

# name -> dtype; the snapshot stores one .npy file per name.
COLUMNS: dict[str, np.dtype] = {
    "image_id": np.dtype(np.int64),
    "product_id": np.dtype(np.int64),
    "category_id": np.dtype(np.int32),  # NO_CATEGORY when the product has none
    "price": np.dtype(np.float64),  # NaN when the product has no price
    "active": np.dtype(np.bool_),
    **{f"attr{i}": np.dtype(np.int32) for i in range(ATTRIBUTE_SLOTS)},
    "boost": np.dtype(np.float32),
    "stock": np.dtype(np.int32),  # NO_STOCK when not tracked
    "created": np.dtype(np.float64),  # the product's created_at, Unix seconds (NaN: unknown)
    "popularity": np.dtype(np.float32),
}
# The ranking signal columns and their value for a product the index does not hold.
SIGNALS: dict[str, float] = {"boost": 0.0, "stock": NO_STOCK, "created": np.nan, "popularity": 0.0}


def attribute_code(value: str) -> int:
    """A stable non-zero int32 code of an attribute value (lower-case text): the same in every
    process and snapshot with no shared vocabulary; CRC-32 collisions among one attribute's few
    hundred values are vanishingly rare."""
    return (zlib.crc32(value.encode("utf-8")) & 0x7FFFFFFF) or 1


@dataclass(frozen=True)
class Attrs:
    """What a filter needs of one image's product."""

    product_id: int
    active: bool
    category_id: int | None
    price: float | None
    codes: tuple[int, ...] = ()  # attribute_code per slot, NO_VALUE where the product has none
    boost: float = 0.0
    stock: int | None = None  # None: not tracked
    created: float | None = None  # Unix seconds
    popularity: float = 0.0


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
        **{
            f"attr{i}": np.fromiter(
                (a.codes[i] if i < len(a.codes) else NO_VALUE for a in attrs), np.int32, len(attrs)
            )
            for i in range(ATTRIBUTE_SLOTS)
        },
        "boost": np.fromiter((a.boost or 0.0 for a in attrs), np.float32, len(attrs)),
        "stock": np.fromiter(
            (NO_STOCK if a.stock is None else min(a.stock, 2**31 - 1) for a in attrs),
            np.int32,
            len(attrs),
        ),
        "created": np.fromiter(
            (np.nan if a.created is None else a.created for a in attrs), np.float64, len(attrs)
        ),
        "popularity": np.fromiter((a.popularity or 0.0 for a in attrs), np.float32, len(attrs)),
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
    # (slot, codes): the product's value in that slot is one of the codes (OR within an
    # attribute, AND across attributes).
    attributes: tuple[tuple[int, tuple[int, ...]], ...] = ()
    in_stock_only: bool = False  # leaves out products whose tracked stock is 0

    @property
    def is_empty(self) -> bool:
        return (
            self.category_ids is None
            and self.price_min is None
            and self.price_max is None
            and not self.exclude_product_ids
            and self.product_ids is None
            and not self.attributes
            and not self.in_stock_only
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
        for slot, codes in self.attributes:
            keep &= np.isin(cols[f"attr{slot}"], np.asarray(codes, np.int32))
        if self.in_stock_only:
            keep &= cols["stock"] != 0
        return keep
