"""Business ranking signals: relevance modified by a product's boost, popularity, newness and
stock.

    score = (relevance + sum of w * x over the "add" modifiers)
            * product of (1 + w * x) over the "multiply" modifiers

``relevance`` is the cosine similarity (vector search) or, with hybrid search, the fused
reciprocal-rank score divided by its largest possible value (so it also lies in 0..1). ``x`` is
the product's value of the modifier's field:

    boost         the staff-set boost (Product.boost)
    popularity    log(1 + search clicks over the last RANK_POPULARITY_DAYS)
    newness       0.5 ** (age in days / RANK_NEWNESS_HALF_LIFE_DAYS): 1 when new, 0 if unknown
    in_stock      1 unless the shop tracks the product's stock and it is 0 (then 0)
    out_of_stock  1 - in_stock

Plain Python + NumPy: the signals come from the engine's columns, never from the database.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

FIELDS = ("boost", "popularity", "newness", "in_stock", "out_of_stock")
OPS = ("add", "multiply")
MAX_MODIFIERS = 8
MAX_WEIGHT = 10.0
DAY_S = 86400.0


class ModifierError(ValueError):
    """A modifier that cannot be applied as given; the message says what to change."""


@dataclass(frozen=True)
class Modifier:
    field: str
    op: str
    weight: float


def modifiers_parse(raw) -> tuple[Modifier, ...]:
    """A request's ``modifiers`` (a list of {"field", "op", "weight"} objects) -> Modifiers.
    Raises ModifierError naming the first problem."""
    if not isinstance(raw, list | tuple):
        raise ModifierError('modifiers must be a list of {"field", "op", "weight"} objects.')
    if len(raw) > MAX_MODIFIERS:
        raise ModifierError(f"At most {MAX_MODIFIERS} modifiers, got {len(raw)}.")
    out = []
    for n, item in enumerate(raw, start=1):
        if not isinstance(item, Mapping):
            raise ModifierError(f'Modifier {n} must be an object {{"field", "op", "weight"}}.')
        unknown = set(item) - {"field", "op", "weight"}
        if unknown:
            raise ModifierError(f"Modifier {n} has unknown keys: {', '.join(sorted(unknown))}.")
        field, op, weight = item.get("field"), item.get("op", "add"), item.get("weight")
        if field not in FIELDS:
            raise ModifierError(f"Modifier {n}: field must be one of {', '.join(FIELDS)}.")
        if op not in OPS:
            raise ModifierError(f"Modifier {n}: op must be one of {', '.join(OPS)}.")
        if isinstance(weight, bool) or not isinstance(weight, int | float | str):
            raise ModifierError(f"Modifier {n}: weight must be a number.")
        try:
            weight = float(weight)
        except ValueError:
            raise ModifierError(f"Modifier {n}: weight must be a number.") from None
        if not math.isfinite(weight) or abs(weight) > MAX_WEIGHT:
            raise ModifierError(
                f"Modifier {n}: weight must be between -{MAX_WEIGHT} and {MAX_WEIGHT}."
            )
        out.append(Modifier(field, op, weight))
    return tuple(out)


def shop_modifiers(
    *, boost: float, newness: float, popularity: float, out_of_stock_penalty: float
) -> tuple[Modifier, ...]:
    """The shop-wide defaults (RANK_* settings) as "add" modifiers; zero weights are left out."""
    pairs = [
        ("boost", boost),
        ("newness", newness),
        ("popularity", popularity),
        ("out_of_stock", -out_of_stock_penalty),
    ]
    return tuple(Modifier(field, "add", w) for field, w in pairs if w)


def signal_values(
    field: str, signals: Mapping[str, np.ndarray], *, now: float, half_life_days: float
) -> np.ndarray:
    """The per-product value ``x`` of ``field`` (see the module docstring), float64."""
    if field == "boost":
        return np.asarray(signals["boost"], np.float64)
    if field == "popularity":
        return np.asarray(signals["popularity"], np.float64)
    if field == "newness":
        age_days = np.maximum(0.0, now - np.asarray(signals["created"], np.float64)) / DAY_S
        values = np.power(0.5, age_days / max(half_life_days, 1e-9))
        return np.nan_to_num(values, nan=0.0)
    in_stock = (np.asarray(signals["stock"]) != 0).astype(np.float64)
    return in_stock if field == "in_stock" else 1.0 - in_stock


def modified_scores(
    relevance: np.ndarray,
    signals: Mapping[str, np.ndarray],
    modifiers: tuple[Modifier, ...],
    *,
    now: float,
    half_life_days: float,
) -> np.ndarray:
    """The final scores of candidates with ``relevance`` and ``signals`` (aligned arrays)."""
    score = np.asarray(relevance, np.float64).copy()
    factor = np.ones_like(score)
    for m in modifiers:
        x = signal_values(m.field, signals, now=now, half_life_days=half_life_days)
        if m.op == "add":
            score += m.weight * x
        else:
            factor *= 1.0 + m.weight * x
    return score * factor


def reranked(
    pids: list[int],
    relevance: np.ndarray,
    signals: Mapping[str, np.ndarray],
    modifiers: tuple[Modifier, ...],
    *,
    now: float,
    half_life_days: float,
) -> list[int]:
    """``pids`` (best first by relevance) in the order of their modified scores; ties keep the
    relevance order, so no modifiers (or all-zero weights) change nothing."""
    if not modifiers or not pids:
        return list(pids)
    final = modified_scores(relevance, signals, modifiers, now=now, half_life_days=half_life_days)
    order = sorted(range(len(pids)), key=lambda n: (-final[n], n))
    return [pids[n] for n in order]
