"""Search-quality helpers the search code calls: lexical BM25 over titles, reciprocal rank
fusion with vector results, and the "no good match" cosine threshold.

Plain Python + NumPy (no Django, no torch). Items are identified by any hashable id; rankings
are sequences of ids, best first.
"""

from __future__ import annotations

import math
import random
import re
import string
from collections import Counter
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

_TOKEN = re.compile(r"[a-z0-9]+")


def tokenize(text: str) -> list[str]:
    """Lower-cased alphanumeric runs: 'Navy-Blue T-Shirt' -> ['navy', 'blue', 't', 'shirt']."""
    return _TOKEN.findall(text.lower())


def stem(token: str) -> str:
    """A light English plural folding so 'Tshirts' finds 'Tshirt', 'watches' 'Watch' and
    'accessories' 'Accessory': -ies -> -y, -(s|x|z|ch|sh)es -> drop 'es', -s -> drop it (not
    -ss, -us, -is). Short tokens and numbers stay as they are.
    """
    if len(token) <= 3 or not token.isalpha():
        return token
    if token.endswith("ies") and len(token) > 4:
        return token[:-3] + "y"
    if token.endswith(("sses", "xes", "zes", "ches", "shes")):
        return token[:-2]
    if token.endswith("s") and not token.endswith(("ss", "us", "is")):
        return token[:-1]
    return token


def terms(text: str) -> list[str]:
    """The words BM25 matches on: :func:`tokenize`, each folded by :func:`stem`."""
    return [stem(t) for t in tokenize(text)]


def substring_for(term: str) -> str:
    """A substring every surface form of ``term`` contains, for a database ``icontains``
    pre-filter: 'accessory' -> 'accessor' (also in 'accessories'); others stay as they are."""
    return term[:-1] if term.endswith("y") and len(term) > 3 else term


class BM25:
    """Okapi BM25 over a fixed list of documents (e.g. product titles).

    ``scores(query)`` returns one score per document (0 for documents sharing no term);
    ``rank(query, k)`` the indices of the best ``k`` documents with a positive score, best first
    (ties broken by document order, so results are deterministic).
    """

    def __init__(self, documents: Sequence[str], k1: float = 1.2, b: float = 0.75) -> None:
        self.k1, self.b = k1, b
        self.docs = [terms(d) for d in documents]
        self.doc_len = np.array([len(d) for d in self.docs], dtype=np.float64)
        self.avgdl = float(self.doc_len.mean()) if len(self.docs) else 0.0
        self.postings: dict[str, list[tuple[int, int]]] = {}
        for i, toks in enumerate(self.docs):
            for term, tf in Counter(toks).items():
                self.postings.setdefault(term, []).append((i, tf))
        n = len(self.docs)
        # The "+1" form of IDF stays positive for terms in more than half the documents.
        self.idf = {
            t: math.log(1 + (n - len(p) + 0.5) / (len(p) + 0.5)) for t, p in self.postings.items()
        }

    def __len__(self) -> int:
        return len(self.docs)

    def scores(self, query: str) -> np.ndarray:
        out = np.zeros(len(self.docs), dtype=np.float64)
        if not self.docs:
            return out
        norm = self.k1 * (1 - self.b + self.b * self.doc_len / max(self.avgdl, 1e-9))
        for term in set(terms(query)):
            postings = self.postings.get(term)
            if not postings:
                continue
            idx = np.fromiter((p[0] for p in postings), dtype=np.int64, count=len(postings))
            tf = np.fromiter((p[1] for p in postings), dtype=np.float64, count=len(postings))
            out[idx] += self.idf[term] * tf * (self.k1 + 1) / (tf + norm[idx])
        return out

    def rank(self, query: str, k: int = 100) -> list[int]:
        s = self.scores(query)
        positive = np.flatnonzero(s > 0)
        order = positive[np.argsort(-s[positive], kind="stable")]
        return order[:k].tolist()


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
