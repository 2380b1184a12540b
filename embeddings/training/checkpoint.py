"""Writing a trained model: weights, config sidecar and model card.

Contract: ``<output>.pt`` holds the model's complete ``state_dict`` (so open_clip's strict
loading accepts it; floating tensors optionally stored as fp16 to halve the file), ``<output>.pt.json``
holds ``{"model_name": ..., "model_cfg": {...}}`` (what ``ClipEncoder`` registers before loading),
and the card is a JSON document describing data, split, command, metrics and cost.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from embeddings.encoder import config_path_for_checkpoint


def _atomic_write_bytes(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; these files are shared, read-only data
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(
    model: torch.nn.Module,
    path: str | os.PathLike[str],
    model_name: str,
    model_cfg: dict[str, Any],
    *,
    half: bool = True,
) -> Path:
    """Writes the weights and the ``<path>.json`` sidecar atomically; returns the weights path."""
    path = Path(path)
    state = {}
    for key, value in model.state_dict().items():
        value = value.detach().cpu()
        # logit_scale is kept in fp32: it is one number and exp() of it amplifies rounding.
        if half and value.is_floating_point() and key != "logit_scale":
            value = value.half()
        state[key] = value.clone()
    _atomic_write_bytes(path, lambda fh: torch.save(state, fh))
    sidecar = config_path_for_checkpoint(path)
    payload = json.dumps({"model_name": model_name, "model_cfg": model_cfg}, indent=2).encode()
    _atomic_write_bytes(sidecar, lambda fh: fh.write(payload))
    return path


def card_path_for(checkpoint: str | os.PathLike[str]) -> Path:
    """``X.pt`` -> ``X.card.json`` (the name ``register_builtin_configs`` skips)."""
    p = Path(checkpoint)
    return p.with_name(p.stem + ".card.json")


def write_card(path: str | os.PathLike[str], card: dict[str, Any]) -> Path:
    """Writes (or replaces) a model card JSON; values must be JSON-serialisable."""
    path = Path(path)
    payload = (json.dumps(card, indent=2, sort_keys=False) + "\n").encode()
    _atomic_write_bytes(path, lambda fh: fh.write(payload))
    return path


def update_card(path: str | os.PathLike[str], **fields: Any) -> dict[str, Any]:
    """Merges ``fields`` into an existing card (creating it if absent) and returns it."""
    path = Path(path)
    card: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    card.update(fields)
    write_card(path, card)
    return card
