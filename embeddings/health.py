"""Index health: the figures behind the admin's index health page and ``manage.py index_status``.

One function, ``index_health()``, gathers them so the page and the command never disagree:

* from the database, with a few aggregate queries (never a loop over rows): images by index
  status, how old the oldest pending image is and how many are past the reconcile's grace
  period, the change log's sequence, the vectors stored for the serving model;
* from this process: the model in use and its model card, and this process's view of the index
  (kind, size, the sequence it has applied, the delta since its base, the base snapshot). Those
  are the figures of the process that calls it: a web page shows its own web worker's.

A model that cannot load or an index that cannot open is reported in ``model_error`` /
``index_error`` with the database figures still filled in; it never raises.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db.models import Max

from . import reconcile, runtime, selectors
from .encoder import ModelLoadError
from .engine.changes import pruned_through
from .engine.fulltext import FullText
from .models import ImageEmbedding, IndexChange

log = logging.getLogger(__name__)

# Model card facts shown as they are (key, label); absent keys are left out.
CARD_FACTS = [
    ("model_name", "name"),
    ("parameters", "parameters"),
    ("embedding_dim", "embedding size"),
    ("image_size", "image size (px)"),
    ("weights_dtype", "weights"),
    ("checkpoint_bytes", "checkpoint bytes"),
    ("total_training_minutes", "training minutes"),
    ("min_score", "text match threshold (min_score)"),
]
# Counts that sit beside the metrics in a card's evaluation, not quality figures.
_NOT_METRICS = {"items", "text_queries", "zero_shot_classes"}


def model_card_figures(card: dict[str, Any]) -> dict[str, Any]:
    """The parts of a model card a person checks at a glance: a few facts, and the quality
    metrics measured on held-out products, each with its target when the card states one.

    Metrics come from ``evaluation.metrics.model`` (``manage.py evaluate --update-card``), else
    from the last in-training ``validation_metrics``."""
    facts = [
        {"key": key, "label": label, "value": card[key]} for key, label in CARD_FACTS if key in card
    ]
    evaluation = card.get("evaluation") if isinstance(card.get("evaluation"), dict) else {}
    measured = (evaluation.get("metrics") or {}).get("model")
    source = "evaluation" if isinstance(measured, dict) else "validation"
    if source == "validation":
        measured = card.get("validation_metrics") or {}
    targets = card.get("targets") if isinstance(card.get("targets"), dict) else {}
    metrics = []
    for name, value in measured.items():
        if name in _NOT_METRICS or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        target = targets.get(name) if isinstance(targets.get(name), dict) else {}
        metrics.append(
            {
                "name": name,
                "value": round(float(value), 4),
                "target": target.get("target"),
                "met": target.get("met"),
            }
        )
    held_out = evaluation.get("products") or measured.get("items")
    return {"facts": facts, "metrics": metrics, "source": source, "held_out_products": held_out}


def _error_text(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, ModelLoadError) else f"{type(exc).__name__}: {exc}"


def _fulltext_state(db_seq: int) -> dict[str, Any]:
    # Read from the machine's word index folder (two small files), without opening it: opening
    # could build it from the database or take the writer role, neither cheap nor wanted here.
    status = FullText(Path(settings.EMBEDDINGS_INDEX_DIR) / "fulltext").status()
    seq = status["seq"]
    return {
        "enabled": bool(settings.EMBEDDINGS_HYBRID),
        "path": status["path"],
        "seq": seq,
        "lag": max(db_seq - seq, 0) if seq is not None else None,
    }


def index_health(*, now: datetime | None = None) -> dict[str, Any]:
    """Every figure of the index's health as one JSON-ready dict (see the module docstring).

    Keys: ``images`` (pending / indexed / failed counts), ``freshness`` (see
    ``reconcile.Freshness.as_dict``), ``db_seq``, ``change_log_pruned_through``, ``pid``,
    ``device``, ``model_id``, ``dim``, ``model_card`` (``model_card_figures``),
    ``vectors_of_this_model``, ``index_size``, ``index_kind``, ``index_delta``, ``index_seq``,
    ``index_lag``, ``snapshot`` (base folder path), ``snapshot_name``, ``snapshot_age_s``,
    ``fulltext``, ``model_error``, ``index_error``. Figures that need the model (or the index)
    are None when it could not be loaded; the error says why."""
    pruned = pruned_through()
    db_seq = max(IndexChange.objects.aggregate(m=Max("id"))["m"] or 0, pruned)
    info: dict[str, Any] = {
        "images": selectors.index_status_counts(),
        "freshness": reconcile.index_freshness(now=now).as_dict(),
        "db_seq": db_seq,
        "change_log_pruned_through": pruned,
        "pid": os.getpid(),
        "device": settings.EMBEDDINGS_DEVICE,
        "model_id": None,
        "dim": None,
        "model_card": model_card_figures({}),
        "vectors_of_this_model": None,
        "index_size": None,
        "index_kind": None,
        "index_delta": None,
        "index_seq": None,
        "index_lag": None,
        "snapshot": None,
        "snapshot_name": None,
        "snapshot_age_s": None,
        "fulltext": _fulltext_state(db_seq),
        "model_error": None,
        "index_error": None,
    }
    try:
        encoder = runtime.get_encoder()
        info["model_id"] = encoder.model_id
        info["dim"] = encoder.dim  # loads the model: a broken checkpoint shows here
        info["model_card"] = model_card_figures(runtime.model_card(encoder))
    except Exception as exc:  # noqa: BLE001 - the page reports any load failure, never a 500
        if not isinstance(exc, ModelLoadError):
            log.exception("index health: the model could not be loaded")
        info["model_error"] = _error_text(exc)
        return info
    info["vectors_of_this_model"] = ImageEmbedding.objects.filter(model_id=info["model_id"]).count()
    try:
        live = runtime.get_live_index()
    except Exception as exc:  # noqa: BLE001 - same: shown on the page
        log.exception("index health: the index could not be opened")
        info["index_error"] = _error_text(exc)
        return info
    base_age = live.base_age()
    info.update(
        index_size=len(live),
        index_kind=live.params.kind,
        index_delta=live.delta_size(),
        index_seq=live.seq,
        index_lag=max(db_seq - live.seq, 0),
        snapshot=str(live.base_path) if live.base_path else None,
        snapshot_name=live.base_path.name if live.base_path else None,
        snapshot_age_s=round(base_age, 1) if base_age != float("inf") else None,
    )
    if live.damaged:
        info["index_error"] = f"the index base was found damaged while serving: {live.damaged}"
    return info


def describe_age(seconds: float | None) -> str:
    """``95`` -> ``"1 min 35 s"``; a person reads ages, not second counts."""
    if seconds is None:
        return "-"
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    minutes, s = divmod(s, 60)
    if minutes < 60:
        return f"{minutes} min {s} s" if s else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"
