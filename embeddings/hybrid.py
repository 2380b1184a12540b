"""Search-quality helpers the search code calls: reciprocal rank fusion of the vector ranking
with the word ranking (words are ranked by the full-text engine, ``engine/fulltext.py``), and
the "no good match" cosine threshold.

Plain Python + NumPy (no Django, no torch). Items are identified by any hashable id; rankings
are sequences of ids, best first.
"""

from __future__ import annotations

import random
import string
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np


def rrf_scores(
    rankings: Sequence[Sequence[Hashable]],
    *,
    k: int = 60,
    weights: Sequence[float] | None = None,
) -> dict[Hashable, float]:
    """id -> sum_i w_i / (k + rank_i(id)) (rank 1-based), as ``rrf_fuse`` ranks by."""
    if weights is None:
        weights = [1.0] * len(rankings)
    if len(weights) != len(rankings):
        raise ValueError(f"{len(weights)} weights for {len(rankings)} rankings")
    scores: dict[Hashable, float] = {}
    for ranking, w in zip(rankings, weights, strict=True):
        for r, item in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + w / (k + r)
    return scores


def rrf_fuse(
    rankings: Sequence[Sequence[Hashable]],
    *,
    k: int = 60,
    weights: Sequence[float] | None = None,
    limit: int | None = None,
) -> list[Hashable]:
    """Reciprocal rank fusion: score(id) = sum_i w_i / (k + rank_i(id)), rank 1-based.

    Ids missing from a ranking get nothing from it. Ties keep the order in which ids are first
    met (first ranking first), so fusing a single ranking returns it unchanged.
    """
    if weights is None:
        weights = [1.0] * len(rankings)
    if len(weights) != len(rankings):
        raise ValueError(f"{len(weights)} weights for {len(rankings)} rankings")
    scores: dict[Hashable, float] = {}
    first_seen: dict[Hashable, int] = {}
    for ranking, w in zip(rankings, weights, strict=True):
        for r, item in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + w / (k + r)
            first_seen.setdefault(item, len(first_seen))
    fused = sorted(scores, key=lambda i: (-scores[i], first_seen[i]))
    return fused[:limit] if limit is not None else fused


def hybrid_rank(
    vector_ranking: Sequence[Hashable],
    lexical_ranking: Sequence[Hashable],
    *,
    k: int = 60,
    lexical_weight: float = 1.0,
    limit: int | None = None,
) -> list[Hashable]:
    """Fuses a vector ranking with a lexical one; an empty lexical ranking (no word matched)
    leaves the vector ranking unchanged."""
    if not lexical_ranking:
        return list(vector_ranking)[:limit] if limit is not None else list(vector_ranking)
    return rrf_fuse(
        [vector_ranking, lexical_ranking], k=k, weights=[1.0, lexical_weight], limit=limit
    )


# -- "no good match" threshold ------------------------------------------------------------------

UNRELATED_QUERIES = (
    "carburettor",
    "quantum physics",
    "tax return form",
    "volcano eruption",
    "differential equations",
    "lawn mower engine",
    "spark plug",
    "mortgage interest rate",
    "photosynthesis",
    "submarine periscope",
    "vacuum cleaner bag",
    "jet engine turbine",
    "cryptocurrency wallet",
    "dental floss",
    "tectonic plates",
    "printer toner cartridge",
    "nuclear reactor",
    "kitchen sink plumbing",
    "algebraic topology",
    "satellite dish",
    "brake pads",
    "thermodynamics lecture",
    "income statement",
    "garden hose nozzle",
    "electric guitar amplifier",
    "hydraulic pump",
    "compiler optimisation",
    "bicycle chain grease",
    "weather forecast",
    "parliament election",
    "lithium battery recycling",
    "refrigerator compressor",
    "astronomy telescope",
    "cement mixer",
    "database migration",
    "pizza recipe",
    "train timetable",
    "insurance claim",
    "laboratory centrifuge",
    "solar panel inverter",
)


def random_string_queries(n: int, seed: int = 0) -> list[str]:
    """``n`` nonsense queries of random lowercase letters (1-3 'words' of 3-10 letters)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = [
            "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(3, 10)))
            for _ in range(rng.randint(1, 3))
        ]
        out.append(" ".join(words))
    return out


@dataclass(frozen=True)
class Threshold:
    """A cut-off on the best cosine score: below it the search says "no good match"."""

    min_score: float
    real_kept: float  # fraction of real queries whose best score is >= min_score
    nonsense_rejected: float  # fraction of nonsense queries whose best score is < min_score


def choose_min_score(
    real_scores: Iterable[float], nonsense_scores: Iterable[float], *, min_real_kept: float = 0.95
) -> Threshold:
    """Picks the threshold that rejects the most nonsense queries while keeping at least
    ``min_real_kept`` of the real ones (missing a real product costs more than showing weak
    results for nonsense). Candidates are the observed scores; ties favour the lower threshold.
    """
    real = np.sort(np.asarray(list(real_scores), dtype=np.float64))
    junk = np.sort(np.asarray(list(nonsense_scores), dtype=np.float64))
    if len(real) == 0 or len(junk) == 0:
        raise ValueError("need at least one real and one nonsense score")
    best: Threshold | None = None
    for t in np.unique(np.concatenate([real, junk])):
        kept = float(np.mean(real >= t))
        if kept < min_real_kept:
            continue
        rejected = float(np.mean(junk < t))
        if best is None or rejected > best.nonsense_rejected:
            best = Threshold(float(t), kept, rejected)
    assert best is not None  # the smallest observed score keeps every real query
    return best


def score_summary(scores: Iterable[float]) -> dict[str, float]:
    """min / percentiles / max of a score distribution, for reports and model cards."""
    s = np.asarray(list(scores), dtype=np.float64)
    if s.size == 0:
        return {}
    return {
        "n": float(s.size),
        "min": float(s.min()),
        "p05": float(np.percentile(s, 5)),
        "p25": float(np.percentile(s, 25)),
        "median": float(np.median(s)),
        "p75": float(np.percentile(s, 75)),
        "p95": float(np.percentile(s, 95)),
        "max": float(s.max()),
    }
