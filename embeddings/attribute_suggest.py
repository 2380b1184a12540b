"""Zero-shot attribute suggestions (issue 11, item 1, step 5): the model reads a product's
attribute (colour, pattern, type, ...) off its photos, for shops whose import has no such column.

For each product with an indexed image, its image vector (the mean of its images' stored
``ImageEmbedding`` vectors for the serving model, re-normalised) is scored against the text
vectors of ``"a photo of a <value> <noun>"`` for every candidate value, the noun being the
product's category name (lower-cased) or "product"; the best-scoring value is the suggestion.
Candidate values are the ones the catalog already uses for that attribute, or a list given by
the caller (a shop's own vocabulary).

Products that already have the attribute measure the method: accuracy of the suggestion against
the shop's value, beside the majority-class baseline (always guessing the most common value).
``attributes_apply_missing`` then writes suggestions only to products that lack the attribute;
a value staff set is never overwritten.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import asdict, dataclass

import numpy as np

from catalog import services as catalog_services
from catalog.models import Product

from . import runtime
from .encoder import l2_normalize
from .models import ImageEmbedding

PROMPT = "a photo of a {value} {noun}"
DEFAULT_NOUN = "product"


class AttributeSuggestError(ValueError):
    """The suggestion cannot be made as asked (no candidate values): a message for the user."""


@dataclass(frozen=True)
class Suggestion:
    product_id: int
    attribute: str
    value: str  # the best-scoring candidate
    score: float  # its cosine against the product's image vector
    current: str | None  # the product's own value, None when it lacks the attribute


@dataclass(frozen=True)
class AttributeReport:
    attribute: str
    values: list[str]  # the candidates scored
    n: int  # products with an indexed image and a value of their own: what accuracy is over
    correct: int
    accuracy: float | None  # correct / n; None when n == 0
    majority_value: str | None  # the most common of those products' own values
    majority_baseline: float | None  # its share of n: the accuracy of always guessing it
    missing: int  # products with an indexed image that lack the attribute (would be filled)

    def as_dict(self) -> dict:
        return asdict(self)


def product_vectors(*, model_id: str, limit: int | None = None) -> dict[int, np.ndarray]:
    """{product id: unit float32 vector}: the mean of the product's images' vectors under
    ``model_id``, re-normalised; products without one are absent. ``limit`` keeps the first N
    products by id."""
    rows = (
        ImageEmbedding.objects.filter(model_id=model_id)
        .order_by("image__product_id", "image_id")
        .values_list("image__product_id", "vector")
    )
    sums: dict[int, np.ndarray] = {}
    for product_id, blob in rows.iterator(chunk_size=2000):
        if product_id not in sums:
            if limit is not None and len(sums) >= limit:
                break
            sums[product_id] = np.zeros(0, dtype=np.float32)
        vector = np.frombuffer(bytes(blob), dtype="<f4").astype(np.float32)
        sums[product_id] = vector if sums[product_id].size == 0 else sums[product_id] + vector
    return {pid: l2_normalize(v[None, :])[0] for pid, v in sums.items()}


def catalog_values(*, attribute: str) -> list[str]:
    """The values products already have for ``attribute``, sorted."""
    values = {
        str(attrs[attribute])
        for attrs in Product.objects.values_list("attributes", flat=True)
        if isinstance(attrs, dict) and attrs.get(attribute) not in (None, "")
    }
    return sorted(values)


def attribute_suggest(
    *,
    attribute: str,
    values: list[str] | None = None,
    vectors: dict[int, np.ndarray] | None = None,
    limit: int | None = None,
) -> list[Suggestion]:
    """One suggestion per product with an indexed image (``vectors``, default: the serving
    model's ``product_vectors``), in product id order. ``values`` default to the catalog's own.
    Raises AttributeSuggestError when there are fewer than two candidate values."""
    values = (
        sorted(dict.fromkeys(v.strip().lower() for v in values if v.strip()))
        if values
        else (catalog_values(attribute=attribute))
    )
    if len(values) < 2:
        raise AttributeSuggestError(
            f"Attribute {attribute!r} has {len(values)} known value(s) {values}: at least two are "
            "needed to choose between (import the attribute for some products, or give the values)."
        )
    encoder = runtime.get_encoder()
    if vectors is None:
        vectors = product_vectors(model_id=encoder.model_id, limit=limit)
    products = Product.objects.filter(id__in=list(vectors)).values_list(
        "id", "attributes", "category__name"
    )
    by_noun: dict[str, list[tuple[int, str | None]]] = defaultdict(list)
    for product_id, attrs, category in products:
        current = attrs.get(attribute) if isinstance(attrs, dict) else None
        noun = (category or DEFAULT_NOUN).strip().lower() or DEFAULT_NOUN
        by_noun[noun].append((product_id, str(current) if current not in (None, "") else None))

    out: list[Suggestion] = []
    for noun, members in by_noun.items():
        texts = encoder.encode_texts([PROMPT.format(value=v, noun=noun) for v in values])
        images = np.stack([vectors[pid] for pid, _ in members]).astype(np.float32)
        scores = images @ np.asarray(texts, dtype=np.float32).T  # (products, values)
        best = scores.argmax(axis=1)
        for (product_id, current), b, row in zip(members, best, scores, strict=True):
            out.append(Suggestion(product_id, attribute, values[b], float(row[b]), current))
    out.sort(key=lambda s: s.product_id)
    return out


def suggestions_report(
    *, attribute: str, values: list[str], suggestions: list[Suggestion]
) -> AttributeReport:
    """Accuracy of ``suggestions`` against the products' own values, and the majority baseline."""
    known = [s for s in suggestions if s.current is not None]
    n = len(known)
    correct = sum(s.value == s.current for s in known)
    majority = Counter(s.current for s in known).most_common(1)
    return AttributeReport(
        attribute=attribute,
        values=list(values),
        n=n,
        correct=correct,
        accuracy=correct / n if n else None,
        majority_value=majority[0][0] if majority else None,
        majority_baseline=majority[0][1] / n if majority else None,
        missing=len(suggestions) - n,
    )


def attributes_apply_missing(*, suggestions: list[Suggestion]) -> int:
    """Writes each suggestion to its product when the product (read again now) still lacks the
    attribute; returns how many were written. A second run writes nothing."""
    written = 0
    for s in suggestions:
        if s.current is not None:
            continue
        product = Product.objects.filter(id=s.product_id).first()
        if product is None:
            continue
        attrs = dict(product.attributes or {})
        if attrs.get(s.attribute) not in (None, ""):
            continue  # staff (or an import) set it meanwhile: theirs wins
        attrs[s.attribute] = s.value
        catalog_services.product_update(product=product, attributes=attrs)
        written += 1
    return written
