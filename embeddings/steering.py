"""Steerable queries: a query made of weighted parts (texts and images), some of them negative.

Plain Python + NumPy (no Django, no torch), so the rule is testable on its own.

The rule: each part i is a unit vector v_i (a text or an image, encoded by the same model) with a
weight w_i in [-1, 1]; the query is the normalised weighted sum

    q = (sum_i w_i * v_i) / || sum_i w_i * v_i ||

Positive parts pull results towards them, negative parts push away. A part of weight 0 is left
out. At least one part must be positive, and a combination whose length is under
``CANCEL_TOLERANCE`` times the sum of the positive weights (the parts cancel out, e.g. "red"
with "not red") is refused: its direction would be noise. With one text and one image of
weights 1 - a and a, a = 0.5 is the plain "photo + words" mean.

Shoppers' syntax: ``-word`` or ``-"two words"`` in a query box marks a negative term (as in web
search); ``split_negatives`` takes them out of the text.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

MIN_WEIGHT, MAX_WEIGHT = -1.0, 1.0
CANCEL_TOLERANCE = 1e-3
MAX_PARTS = 8
DEFAULT_IMAGE_WEIGHT = 0.5

# -word or -"a phrase", at the start of the text or after whitespace (so "t-shirt" is one word).
_NEGATIVE = re.compile(r'(?:(?<=\s)|^)-(?:"([^"]*)"|([^\s"]+))')


class SteeringError(ValueError):
    """A combination of parts that cannot be searched; the message says what to change."""


@dataclass(frozen=True)
class Part:
    """One part of a query: a unit vector, its weight, and the words it came from (None for an
    image)."""

    vector: np.ndarray
    weight: float
    text: str | None = None

    @property
    def is_image(self) -> bool:
        return self.text is None


def check_weight(weight: float, *, what: str = "A weight") -> float:
    weight = float(weight)
    if not np.isfinite(weight) or not MIN_WEIGHT <= weight <= MAX_WEIGHT:
        raise SteeringError(f"{what} must be between {MIN_WEIGHT:g} and {MAX_WEIGHT:g}.")
    return weight


def combine(parts: Sequence[Part]) -> np.ndarray:
    """The query's unit vector (float32) by the rule in the module docstring."""
    used = [p for p in parts if p.weight != 0]
    for p in used:
        check_weight(p.weight)
    positive = sum(p.weight for p in used if p.weight > 0)
    if positive <= 0:
        raise SteeringError(
            "Say what you are looking for: a query needs at least one part with a positive "
            "weight, not only things to leave out."
        )
    total = np.zeros_like(np.asarray(used[0].vector, dtype=np.float64))
    for p in used:
        total += p.weight * np.asarray(p.vector, dtype=np.float64)
    norm = float(np.linalg.norm(total))
    if norm < CANCEL_TOLERANCE * positive:
        raise SteeringError(
            "The parts of this query cancel each other out (what to find and what to leave out "
            "are the same); change a weight or a term."
        )
    return (total / norm).astype(np.float32)


def photo_and_words(image_weight: float) -> tuple[float, float]:
    """(image weight, text weight) for a photo + words query: a and 1 - a, a in [0, 1]."""
    a = float(image_weight)
    if not np.isfinite(a) or not 0.0 <= a <= 1.0:
        raise SteeringError("The photo weight must be between 0 (words only) and 1 (photo only).")
    return a, 1.0 - a


def not_weights(count: int, strength: float) -> list[float]:
    """Weights of ``count`` negative terms that weigh ``strength`` (0..1) together."""
    s = float(strength)
    if not np.isfinite(s) or not 0.0 <= s <= 1.0:
        raise SteeringError("The strength of the terms to leave out must be between 0 and 1.")
    return [-s / count] * count if count else []


def word_share(parts: Sequence[Part]) -> float:
    """The texts' share of the positive weight (0..1): how much the word side should count."""
    positive = [p for p in parts if p.weight > 0]
    total = sum(p.weight for p in positive)
    return sum(p.weight for p in positive if not p.is_image) / total if total else 0.0


def split_negatives(text: str) -> tuple[str, list[str]]:
    """``'striped shirt -red -"light blue"'`` -> ``('striped shirt', ['red', 'light blue'])``.

    A lone ``-`` or an empty ``-""`` is dropped; duplicates are kept once, in order."""
    negatives: list[str] = []
    for quoted, word in _NEGATIVE.findall(text or ""):
        term = " ".join((quoted or word).split())
        if term and term.lower() not in (n.lower() for n in negatives):
            negatives.append(term)
    positive = _NEGATIVE.sub(" ", text or "")
    positive = " ".join(w for w in positive.split() if w != "-")
    return positive, negatives


def join_negatives(text: str, negatives: Sequence[str]) -> str:
    """The inverse of ``split_negatives``: the query box text for ``text`` minus ``negatives``."""
    terms = [f'-"{n}"' if " " in n else f"-{n}" for n in negatives]
    return " ".join([t for t in [text] if t] + terms)
