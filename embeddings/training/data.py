"""Catalog manifests: reading, validation and a deterministic train/validation split.

Plain Python (no Django, no torch). A manifest is a CSV with at least ``path`` (image path
relative to an images root), ``product_id`` and ``title``; ``articleType`` / ``baseColour`` /
``subCategory`` / ``usage`` are optional metadata used for extra captions and for evaluation.

The split is a pure function of the product ids (a salted hash), so the training command and
``manage.py evaluate --split val`` agree on the held-out products without sharing any file, and
the same product id is held out of every manifest it appears in.
"""

from __future__ import annotations

import csv
import hashlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REQUIRED_COLUMNS = ("path", "product_id", "title")
DEFAULT_SPLIT_SALT = "shopsearch-val-v1"
# Shopper photos are split by who took them (sender), never by photo: one person's floor, light
# and phone must not be on both sides. Training keeps these senders out; evaluate scores on them.
PHOTO_SPLIT_SALT = "shopsearch-photos-v1"
PHOTO_VAL_FRACTION = 0.5


class ManifestError(ValueError):
    """A manifest cannot be used as given; the message says what to fix."""


@dataclass(frozen=True)
class Record:
    """One product image with its caption metadata. ``image_path`` is absolute."""

    image_path: str
    product_id: str
    title: str
    meta: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    def get(self, column: str) -> str:
        """A metadata value ('' when missing), e.g. ``record.get("articleType")``."""
        if column == "title":
            return self.title
        return self.meta.get(column, "")


def read_manifest(
    manifest: str | os.PathLike[str],
    images_root: str | os.PathLike[str] | None = None,
    *,
    required: Sequence[str] = REQUIRED_COLUMNS,
    check_files: bool = True,
    drop_missing: bool = False,
) -> list[Record]:
    """Reads a manifest CSV into records with absolute image paths.

    ``images_root`` defaults to the manifest's folder. Raises ManifestError when the file or a
    required column is missing, or (``check_files``) when image files are missing, with a count
    and examples; ``drop_missing=True`` skips those rows instead.
    """
    manifest = Path(manifest)
    if not manifest.is_file():
        raise ManifestError(f"Manifest {manifest} does not exist; pass --manifest with a CSV file.")
    root = Path(images_root) if images_root else manifest.parent
    if not root.is_dir():
        raise ManifestError(f"Images root {root} is not a folder; pass --images-root DIR.")
    with manifest.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        columns = reader.fieldnames or []
        missing_cols = [c for c in required if c not in columns]
        if missing_cols:
            raise ManifestError(
                f"Manifest {manifest} lacks column(s) {missing_cols}; it has {columns}. "
                f"Add them (required: {list(required)}) or point --manifest at the right file."
            )
        records: list[Record] = []
        missing_files: list[str] = []
        seen: set[str] = set()
        for row in reader:
            pid = (row.get("product_id") or "").strip()
            rel = (row.get("path") or "").strip()
            if not pid or not rel or pid in seen:
                continue  # empty or duplicate rows carry no usable pair
            path = root / rel
            if check_files and not path.is_file():
                missing_files.append(str(path))
                continue
            seen.add(pid)
            meta = {
                k: (v or "").strip()
                for k, v in row.items()
                if k not in ("path", "product_id", "title") and k
            }
            records.append(Record(str(path), pid, (row.get("title") or "").strip(), meta))
    if missing_files and not drop_missing:
        raise ManifestError(
            f"{len(missing_files)} image file(s) listed in {manifest} are missing under {root} "
            f"(e.g. {missing_files[:3]}). Fix --images-root, or pass --skip-missing to ignore them."
        )
    if not records:
        raise ManifestError(f"Manifest {manifest} has no usable rows.")
    return records


def is_validation(product_id: str, fraction: float, salt: str = DEFAULT_SPLIT_SALT) -> bool:
    """Whether ``product_id`` belongs to the validation split holding ~``fraction`` of ids.

    Deterministic and independent of which other products exist: a salted SHA-1 of the id is
    mapped to [0, 1) and compared with ``fraction``.
    """
    digest = hashlib.sha1(f"{salt}:{product_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def photo_sender_is_validation(
    sender_id: str, fraction: float = PHOTO_VAL_FRACTION, salt: str = PHOTO_SPLIT_SALT
) -> bool:
    """Whether a shopper-photo sender is held out (train_model skips their photos, ``manage.py
    evaluate --photo-senders val`` scores only them). A photo without a sender counts as its own
    sender: pass its manifest ``path`` value as written (relative, not resolved)."""
    return is_validation(sender_id, fraction, salt)


def _hash_rank(product_id: str, salt: str) -> int:
    return int.from_bytes(hashlib.sha1(f"{salt}:{product_id}".encode()).digest()[:8], "big")


def validation_ids(
    records: Iterable[Record],
    *,
    fraction: float | None = None,
    size: int | None = None,
    salt: str = DEFAULT_SPLIT_SALT,
) -> set[str]:
    """The held-out product ids of ``records``: the ``size`` ids with the smallest salted hash,
    or every id whose hash falls below ``fraction``. Exactly one of the two must be given.

    Both rules depend only on the ids (not on row order), so re-reading the same manifest gives
    the same split.
    """
    if (fraction is None) == (size is None):
        raise ManifestError("Give exactly one of --val-fraction or --val-size.")
    ids = sorted({r.product_id for r in records})
    if size is not None:
        if size < 0 or size > len(ids):
            raise ManifestError(f"--val-size {size} must be between 0 and {len(ids)} products.")
        return set(sorted(ids, key=lambda pid: _hash_rank(pid, salt))[:size])
    assert fraction is not None
    if not 0.0 <= fraction < 1.0:
        raise ManifestError(f"--val-fraction {fraction} must be in [0, 1).")
    return {pid for pid in ids if is_validation(pid, fraction, salt)}


def split_records(
    records: Sequence[Record], val_ids: set[str]
) -> tuple[list[Record], list[Record]]:
    """(train, validation) by product id."""
    train = [r for r in records if r.product_id not in val_ids]
    val = [r for r in records if r.product_id in val_ids]
    return train, val


# -- captions -----------------------------------------------------------------------------------


def _clean(value: str) -> str:
    return " ".join(value.split())


# The manifest columns a metadata caption can claim (see captions_with_claims).
CLAIM_COLUMNS = ("articleType", "baseColour", "usage", "subCategory")


def captions_with_claims(record: Record) -> list[tuple[str, tuple[str, ...]]]:
    """Every caption a training step may pair with the record's image, each with the columns
    it claims: ``("Navy Blue Tshirts", ("articleType", "baseColour"))`` is true of every product
    of that type and colour, so training may count those products' images as its positives; a
    title claims nothing (``()``): it describes this one product.

    The title is what a shopper reads; metadata-derived captions ("Navy Blue Tshirts", "a photo
    of Tshirts", ...) teach the short colour + type queries shoppers type. Empty metadata
    values are skipped, so a manifest with only titles still works.
    """
    title = _clean(record.title)
    art = _clean(record.get("articleType"))
    colour = _clean(record.get("baseColour"))
    usage = _clean(record.get("usage"))
    sub = _clean(record.get("subCategory"))
    caps: list[tuple[str, tuple[str, ...]]] = [(title, ())] if title else []
    if art:
        caps.append((art, ("articleType",)))
        caps.append((f"a photo of {art}", ("articleType",)))
        if colour:
            caps.append((f"{colour} {art}", ("articleType", "baseColour")))
            caps.append((f"a photo of {colour} {art}", ("articleType", "baseColour")))
        if usage:
            caps.append((f"{usage} {art}", ("articleType", "usage")))
    if sub and colour:
        caps.append((f"{colour} {sub}", ("subCategory", "baseColour")))
    return caps or [(record.product_id, ())]


def captions_for(record: Record) -> list[str]:
    """The captions of :func:`captions_with_claims`, without the claims."""
    return [caption for caption, _ in captions_with_claims(record)]
