"""Suggestions on upload (issue 11, item 6): for an image staff are adding to a product, the
existing products with a nearly identical image, and the category the model suggests.

Both come from the live index (``runtime.get_live_index().search``), so they see what search
sees: the serving model's vectors of *active* products (an inactive product's images are not in
the searchable index, so it is never reported as a duplicate).

- **Near-duplicates**: products whose best image scores at least
  ``EMBEDDINGS_DUPLICATE_THRESHOLD`` (cosine) against the image, the product being edited left
  out, best first, at most ``DUPLICATE_LIMIT``. The default threshold was calibrated on the
  shared catalog (see the README, "Suggestions on upload").
- **Attributes** (``Product.attributes``): the same vote, per attribute of
  ``CATALOG_FACET_ATTRIBUTES``, among the neighbours that have it (no zero-shot fallback).
- **Category**: a vote of the ``EMBEDDINGS_SUGGEST_NEIGHBOURS`` nearest products that have a
  category, each weighted by its (non-negative) score; confidence = the winner's share of the
  weight. When fewer than ``MIN_VOTERS`` neighbours have a category (a new shop), zero-shot
  instead: the image against "a photo of a <category name>" for every category, confidence =
  softmax of the cosines scaled by ``ZERO_SHOT_SCALE``.

Plain reads: nothing here writes. The admin endpoint and the change-page warning call these.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from django.conf import settings
from django.db.models import F

from catalog.models import Category, Product, ProductImage

from . import runtime
from .encoder import ImageDecodeError, l2_normalize, load_image
from .engine.columns import Filter
from .models import ImageEmbedding

DUPLICATE_LIMIT = 5  # products listed in a near-duplicate warning
MIN_VOTERS = 3  # categorised neighbours needed for a neighbour vote; fewer: zero-shot
ZERO_SHOT_SCALE = 100.0  # CLIP's logit scale: turns cosines into a softmax confidence
ZERO_SHOT_PROMPT = "a photo of a {}"

Choice = TypeVar("Choice", int, str)  # what a vote chooses: a category id, an attribute value


class UploadAssistError(ValueError):
    """The upload cannot be checked (not a readable image, too many pixels): a message for
    staff."""


@dataclass(frozen=True)
class Duplicate:
    product_id: int
    image_id: int  # the other product's image that matched
    score: float  # cosine, in [-1, 1]


@dataclass(frozen=True)
class CategorySuggestion:
    category_id: int
    name: str
    confidence: float  # 0..1: the winner's share of the vote (or its zero-shot probability)
    method: str  # "neighbours" or "zero-shot"
    voters: int  # neighbours that voted (0 for zero-shot)


def duplicate_threshold() -> float:
    return float(settings.EMBEDDINGS_DUPLICATE_THRESHOLD)


def upload_vector(*, data: bytes) -> np.ndarray:
    """The serving model's unit vector (float32) of an uploaded image's bytes.

    Raises UploadAssistError when the bytes are not a readable image or have too many pixels.
    """
    encoder = runtime.get_encoder()
    try:
        picture = load_image(
            data,
            max_pixels=settings.MAX_IMAGE_PIXELS,
            min_side=encoder.decode_side,
            max_decode_pixels=settings.EMBEDDINGS_QUERY_MAX_PIXELS,
        )
    except ImageDecodeError as exc:
        raise UploadAssistError(str(exc)) from exc
    return encoder.encode_images([picture])[0]


def _exclude(product_id: int | None) -> Filter:
    return Filter(exclude_product_ids=frozenset({product_id}) if product_id else frozenset())


def near_duplicates(
    *,
    vector: np.ndarray,
    exclude_product_id: int | None = None,
    threshold: float | None = None,
    limit: int = DUPLICATE_LIMIT,
) -> list[Duplicate]:
    """Products (other than ``exclude_product_id``) whose best image scores >= ``threshold``
    (default EMBEDDINGS_DUPLICATE_THRESHOLD) against the unit ``vector``, best first."""
    threshold = duplicate_threshold() if threshold is None else threshold
    hits = runtime.get_live_index().search(vector, k=limit, flt=_exclude(exclude_product_id))
    return [Duplicate(h.product_id, h.image_id, h.score) for h in hits if h.score >= threshold]


def _neighbours(vector: np.ndarray, exclude_product_id: int | None, k: int | None) -> list:
    """The ``k`` nearest products as (score, category_id, attributes), best first."""
    k = k or settings.EMBEDDINGS_SUGGEST_NEIGHBOURS
    hits = runtime.get_live_index().search(vector, k=k, flt=_exclude(exclude_product_id))
    rows = {
        pk: (category_id, attributes)
        for pk, category_id, attributes in Product.objects.filter(
            pk__in=[h.product_id for h in hits]
        ).values_list("pk", "category_id", "attributes")
    }
    return [(h.score, *rows[h.product_id]) for h in hits if h.product_id in rows]


def _vote(ballots: list[tuple[float, Choice]]) -> tuple[Choice, float] | None:
    """The choice with the most score-weighted votes (non-negative scores) and its share; None
    below MIN_VOTERS ballots or with no weight. Ties go to the smallest choice (stable)."""
    votes: dict[Choice, float] = defaultdict(float)
    for score, choice in ballots:
        votes[choice] += max(score, 0.0)
    total = sum(votes.values())
    if len(ballots) < MIN_VOTERS or total <= 0:
        return None
    winner = min(votes, key=lambda c: (-votes[c], c))
    return winner, votes[winner] / total


def category_suggest(
    *, vector: np.ndarray, exclude_product_id: int | None = None, k: int | None = None
) -> CategorySuggestion | None:
    """The category the neighbours of ``vector`` vote for (zero-shot against the category
    names when fewer than MIN_VOTERS of them have a category). None when the shop has no
    categories."""
    ballots = [
        (score, category_id)
        for score, category_id, _ in _neighbours(vector, exclude_product_id, k)
        if category_id is not None
    ]
    result = _vote(ballots)
    if result is not None:
        winner, share = result
        name = Category.objects.filter(pk=winner).values_list("name", flat=True).first()
        if name is not None:
            return CategorySuggestion(winner, name, share, "neighbours", len(ballots))
    return _zero_shot(vector)


@dataclass(frozen=True)
class AttributeSuggestion:
    name: str  # an attribute of CATALOG_FACET_ATTRIBUTES
    value: str
    confidence: float  # the value's share of the score-weighted vote
    voters: int


def attributes_suggest(
    *, vector: np.ndarray, exclude_product_id: int | None = None, k: int | None = None
) -> list[AttributeSuggestion]:
    """For each configured attribute (CATALOG_FACET_ATTRIBUTES), the value the neighbours that
    have it vote for; attributes fewer than MIN_VOTERS neighbours have are left out."""
    neighbours = _neighbours(vector, exclude_product_id, k)
    out = []
    for name in settings.CATALOG_FACET_ATTRIBUTES:
        ballots = [
            (score, str(attrs[name]))
            for score, _, attrs in neighbours
            if isinstance(attrs, dict) and attrs.get(name) not in (None, "")
        ]
        result = _vote(ballots)
        if result is not None:
            out.append(AttributeSuggestion(name, str(result[0]), result[1], len(ballots)))
    return out


def _zero_shot(vector: np.ndarray) -> CategorySuggestion | None:
    rows = list(Category.objects.order_by("id").values_list("id", "name"))
    if not rows:
        return None
    texts = runtime.get_encoder().encode_texts([ZERO_SHOT_PROMPT.format(n) for _, n in rows])
    logits = ZERO_SHOT_SCALE * (texts @ np.asarray(vector, dtype=np.float32))
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    best = int(np.argmax(probs))
    return CategorySuggestion(rows[best][0], rows[best][1], float(probs[best]), "zero-shot", 0)


@dataclass(frozen=True)
class ImageDuplicates:
    image_id: int  # this product's image
    duplicates: list[Duplicate]


def product_duplicates(*, product_id: int) -> list[ImageDuplicates]:
    """For each of a product's images with an up-to-date stored vector of the serving model,
    the other products' near-duplicates of it (only images that have some)."""
    model_id = runtime.get_encoder().model_id
    rows = (
        ImageEmbedding.objects.filter(
            image__product_id=product_id,
            model_id=model_id,
            content_hash=F("image__content_hash"),
        )
        .order_by("image__position", "image_id")
        .values_list("image_id", "vector")
    )
    found = []
    for image_id, blob in rows:
        vector = l2_normalize(np.frombuffer(bytes(blob), dtype="<f4").astype(np.float32))
        dups = near_duplicates(vector=vector, exclude_product_id=product_id)
        if dups:
            found.append(ImageDuplicates(image_id, dups))
    return found


def duplicate_products(duplicates: list[Duplicate]) -> dict[int, Product]:
    """The products of ``duplicates`` with their images (for titles, links and thumbnails)."""
    ids = {d.product_id for d in duplicates}
    return {p.pk: p for p in Product.objects.filter(pk__in=ids).prefetch_related("images")}


def duplicate_image(product: Product, image_id: int) -> ProductImage | None:
    return next((i for i in product.images.all() if i.pk == image_id), product.primary_image)
