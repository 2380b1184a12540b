"""Which products and photos ``manage.py evaluate`` scores, read from the model card.

Plain Python (no Django; torch only when :func:`read_card` imports the checkpoint module). Figures are only honest on data the model did not train on,
so the command asks the card which manifests trained the model:

- ``training_config.sources`` / ``data.sources``: catalog manifests (absolute resolved paths),
  the first one primary: train_model holds its validation ids out of *every* source;
- ``training_config.photo_sources``: shopper-photo sets, each with the ``val_fraction`` and
  ``salt`` of the sender split whose photos were kept out of training.

A manifest the card does not list was not trained on and is scored whole.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embeddings.training.data import PHOTO_SPLIT_SALT, PHOTO_VAL_FRACTION

AUTO, VAL, ALL = "auto", "val", "all"


def read_card(pretrained: str | os.PathLike[str] | None) -> dict[str, Any]:
    """The model card beside a checkpoint file, or ``{}`` (a tag, random init, no card)."""
    from embeddings.training.checkpoint import card_path_for

    if not pretrained or not Path(pretrained).is_file():
        return {}
    path = card_path_for(pretrained)
    if not path.is_file():
        return {}
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"Model card {path} is not valid JSON: {exc}.") from exc
    return card if isinstance(card, dict) else {}


def _same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    return Path(a).resolve() == Path(b).resolve()


def training_manifests(card: dict[str, Any]) -> list[tuple[str, str | None]]:
    """(manifest, images_root) of every catalog source the card lists, primary first."""
    out: list[tuple[str, str | None]] = []
    for section in ("training_config", "data"):
        for src in (card.get(section) or {}).get("sources") or []:
            if isinstance(src, dict) and src.get("manifest"):
                if not any(_same_file(src["manifest"], m) for m, _ in out):
                    out.append((str(src["manifest"]), src.get("images_root")))
    return out


@dataclass(frozen=True)
class CatalogSplit:
    """``split`` is what to score; ``role`` is the manifest's part in training: ``primary``
    (its held-out ids are the validation set), ``extra`` (trained on, except the primary's
    held-out ids, read from ``primary``), ``foreign`` (not trained on) or ``unknown`` (no card)."""

    split: str
    role: str
    requested: str
    model: str
    primary: tuple[str, str | None] | None = None

    @property
    def trained_on(self) -> bool:
        return self.role in ("primary", "extra")

    def reason(self, products: int) -> str:
        if self.split == VAL:
            if self.role == "primary":
                return f"the {products} products train_model held out of this manifest"
            if self.role == "extra":
                assert self.primary is not None
                return (
                    f"the {products} products of this manifest whose ids train_model held out of "
                    f"{self.primary[0]}; {self.model} trained on the rest"
                )
            why = (
                f"this manifest was not used to train {self.model}"
                if self.role == "foreign"
                else f"no model card says what {self.model} was trained on"
            )
            return f"--split val: the {products} products of the salted-hash split, as asked; {why}"
        if self.requested == ALL and self.trained_on:
            return f"--split all, as asked: {self.model} was trained on most of these products"
        if self.role == "foreign":
            return f"this manifest was not used to train {self.model}"
        return f"no model card says what {self.model} was trained on"


def choose_catalog_split(
    card: dict[str, Any], manifest: str | os.PathLike[str], requested: str, model: str
) -> CatalogSplit:
    """``auto`` is ``val`` for a manifest the card lists as a training source, else ``all``."""
    model = str(card.get("model_name") or model)
    sources = training_manifests(card)
    role = "unknown" if not sources else "foreign"
    for i, (m, _) in enumerate(sources):
        if _same_file(m, manifest):
            role = "primary" if i == 0 else "extra"
            break
    split = requested
    if requested == AUTO:
        split = VAL if role in ("primary", "extra") else ALL
    primary = sources[0] if role == "extra" else None
    return CatalogSplit(split, role, requested, model, primary)


@dataclass(frozen=True)
class PhotoSenders:
    """``senders``: ``val`` (only the held-out senders' photos) or ``all``; ``trained_on``:
    the card lists this photo set; ``fraction``/``salt`` define the held-out senders."""

    senders: str
    requested: str
    trained_on: bool
    model: str
    fraction: float = PHOTO_VAL_FRACTION
    salt: str = PHOTO_SPLIT_SALT

    def reason(self, photos: int, senders: int) -> str:
        if self.senders == VAL:
            if self.trained_on:
                return f"the {photos} photos of the {senders} senders train_model held out of this photo set"
            return (
                f"--photo-senders val: the {photos} photos of the {senders} held-out senders, as asked; "
                f"this photo set was not used to train {self.model}"
            )
        if self.trained_on:
            return f"--photo-senders all, as asked: {self.model} was trained on the other senders' photos"
        return f"this photo set was not used to train {self.model}"


def choose_photo_senders(
    card: dict[str, Any], photos_manifest: str | os.PathLike[str], requested: str, model: str
) -> PhotoSenders:
    """``auto`` is ``val`` when ``training_config.photo_sources`` lists this photo set."""
    model = str(card.get("model_name") or model)
    for src in (card.get("training_config") or {}).get("photo_sources") or []:
        if (
            isinstance(src, dict)
            and src.get("manifest")
            and _same_file(src["manifest"], photos_manifest)
        ):
            fraction = src.get("val_fraction")
            return PhotoSenders(
                VAL if requested == AUTO else requested,
                requested,
                True,
                model,
                PHOTO_VAL_FRACTION if fraction is None else float(fraction),
                str(src.get("salt") or PHOTO_SPLIT_SALT),
            )
    return PhotoSenders(ALL if requested == AUTO else requested, requested, False, model)
