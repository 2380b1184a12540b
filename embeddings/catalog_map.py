"""A picture of the catalog: a 2-D map of the product embeddings, for the admin's catalog map.

One vector per product: the mean of its images' stored vectors (``ImageEmbedding`` rows of the
serving model), L2-normalised again. At most ``EMBEDDINGS_MAP_MAX_POINTS`` products are mapped,
a sample that is deterministic (a fixed hash of the product id orders each category) and
stratified by category (small categories are kept whole, the big ones share what is left), so a
category of five products still shows beside one of five thousand.

The layout is PCA with NumPy (an SVD of the centred vectors): linear, exact, deterministic, and
fast enough to compute in the request (see the README for figures). Beside it, the "possibly
mislabelled" products: those whose k nearest neighbours (cosine, in the full-dimensional space,
among the mapped products) are mostly of one other category.

The result is cached in Django's cache under the model id and the index change sequence, so it
is computed again only after the catalog changed (a vector added, replaced or removed, a product
edited). Titles, category names and thumbnails are read fresh for each page
(``catalog_map_points``), so a renamed category never shows its old name.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from django.conf import settings
from django.core.cache import cache
from django.db.models import Max
from django.urls import reverse

from catalog.models import Category, Product
from catalog.thumbnails import image_thumbnails

from .engine.changes import pruned_through
from .models import ImageEmbedding, IndexChange

NO_CATEGORY = -1  # the category id of products without one
NO_CATEGORY_NAME = "(none)"
NEIGHBOURS = 10
HOVER_WIDTH = 160  # the thumbnail shown beside the plot
_CACHE_VERSION = 1
_IN_BATCH = 900  # ids per IN (...) clause: well below SQLite's variable limit


@dataclass(frozen=True)
class Suspect:
    """A product whose nearest neighbours are mostly of another category."""

    product_id: int
    category_id: int  # NO_CATEGORY when it has none
    likely_category_id: int  # the category most of its neighbours have
    likely_count: int  # how many of its ``k`` neighbours have it
    own_count: int  # how many have its own category
    k: int


@dataclass(frozen=True)
class CatalogMap:
    """The layout of ``len(product_ids)`` products: ``xy[i]`` is where ``product_ids[i]`` (of
    category ``category_ids[i]``) is drawn. ``explained`` is the share of the variance each axis
    carries; ``total_products`` how many products have a vector (the map shows a sample when it
    exceeds ``max_points``)."""

    model_id: str
    seq: int
    max_points: int
    total_products: int
    product_ids: np.ndarray  # (n,) int64
    category_ids: np.ndarray  # (n,) int64
    xy: np.ndarray  # (n, 2) float32
    explained: tuple[float, float]
    suspects: list[Suspect] = field(default_factory=list)
    seconds: float = 0.0  # how long the computation took
    computed_at: float = 0.0  # time.time() when it was computed

    @property
    def sampled(self) -> bool:
        return len(self.product_ids) < self.total_products


# --- the pure parts (NumPy in, NumPy out) ----------------------------------------------------


def _hash_order(product_ids: np.ndarray) -> np.ndarray:
    # Knuth's multiplicative hash: a fixed, well-spread order of the ids, so a sample is the
    # same on every run and mostly the same after products are added.
    return (product_ids.astype(np.uint64) * np.uint64(2654435761)) & np.uint64(0xFFFFFFFF)


def stratified_sample(
    product_ids: np.ndarray, category_ids: np.ndarray, max_points: int
) -> np.ndarray:
    """Indices (ascending) of at most ``max_points`` items, every category represented: the
    budget is shared equally between categories, a category smaller than its share is taken
    whole and hands what it leaves to the larger ones. Within a category the items taken are
    the first in a fixed hash order of the product id. All items when they fit."""
    n = len(product_ids)
    if n <= max_points:
        return np.arange(n)
    groups: dict[int, np.ndarray] = {}
    for cat in np.unique(category_ids):
        groups[int(cat)] = np.flatnonzero(category_ids == cat)
    order = sorted(groups, key=lambda c: (len(groups[c]), c))
    remaining, left = max_points, len(order)
    chosen: list[np.ndarray] = []
    for cat in order:
        members = groups[cat]
        quota = min(len(members), remaining // left)
        remaining -= quota
        left -= 1
        if quota:
            ranked = members[np.argsort(_hash_order(product_ids[members]), kind="stable")]
            chosen.append(ranked[:quota])
    return np.sort(np.concatenate(chosen)) if chosen else np.arange(0)


def pca_2d(vectors: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
    """The (n, 2) float32 projection of ``vectors`` (n, d) on their first two principal
    components, and the share of the variance each carries. Each component's sign is fixed (its
    largest loading is positive), so the same vectors always give the same picture. Fewer than
    two points, or no variance, give zeros."""
    x = np.asarray(vectors, dtype=np.float64)
    n = x.shape[0]
    if n < 2:
        return np.zeros((n, 2), dtype=np.float32), (0.0, 0.0)
    centred = x - x.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    total = float((s**2).sum())
    if total <= 0.0:
        return np.zeros((n, 2), dtype=np.float32), (0.0, 0.0)
    components = vt[:2]
    signs = np.sign(components[np.arange(len(components)), np.abs(components).argmax(axis=1)])
    components = components * signs[:, None]
    xy = centred @ components.T
    if xy.shape[1] < 2:  # one-dimensional data
        xy = np.hstack([xy, np.zeros((n, 2 - xy.shape[1]))])
    ratios = list((s[:2] ** 2) / total) + [0.0, 0.0]
    return xy.astype(np.float32), (float(ratios[0]), float(ratios[1]))


def nearest_neighbours(vectors: np.ndarray, k: int, *, block: int = 1024) -> np.ndarray:
    """(n, min(k, n-1)) indices of each row's nearest other rows by cosine similarity (rows
    L2-normalised), nearest first; computed in blocks so memory stays at ``block * n``."""
    n = vectors.shape[0]
    k = min(k, n - 1)
    if k <= 0:
        return np.zeros((n, 0), dtype=np.int64)
    v = np.ascontiguousarray(vectors, dtype=np.float32)
    out = np.empty((n, k), dtype=np.int64)
    for start in range(0, n, block):
        sims = v[start : start + block] @ v.T
        rows = np.arange(sims.shape[0])
        sims[rows, start + rows] = -np.inf  # never its own neighbour
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sims, top, axis=1), axis=1, kind="stable")
        out[start : start + block] = np.take_along_axis(top, order, axis=1)
    return out


def mislabelled(
    vectors: np.ndarray, category_ids: np.ndarray, product_ids: np.ndarray, k: int = NEIGHBOURS
) -> list[Suspect]:
    """The products whose ``k`` nearest neighbours are mostly (more than half) of one category
    other than their own, most convincing first. Products without a category are listed too
    when their neighbours agree on one (a category to give them); "no category" is never
    suggested."""
    neighbours = nearest_neighbours(vectors, k)
    k = neighbours.shape[1]
    suspects = []
    for i in range(len(product_ids)):
        own = int(category_ids[i])
        counts = Counter(int(c) for c in category_ids[neighbours[i]])
        for cat, count in counts.most_common():
            if cat != own and cat != NO_CATEGORY:
                if count * 2 > k:
                    suspects.append(
                        Suspect(
                            product_id=int(product_ids[i]),
                            category_id=own,
                            likely_category_id=cat,
                            likely_count=count,
                            own_count=counts.get(own, 0),
                            k=k,
                        )
                    )
                break
    suspects.sort(key=lambda s: (-s.likely_count, s.own_count, s.product_id))
    return suspects


# --- from the database --------------------------------------------------------------------------


def index_sequence() -> int:
    """The index change sequence: it grows whenever a vector or a product changes."""
    latest = IndexChange.objects.aggregate(m=Max("id"))["m"] or 0
    return max(latest, pruned_through())


def product_vectors(*, model_id: str, product_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The mean of each product's image vectors of ``model_id``, L2-normalised: (product ids
    that have one, (n, dim) float32), in the order of ``product_ids``."""
    sums: dict[int, np.ndarray] = {}
    ids = [int(p) for p in product_ids]
    for start in range(0, len(ids), _IN_BATCH):
        rows = ImageEmbedding.objects.filter(
            model_id=model_id, image__product_id__in=ids[start : start + _IN_BATCH]
        ).values_list("image__product_id", "vector")
        for pid, blob in rows:
            vec = np.frombuffer(bytes(blob), dtype="<f4")
            if pid in sums:
                sums[pid] = sums[pid] + vec
            else:
                sums[pid] = vec.astype(np.float32)
    kept = [p for p in ids if p in sums]
    if not kept:
        return np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32)
    matrix = np.stack([sums[p] for p in kept]).astype(np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    matrix /= np.where(norms > 0, norms, 1.0)
    return np.asarray(kept, dtype=np.int64), matrix


def _products_with_vectors(model_id: str) -> tuple[np.ndarray, np.ndarray]:
    rows = list(
        Product.objects.filter(images__embeddings__model_id=model_id)
        .values_list("id", "category_id")
        .distinct()
        .order_by("id")
    )
    ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    cats = np.fromiter(
        (NO_CATEGORY if r[1] is None else r[1] for r in rows), dtype=np.int64, count=len(rows)
    )
    return ids, cats


def catalog_map_compute(*, model_id: str, max_points: int, seq: int) -> CatalogMap | None:
    """The map of the catalog's vectors of ``model_id`` (see the module docstring), computed
    now; None when no product has a vector of this model."""
    started = time.perf_counter()
    all_ids, all_cats = _products_with_vectors(model_id)
    if not len(all_ids):
        return None
    picked = stratified_sample(all_ids, all_cats, max_points)
    ids, vectors = product_vectors(model_id=model_id, product_ids=all_ids[picked])
    # A vector deleted between the two reads leaves its product out; keep the two in step.
    cats = all_cats[picked][np.isin(all_ids[picked], ids)]
    xy, explained = pca_2d(vectors)
    suspects = mislabelled(vectors, cats, ids)
    return CatalogMap(
        model_id=model_id,
        seq=seq,
        max_points=max_points,
        total_products=len(all_ids),
        product_ids=ids,
        category_ids=cats,
        xy=xy,
        explained=explained,
        suspects=suspects,
        seconds=time.perf_counter() - started,
        computed_at=time.time(),
    )


def _cache_key(model_id: str, seq: int, max_points: int) -> str:
    return f"embeddings:catalog-map:v{_CACHE_VERSION}:{model_id}:{seq}:{max_points}"


def catalog_map(*, model_id: str, max_points: int | None = None) -> CatalogMap | None:
    """The catalog map of ``model_id``: from the cache while the index change sequence is the
    one it was computed at, else computed now and cached. None when there are no vectors yet."""
    max_points = settings.EMBEDDINGS_MAP_MAX_POINTS if max_points is None else max_points
    # Read before the vectors: a change that lands during the computation has a higher number,
    # so the next page computes again rather than keeping a map that misses it.
    seq = index_sequence()
    key = _cache_key(model_id, seq, max_points)
    found = cache.get(key)
    if isinstance(found, CatalogMap):
        return found
    result = catalog_map_compute(model_id=model_id, max_points=max_points, seq=seq)
    if result is not None:
        # A day at most: superseded maps (older sequences) then leave a shared cache.
        cache.set(key, result, timeout=24 * 3600)
    return result


# --- for the page -----------------------------------------------------------------------------


def _hover_image_url(product: Product) -> str:
    images = list(product.images.all())
    if not images:
        return ""
    thumbs = image_thumbnails(images[0])
    if thumbs:
        small = [t for t in thumbs if t.width <= HOVER_WIDTH] or thumbs[:1]
        return small[-1].url
    return images[0].image.url  # thumbnails not made yet: the original


def catalog_map_points(cmap: CatalogMap) -> dict[str, Any]:
    """What the page draws, JSON-ready: one entry per category (name, and per point x, y,
    product id, title, hover thumbnail URL), the admin change URL pattern (``{id}``), and the
    suspects with names. Titles, names and thumbnails are read now (two queries plus images)."""
    products = {
        p.id: p
        for p in Product.objects.filter(id__in=cmap.product_ids.tolist())
        .only("id", "title", "category_id")
        .prefetch_related("images")
    }
    names = dict(Category.objects.values_list("id", "name"))
    names[NO_CATEGORY] = NO_CATEGORY_NAME
    groups: dict[int, dict[str, list]] = {}
    for (x, y), pid, cat in zip(
        cmap.xy.tolist(), cmap.product_ids.tolist(), cmap.category_ids.tolist(), strict=True
    ):
        product = products.get(pid)
        if product is None:  # deleted since the map was computed
            continue
        g = groups.setdefault(cat, {"x": [], "y": [], "id": [], "title": [], "thumb": []})
        g["x"].append(round(x, 5))
        g["y"].append(round(y, 5))
        g["id"].append(pid)
        g["title"].append(product.title)
        g["thumb"].append(_hover_image_url(product))
    categories = sorted(
        ({"name": names.get(cat, f"category {cat}"), **g} for cat, g in groups.items()),
        key=lambda c: (c["name"] == NO_CATEGORY_NAME, c["name"].lower()),
    )
    suspects = [
        {
            "product_id": s.product_id,
            "title": products[s.product_id].title,
            "category": names.get(s.category_id, NO_CATEGORY_NAME),
            "likely_category": names.get(s.likely_category_id, f"category {s.likely_category_id}"),
            "likely_count": s.likely_count,
            "own_count": s.own_count,
            "k": s.k,
        }
        for s in cmap.suspects
        if s.product_id in products
    ]
    change_url = reverse("admin:catalog_product_change", args=[0]).replace("/0/", "/{id}/")
    return {"categories": categories, "suspects": suspects, "change_url": change_url}
