"""Shopper-photo sets and label maps for ``manage.py evaluate --photos``.

Plain Python (no Django, no torch). A *photo set* is a CSV with ``path`` (relative to an images
root) and ``label`` (what the photo shows, in the photo set's own words), optionally
``sender_id`` (who took it) and ``kids``. A *label map* says which catalog types answer each
photo label and which words its zero-shot prompt uses, and which labels carry no judgement
(``Not sure``). Format (JSON)::

    {"description": "free text",
     "labels": {"T-Shirt": {"catalog_types": ["Tshirts"], "prompt": "t-shirt", "note": "why"}},
     "ignore": ["Not sure", {"label": "Body", "reason": "why"}]}

or CSV with columns ``label,catalog_types,prompt`` (``catalog_types`` separated by ``;``) and
optionally ``ignore`` (yes/true/1: the label is ignored, ``catalog_types`` left empty) and
``note``. Errors are :class:`PhotoSetError` with a message saying what to fix.
"""

from __future__ import annotations

import csv
import json
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embeddings.training.data import (
    PHOTO_SPLIT_SALT,
    PHOTO_VAL_FRACTION,
    photo_sender_is_validation,
)

MAP_KEYS = {"description", "labels", "ignore"}
LABEL_KEYS = {"catalog_types", "prompt", "note"}
IGNORE_KEYS = {"label", "reason"}
CSV_COLUMNS = {"label", "catalog_types", "prompt", "ignore", "note"}
TRUE_WORDS = {"1", "true", "yes", "y"}


class PhotoSetError(ValueError):
    """A photo set or label map cannot be used as given; the message says what to fix."""


@dataclass(frozen=True)
class LabelMap:
    """``catalog_types[label]``: the catalog types answering a photo label (never empty);
    ``prompts[label]``: the words of its zero-shot prompt; ``ignore[label]``: why it is skipped."""

    path: str
    catalog_types: dict[str, tuple[str, ...]]
    prompts: dict[str, str]
    ignore: dict[str, str]


@dataclass(frozen=True)
class Photo:
    """One labelled photo. ``image_path`` is absolute; ``sender`` is the sender id, or the
    manifest's ``path`` value when it has none (so it counts as a sender of its own)."""

    image_path: str
    label: str
    sender: str


def load_label_map(path: str | os.PathLike[str]) -> LabelMap:
    """Reads a label map (``.csv`` as CSV, anything else as JSON) and checks its shape."""
    path = Path(path)
    if not path.is_file():
        raise PhotoSetError(
            f"Label map {path} does not exist; pass --label-map with a JSON or CSV file."
        )
    if path.suffix.lower() == ".csv":
        return _label_map_from_csv(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise PhotoSetError(f"Label map {path} is not valid JSON: {exc}.") from exc
    return _label_map_from_json(path, data)


def _label_map_from_json(path: Path, data: Any) -> LabelMap:
    if not isinstance(data, dict):
        raise PhotoSetError(f'Label map {path} must be a JSON object with "labels" (and "ignore").')
    unknown = sorted(set(data) - MAP_KEYS)
    if unknown:
        raise PhotoSetError(
            f"Label map {path} has unknown key(s) {unknown}; allowed: {sorted(MAP_KEYS)}."
        )
    labels = data.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise PhotoSetError(
            f'Label map {path} needs "labels": an object of photo label -> '
            '{"catalog_types": [...], "prompt": "..."}.'
        )
    types: dict[str, tuple[str, ...]] = {}
    prompts: dict[str, str] = {}
    for label, spec in labels.items():
        if not isinstance(spec, dict):
            raise PhotoSetError(
                f'Label map {path}: label {label!r} must map to an object with "catalog_types".'
            )
        bad = sorted(set(spec) - LABEL_KEYS)
        if bad:
            raise PhotoSetError(
                f"Label map {path}: label {label!r} has unknown key(s) {bad}; allowed: {sorted(LABEL_KEYS)}."
            )
        types[label] = _type_list(path, label, spec.get("catalog_types"))
        prompts[label] = _prompt(path, label, spec.get("prompt"))
    ignore_raw = data.get("ignore", [])
    if not isinstance(ignore_raw, list):
        raise PhotoSetError(f'Label map {path}: "ignore" must be a list of labels.')
    ignore: dict[str, str] = {}
    for item in ignore_raw:
        if isinstance(item, str) and item:
            ignore[item] = ""
        elif isinstance(item, dict) and isinstance(item.get("label"), str) and item["label"]:
            bad = sorted(set(item) - IGNORE_KEYS)
            if bad:
                raise PhotoSetError(
                    f"Label map {path}: ignored label {item['label']!r} has unknown key(s) {bad}; "
                    f"allowed: {sorted(IGNORE_KEYS)}."
                )
            ignore[item["label"]] = str(item.get("reason") or "")
        else:
            raise PhotoSetError(
                f'Label map {path}: each "ignore" entry is a label or {{"label": ..., "reason": ...}}; got {item!r}.'
            )
    return _finish(path, types, prompts, ignore)


def _label_map_from_csv(path: Path) -> LabelMap:
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        columns = reader.fieldnames or []
        unknown = sorted(set(columns) - CSV_COLUMNS)
        if unknown:
            raise PhotoSetError(
                f"Label map {path} has unknown column(s) {unknown}; allowed: {sorted(CSV_COLUMNS)}."
            )
        if "label" not in columns or "catalog_types" not in columns:
            raise PhotoSetError(
                f"Label map {path} needs columns label,catalog_types (and optionally prompt, ignore, note); it has {columns}."
            )
        types: dict[str, tuple[str, ...]] = {}
        prompts: dict[str, str] = {}
        ignore: dict[str, str] = {}
        for line, row in enumerate(reader, start=2):
            label = (row.get("label") or "").strip()
            if not label:
                raise PhotoSetError(f"Label map {path} line {line}: empty label.")
            if label in types or label in ignore:
                raise PhotoSetError(f"Label map {path} line {line}: label {label!r} appears twice.")
            raw_types = [t.strip() for t in (row.get("catalog_types") or "").split(";")]
            if (row.get("ignore") or "").strip().lower() in TRUE_WORDS:
                if any(raw_types):
                    raise PhotoSetError(
                        f"Label map {path} line {line}: label {label!r} is ignored but lists catalog types; keep one."
                    )
                ignore[label] = (row.get("note") or "").strip()
                continue
            types[label] = _type_list(path, label, [t for t in raw_types if t])
            prompts[label] = _prompt(path, label, (row.get("prompt") or "").strip() or None)
    if not types:
        raise PhotoSetError(f"Label map {path} maps no label to catalog types.")
    return _finish(path, types, prompts, ignore)


def _type_list(path: Path, label: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(t, str) and t.strip() for t in value):
        raise PhotoSetError(
            f"Label map {path}: label {label!r} needs catalog_types, a list of catalog type names."
        )
    if not value:
        raise PhotoSetError(
            f"Label map {path}: label {label!r} has an empty catalog_types list; name the catalog "
            "types that answer it, or move it to ignore."
        )
    return tuple(dict.fromkeys(t.strip() for t in value))


def _prompt(path: Path, label: str, value: Any) -> str:
    if value is None:
        return label
    if not isinstance(value, str) or not value.strip():
        raise PhotoSetError(f"Label map {path}: label {label!r} has an empty or non-text prompt.")
    return value.strip()


def _finish(
    path: Path, types: dict[str, tuple[str, ...]], prompts: dict[str, str], ignore: dict[str, str]
) -> LabelMap:
    both = sorted(set(types) & set(ignore))
    if both:
        raise PhotoSetError(f"Label map {path} both maps and ignores {both}; keep one.")
    return LabelMap(str(path), types, prompts, ignore)


def read_photo_manifest(
    manifest: str | os.PathLike[str], images_root: str | os.PathLike[str] | None = None
) -> list[Photo]:
    """Reads a photo set CSV (``path``, ``label``; optionally ``sender_id``) into photos with
    absolute paths; ``images_root`` defaults to the manifest's folder. Rows with an empty path or
    label are skipped; missing image files raise PhotoSetError with a count and examples."""
    manifest = Path(manifest)
    if not manifest.is_file():
        raise PhotoSetError(f"Photo set {manifest} does not exist; pass --photos with a CSV file.")
    root = Path(images_root) if images_root else manifest.parent
    if not root.is_dir():
        raise PhotoSetError(f"Photos root {root} is not a folder; pass --photos-root DIR.")
    photos: list[Photo] = []
    missing: list[str] = []
    with manifest.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        columns = reader.fieldnames or []
        lacking = [c for c in ("path", "label") if c not in columns]
        if lacking:
            raise PhotoSetError(
                f"Photo set {manifest} lacks column(s) {lacking}; it has {columns}. "
                "A photo set needs path and label (optionally sender_id)."
            )
        for row in reader:
            rel, label = (row.get("path") or "").strip(), (row.get("label") or "").strip()
            if not rel or not label:
                continue
            path = root / rel
            if not path.is_file():
                missing.append(str(path))
                continue
            # The manifest's own path value, as train_model uses it: both sides must agree.
            sender = (row.get("sender_id") or "").strip() or rel
            photos.append(Photo(str(path), label, sender))
    if missing:
        raise PhotoSetError(
            f"{len(missing)} photo file(s) listed in {manifest} are missing under {root} "
            f"(e.g. {missing[:3]}). Fix --photos-root."
        )
    if not photos:
        raise PhotoSetError(f"Photo set {manifest} has no labelled photos.")
    return photos


def unmapped_labels(photos: Iterable[Photo], label_map: LabelMap) -> Counter:
    """Photo labels the map neither maps nor ignores, with their photo counts."""
    return Counter(
        p.label
        for p in photos
        if p.label not in label_map.catalog_types and p.label not in label_map.ignore
    )


def absent_catalog_types(label_map: LabelMap, catalog_types: Iterable[str]) -> dict[str, list[str]]:
    """Catalog types the map names that the evaluated catalog lacks -> the labels naming them."""
    present = set(catalog_types)
    out: dict[str, list[str]] = {}
    for label, types in label_map.catalog_types.items():
        for t in types:
            if t not in present:
                out.setdefault(t, []).append(label)
    return out


def held_out_photos(
    photos: Sequence[Photo], fraction: float = PHOTO_VAL_FRACTION, salt: str = PHOTO_SPLIT_SALT
) -> list[Photo]:
    """The photos of the senders train_model keeps out of training (whole senders)."""
    return [p for p in photos if photo_sender_is_validation(p.sender, fraction, salt)]
