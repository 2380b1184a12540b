"""Retrieval metrics for catalog search: plain NumPy maths on embeddings and rankings.

No Django, no torch. Embeddings are L2-normalised float32 rows (cosine = inner product).
Conventions shared by every function here:

- a *ranking* is a sequence of item indices, best first;
- precision@k divides by ``k`` (a query with fewer than ``k`` relevant items cannot reach 1.0;
  :func:`precision_ceiling` gives the best achievable value);
- recall@k / MRR are for queries with exactly one target item.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# -- ranking metrics ----------------------------------------------------------------------------


def precision_at_k(
    rankings: Sequence[Sequence[int]], relevant: Sequence[set[int]], k: int = 10
) -> float:
    """Mean over queries of |top-k ∩ relevant| / k. Rankings shorter than k count as misses."""
    if len(rankings) != len(relevant):
        raise ValueError(f"{len(rankings)} rankings but {len(relevant)} relevance sets")
    if not rankings:
        return float("nan")
    hits = [
        sum(1 for i in list(r)[:k] if i in rel) for r, rel in zip(rankings, relevant, strict=True)
    ]
    return float(np.mean(hits) / k)


def precision_ceiling(relevant_counts: Sequence[int], k: int = 10) -> float:
    """Best achievable precision@k: mean of min(k, #relevant) / k."""
    if not relevant_counts:
        return float("nan")
    return float(np.mean([min(k, c) / k for c in relevant_counts]))


def recall_at_k(rankings: Sequence[Sequence[int]], targets: Sequence[int], k: int) -> float:
    """Fraction of queries whose single target is in the top ``k``."""
    if not rankings:
        return float("nan")
    return float(np.mean([t in list(r)[:k] for r, t in zip(rankings, targets, strict=True)]))


def mean_reciprocal_rank(rankings: Sequence[Sequence[int]], targets: Sequence[int]) -> float:
    """Mean of 1/rank of the target (rank 1 = first); a target absent from a ranking adds 0."""
    if not rankings:
        return float("nan")
    total = 0.0
    for r, t in zip(rankings, targets, strict=True):
        r = list(r)
        if t in r:
            total += 1.0 / (r.index(t) + 1)
    return total / len(rankings)


def target_ranks(scores: np.ndarray, targets: Sequence[int]) -> np.ndarray:
    """1-based rank of each row's target column in a (queries, items) score matrix.

    Ties count against the target (pessimistic), so a constant model cannot look good.
    """
    scores = np.asarray(scores)
    t = np.asarray(targets)
    target_scores = scores[np.arange(len(t)), t]
    return (scores >= target_scores[:, None]).sum(axis=1)


def recall_mrr_from_ranks(ranks: np.ndarray, ks: Sequence[int] = (1, 10)) -> dict[str, float]:
    """recall@k for each k and the MRR, from 1-based target ranks."""
    ranks = np.asarray(ranks, dtype=np.float64)
    out = {f"recall@{k}": float(np.mean(ranks <= k)) for k in ks}
    out["mrr"] = float(np.mean(1.0 / ranks))
    return out


def top_k(scores: np.ndarray, k: int, exclude_self: bool = False) -> np.ndarray:
    """Indices of the ``k`` best columns per row, best first (stable on ties).

    With ``exclude_self`` the matrix must be square and column ``i`` is never returned for row
    ``i`` (an image query is not its own result).
    """
    scores = np.array(scores, dtype=np.float64, copy=True)
    if exclude_self:
        np.fill_diagonal(scores, -np.inf)
    k = min(k, scores.shape[1] - (1 if exclude_self else 0))
    order = np.argsort(-scores, axis=1, kind="stable")
    return order[:, :k]


SearchFn = Callable[[np.ndarray, int], Sequence[Sequence[int]]]


def exact_search(items: np.ndarray) -> SearchFn:
    """A search function over ``items`` by exact inner product (what a flat index returns)."""
    items = np.asarray(items, dtype=np.float32)

    def search(queries: np.ndarray, k: int) -> list[list[int]]:
        out: list[list[int]] = []
        for s in range(0, len(queries), 1024):
            out.extend(top_k(np.asarray(queries[s : s + 1024]) @ items.T, k).tolist())
        return out

    return search


def label_precision_at_k(
    embeddings: np.ndarray, labels: Sequence[Hashable], k: int = 10, search: SearchFn | None = None
) -> float:
    """image -> image precision@k: a neighbour is relevant when it has the query's label; the
    query itself is excluded from its results (we ask for k+1 and drop it)."""
    emb = np.asarray(embeddings, dtype=np.float32)
    search = search or exact_search(emb)
    labels_arr = list(labels)
    rankings = search(emb, k + 1)
    hits = []
    for q, ranking in enumerate(rankings):
        nn = [j for j in ranking if j != q][:k]
        hits.append(sum(labels_arr[j] == labels_arr[q] for j in nn))
    return float(np.mean(hits) / k) if hits else float("nan")


def zero_shot_accuracy(
    image_emb: np.ndarray, class_emb: np.ndarray, labels: Sequence[int]
) -> float:
    """Fraction of images whose most similar class embedding is their label (class index)."""
    pred = np.argmax(np.asarray(image_emb) @ np.asarray(class_emb).T, axis=1)
    return float(np.mean(pred == np.asarray(labels)))


# -- query sets from catalog metadata ------------------------------------------------------------


@dataclass(frozen=True)
class PairQuery:
    """A "<colour> <type>" text query and the item indices that match both."""

    text: str
    relevant: frozenset[int]


def colour_type_queries(
    types: Sequence[str],
    colours: Sequence[str],
    min_items: int = 3,
    template: str = "{colour} {type}",
) -> list[PairQuery]:
    """One query per distinct (colour, type) pair with at least ``min_items`` items; items with an
    empty colour or type are never relevant. Sorted by text for stable output."""
    groups: dict[tuple[str, str], set[int]] = defaultdict(set)
    for i, (t, c) in enumerate(zip(types, colours, strict=True)):
        if t and c:
            groups[(c, t)].add(i)
    return sorted(
        (
            PairQuery(template.format(colour=c, type=t), frozenset(items))
            for (c, t), items in groups.items()
            if len(items) >= min_items
        ),
        key=lambda q: q.text,
    )


# -- the full report ------------------------------------------------------------------------------

TextEncoder = Callable[[Sequence[str]], np.ndarray]


def retrieval_report(
    image_emb: np.ndarray,
    titles: Sequence[str],
    types: Sequence[str],
    colours: Sequence[str],
    encode_texts: TextEncoder,
    *,
    k: int = 10,
    zero_shot_template: str = "a photo of {}",
    query_template: str = "{colour} {type}",
    search: SearchFn | None = None,
) -> dict[str, float]:
    """Every headline metric for one model on one set of catalog items.

    ``image_emb[i]`` is the image embedding of item ``i`` with ``titles[i]`` etc.;
    ``encode_texts`` maps strings to L2-normalised embeddings in the same space; ``search``
    returns the top-k item indices for query vectors (default: exact NumPy search; the evaluate
    command passes a VectorIndex). Title MRR uses exact ranks over all items.
    """
    image_emb = np.asarray(image_emb, dtype=np.float32)
    search = search or exact_search(image_emb)
    n = len(image_emb)
    type_labels = list(types)
    pair_labels = [
        f"{t}\x1f{c}" if t and c else f"\x1e{i}"
        for i, (t, c) in enumerate(zip(types, colours, strict=True))
    ]
    report: dict[str, float] = {"items": float(n)}
    report["img2img_type_p@10"] = label_precision_at_k(image_emb, type_labels, k, search)
    report["img2img_type_colour_p@10"] = label_precision_at_k(image_emb, pair_labels, k, search)

    queries = colour_type_queries(types, colours, template=query_template)
    if queries:
        q_emb = encode_texts([q.text for q in queries])
        rankings = search(q_emb, k)
        report["text2img_p@10"] = precision_at_k(rankings, [set(q.relevant) for q in queries], k)
        report["text2img_ceiling"] = precision_ceiling([len(q.relevant) for q in queries], k)
        report["text_queries"] = float(len(queries))

    title_emb = encode_texts(list(titles))
    ranks = np.concatenate(
        [
            target_ranks(title_emb[s : s + 1024] @ image_emb.T, range(s, min(s + 1024, n)))
            for s in range(0, n, 1024)
        ]
    )
    for key, value in recall_mrr_from_ranks(ranks, (1, 10)).items():
        report[f"title_{key}"] = value

    classes = sorted({t for t in types if t})
    if classes:
        class_emb = encode_texts([zero_shot_template.format(c) for c in classes])
        index = {c: i for i, c in enumerate(classes)}
        keep = [i for i, t in enumerate(types) if t]
        report["zero_shot_type_acc"] = zero_shot_accuracy(
            image_emb[keep], class_emb, [index[types[i]] for i in keep]
        )
        report["zero_shot_classes"] = float(len(classes))
    return report


# -- shopper photos against a catalog -------------------------------------------------------------


def photo_report(
    photo_emb: np.ndarray,
    photo_labels: Sequence[str],
    catalog_emb: np.ndarray,
    catalog_types: Sequence[str],
    label_types: Mapping[str, Collection[str]],
    encode_texts: TextEncoder,
    *,
    prompts: Mapping[str, str] | None = None,
    k: int = 10,
    zero_shot_template: str = "a photo of {}",
    catalog_search: SearchFn | None = None,
) -> dict[str, Any]:
    """How well shopper photos find catalog products, each other, and their label's words.

    ``photo_emb[i]`` is the L2-normalised embedding of a photo labelled ``photo_labels[i]``;
    ``catalog_emb[j]`` that of a catalog item of type ``catalog_types[j]``. ``label_types`` maps
    each photo label to the catalog types that answer it (a photo whose label it lacks is
    skipped); ``prompts[label]`` are the words for the label's zero-shot prompt (default: the
    label itself), put into ``zero_shot_template``. ``catalog_search`` returns the top-k catalog
    indices for query vectors (default: exact inner product).

    - ``photo2catalog_p@10``: each photo queries the catalog; relevant = a type of its label.
      ``photo2catalog_ceiling`` is the best achievable value, ``photo2catalog_by_label`` the
      figure per label (with its photo and relevant-catalog-item counts).
    - ``photo2photo_p@10``: each photo whose label has at least 2 photos queries the other
      photos (itself excluded); relevant = the same label.
    - ``photo_zero_shot_acc``: the most similar prompt among every mapped label's is the photo's.
    """
    keep = [i for i, lab in enumerate(photo_labels) if lab in label_types]
    emb = np.asarray(photo_emb, dtype=np.float32)[keep]
    labels = [photo_labels[i] for i in keep]
    report: dict[str, Any] = {"photos": float(len(labels))}
    if not labels:
        return report
    catalog_emb = np.asarray(catalog_emb, dtype=np.float32)
    search = catalog_search or exact_search(catalog_emb)

    items_by_type: dict[str, set[int]] = defaultdict(set)
    for j, t in enumerate(catalog_types):
        items_by_type[t].add(j)
    items_of = {
        lab: set().union(*(items_by_type.get(t, set()) for t in set(types)))
        for lab, types in label_types.items()
    }
    rankings = search(emb, k)
    relevant = [items_of[lab] for lab in labels]
    report["photo2catalog_p@10"] = precision_at_k(rankings, relevant, k)
    report["photo2catalog_ceiling"] = precision_ceiling([len(r) for r in relevant], k)
    by_label: dict[str, dict[str, float]] = {}
    for lab in sorted(set(labels)):
        rows = [q for q, q_lab in enumerate(labels) if q_lab == lab]
        by_label[lab] = {
            "photos": float(len(rows)),
            "catalog_items": float(len(items_of[lab])),
            "p@10": precision_at_k([rankings[q] for q in rows], [items_of[lab]] * len(rows), k),
        }
    report["photo2catalog_by_label"] = by_label

    counts = Counter(labels)
    queries = [q for q, lab in enumerate(labels) if counts[lab] >= 2]
    if queries:
        nn = exact_search(emb)(emb[queries], k + 1)
        hits = [
            sum(labels[j] == labels[q] for j in [j for j in ranking if j != q][:k])
            for q, ranking in zip(queries, nn, strict=True)
        ]
        report["photo2photo_p@10"] = float(np.mean(hits) / k)
        report["photo2photo_ceiling"] = precision_ceiling(
            [counts[labels[q]] - 1 for q in queries], k
        )

    classes = sorted(label_types)
    words = [(prompts or {}).get(c) or c for c in classes]
    class_emb = encode_texts([zero_shot_template.format(w) for w in words])
    index = {c: i for i, c in enumerate(classes)}
    report["photo_zero_shot_acc"] = zero_shot_accuracy(
        emb, class_emb, [index[lab] for lab in labels]
    )
    report["photo_zero_shot_classes"] = float(len(classes))
    return report


HEADLINE = (
    ("img2img_type_p@10", "image->image P@10 (same articleType)"),
    ("img2img_type_colour_p@10", "image->image P@10 (same articleType + baseColour)"),
    ("text2img_p@10", "text->image P@10 ('<colour> <type>' queries)"),
    ("text2img_ceiling", "  ceiling for those queries"),
    ("title_recall@1", "title -> product recall@1"),
    ("title_recall@10", "title -> product recall@10"),
    ("title_mrr", "title -> product MRR"),
    ("zero_shot_type_acc", "zero-shot articleType accuracy"),
    ("photo2catalog_p@10", "shopper photo->catalog P@10 (a type of its label)"),
    ("photo2catalog_ceiling", "  ceiling for those photos"),
    ("photo2photo_p@10", "shopper photo->photo P@10 (same label)"),
    ("photo_zero_shot_acc", "zero-shot shopper-photo label accuracy"),
)


def format_report(columns: Mapping[str, Mapping[str, Any]]) -> str:
    """A fixed-width table: one row per headline metric a column has, one column per model."""
    names = list(columns)
    lines = [f"{'metric':52s}" + "".join(f"{n:>16s}" for n in names)]
    for key, label in HEADLINE:
        if key.startswith("photo") and all(columns[n].get(key) is None for n in names):
            continue  # the shopper-photo rows of a run without --photos
        cells = []
        for n in names:
            v = columns[n].get(key)
            cells.append(f"{v:16.3f}" if v is not None else f"{'-':>16s}")
        lines.append(f"{label:52s}" + "".join(cells))
    return "\n".join(lines)


def count_by(values: Sequence[Hashable]) -> Counter:
    """Counter of values (helper for reports)."""
    return Counter(values)
