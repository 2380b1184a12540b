"""Contrastive (CLIP-style) training of an open_clip model on catalog (image, caption) pairs.

Plain Python; ``manage.py train_model`` is a thin wrapper around :func:`train`.

Loss: symmetric InfoNCE with open_clip's learnable logit scale. Captions repeat across
products ("Navy Blue Tshirts"), so items sharing a caption in a batch are treated as positives
of each other (soft targets) instead of as negatives; with ``label_captions`` a metadata caption
is also a positive of every image in the batch whose labels make it true (a navy t-shirt whose
own caption this step was its title is still a "Navy Blue Tshirts"). Optional auxiliary loss:
a throw-away
linear head maps the text embedding onto MiniLM's sentence embedding (distillation).
"""

from __future__ import annotations

import hashlib
import math
import platform
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from embeddings.evaluation import HEADLINE, photo_report, retrieval_report
from embeddings.training.cache import DEFAULT_CACHE_DIR, build_image_cache, cached_array
from embeddings.training.checkpoint import card_path_for, save_checkpoint, write_card
from embeddings.training.data import (
    CLAIM_COLUMNS,
    DEFAULT_SPLIT_SALT,
    Record,
    captions_with_claims,
    read_manifest,
    validation_ids,
)
from embeddings.training.modeling import (
    TrainingSetupError,
    create_model,
    init_token_embeddings_from_minilm,
    parameter_count,
    raw_model_config,
    resolve_model_config,
)
from embeddings.training.views import sample_views

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class Source:
    """One manifest and the folder its ``path`` column is relative to."""

    manifest: str
    images_root: str | None = None


@dataclass
class PhotoSource:
    """A labelled photo set (``path``, ``label``, ``sender_id``: e.g. shoppers' phone photos)
    and the label map naming the catalog types that answer each label. Photos of the senders
    :func:`embeddings.training.data.photo_sender_is_validation` holds out never train."""

    manifest: str
    label_map: str
    images_root: str | None = None


@dataclass
class TrainConfig:
    """Everything a run depends on; recorded verbatim in the model card."""

    sources: list[Source]
    model_name: str
    output: str
    model_config: str | None = None
    init: str = "random"
    epochs: float = 1.0
    batch_size: int = 256
    image_size: int | None = None  # None: the model config's image size
    device: str = "cpu"
    val_fraction: float | None = None
    val_size: int | None = 1000
    split_salt: str = DEFAULT_SPLIT_SALT
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup_steps: int = 200
    seed: int = 0
    threads: int = 2
    cache_dir: str | None = str(DEFAULT_CACHE_DIR)
    workers: int = 2
    title_prob: float = 0.5
    distill_weight: float = 0.0
    # >0: images in a batch sharing a label are pulled together by a supervised contrastive term
    # on the image side, once per level; a level is one or more manifest columns (the type; the
    # type + colour; ...).
    label_weight: float = 0.0
    label_levels: tuple[tuple[str, ...], ...] = (("articleType",), ("articleType", "baseColour"))
    label_temperature: float = 0.1
    # >0: build each batch from groups of this many images sharing the finest label level (e.g.
    # type + colour), two groups per coarsest label (two colours of one type) - positives for
    # the label term and hard negatives (same type, other colour) in every batch. 0: random batches.
    group_size: int = 0
    # True: a metadata caption ("Navy Blue Tshirts") counts as a positive of every image in the
    # batch whose type and colour make it true, not only of the image it was drawn for; titles
    # stay positives of their own product only.
    label_captions: bool = False
    init_token_embeddings: bool = False
    half_checkpoint: bool = True
    skip_missing: bool = False
    time_limit_minutes: float | None = None
    lock_image: bool = (
        False  # train only the text side (and logit scale) against a frozen image tower
    )
    # True: freeze the image trunk (a timm tower's backbone and pooling) and train only its
    # projection head, the text side and the logit scale. The trunk's pooled features are
    # computed once (``trunk_views`` passes: the plain image, then augmented views), so a step
    # costs no image forward or backward pass: many epochs of head + text training in minutes.
    lock_image_trunk: bool = False
    trunk_views: int = 2
    # With lock_image_trunk: how much of the trunk's end still trains on the cached maps
    # (0: nothing, pooled features cached; 1: the final 1x1 conv; 2: + the last block; ...).
    trunk_tail: int = 0
    # With lock_image_trunk: phone-photo-like views (embeddings.training.augment) per image of
    # the first manifest and of the photo sets, replacing trunk_views' crops; 0 = off.
    phone_views: int = 0
    photo_sources: list[PhotoSource] = field(default_factory=list)
    # Pretrained image trunk (an ONNX classifier or a state dict), loaded after ``init``.
    image_init: str | None = None
    # A checkpoint whose text side (every weight outside ``visual.``) is copied in after
    # ``init``: keeps a trained text tower when the image tower changes.
    text_init: str | None = None
    precision: str = "fp32"  # "bf16": autocast matmuls/convs (about 2x faster on AVX512-BF16 CPUs)
    augment: bool = True
    command: str = ""
    extra_card: dict[str, Any] = field(default_factory=dict)


# -- batches ------------------------------------------------------------------------------------


def augment_batch(
    images: torch.Tensor, generator: torch.Generator, min_scale: float = 0.55
) -> torch.Tensor:
    """Random resized crop (area ``min_scale``..1, aspect 3/4..4/3) + horizontal flip, batched.

    ``images`` is float ``(B, 3, H, W)``; one ``affine_grid``/``grid_sample`` call does every
    sample's crop, so augmentation costs little next to the network. No colour jitter: colour
    is what shoppers search by.
    """
    b = images.shape[0]
    area = torch.empty(b).uniform_(min_scale, 1.0, generator=generator)
    log_ratio = torch.empty(b).uniform_(math.log(3 / 4), math.log(4 / 3), generator=generator)
    ratio = torch.exp(log_ratio)
    sx = torch.sqrt(area * ratio).clamp(max=1.0)
    sy = torch.sqrt(area / ratio).clamp(max=1.0)
    tx = (torch.rand(b, generator=generator) * 2 - 1) * (1 - sx)
    ty = (torch.rand(b, generator=generator) * 2 - 1) * (1 - sy)
    flip = torch.where(torch.rand(b, generator=generator) < 0.5, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = sx * flip
    theta[:, 0, 2] = tx
    theta[:, 1, 1] = sy
    theta[:, 1, 2] = ty
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def to_model_input(
    uint8_batch: np.ndarray, mean: Sequence[float], std: Sequence[float], size: int
) -> torch.Tensor:
    """``(B, H, W, 3)`` uint8 -> normalised float ``(B, 3, size, size)``."""
    x = torch.from_numpy(np.ascontiguousarray(uint8_batch)).permute(0, 3, 1, 2).float().div_(255.0)
    if x.shape[-1] != size:
        x = F.interpolate(
            x, size=(size, size), mode="bicubic", align_corners=False, antialias=True
        ).clamp_(0, 1)
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    return (x - m) / s


def contrastive_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: torch.Tensor,
    caption_ids: torch.Tensor,
    positives: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric InfoNCE on normalised features with soft targets.

    Image ``i`` and text ``j`` are a positive pair when they share a caption id, or where
    ``positives[i, j]`` (bool ``(B, B)``, image x text) is true; each image's target spreads
    evenly over its positive texts and each text's over its positive images.
    """
    logits = logit_scale * image_features @ text_features.T
    same = caption_ids[:, None] == caption_ids[None, :]
    if positives is not None:
        same = same | positives
    same = same.float()
    targets_i = same / same.sum(1, keepdim=True)
    targets_t = same.T / same.T.sum(1, keepdim=True)
    loss_i = torch.sum(-targets_i * F.log_softmax(logits, dim=1), dim=1).mean()
    loss_t = torch.sum(-targets_t * F.log_softmax(logits.T, dim=1), dim=1).mean()
    return (loss_i + loss_t) / 2


def caption_positives(item_values: np.ndarray, claimed_values: np.ndarray) -> torch.Tensor:
    """``(B, B)`` bool, image x text: the metadata claimed by text ``j`` holds for image ``i``.

    ``item_values`` ``(B, C)``: each image's value id per claim column (-1 = empty);
    ``claimed_values`` ``(B, C)``: the value id each text claims per column, -1 where it claims
    nothing. A text that claims nothing at all (a title) is nobody's extra positive.
    """
    item = torch.from_numpy(item_values)[:, None, :]
    claim = torch.from_numpy(claimed_values)[None, :, :]
    holds = ((claim < 0) | (item == claim)).all(-1)
    return holds & (claim >= 0).any(-1)


def label_contrastive_loss(
    image_features: torch.Tensor, labels: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al. 2020) on normalised image features.

    ``labels`` is ``(B, L)`` integer ids, one column per label level (-1 = unknown). For each
    level, every image is pulled towards the other images of the batch with the same label and
    pushed from the rest; rows with no positive in the batch do not count. Returns the mean over
    levels (0 when no level has a positive pair).
    """
    b = image_features.shape[0]
    logits = image_features @ image_features.T / temperature
    eye = torch.eye(b, dtype=torch.bool, device=image_features.device)
    logits = logits.masked_fill(eye, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    log_prob = log_prob.masked_fill(eye, 0.0)
    losses = []
    for level in range(labels.shape[1]):
        lab = labels[:, level]
        pos = (lab[:, None] == lab[None, :]) & ~eye & (lab[:, None] >= 0)
        n_pos = pos.sum(1)
        rows = n_pos > 0
        if not bool(rows.any()):
            continue
        per_row = -(log_prob * pos).sum(1)[rows] / n_pos[rows]
        losses.append(per_row.mean())
    if not losses:
        return image_features.sum() * 0.0
    return torch.stack(losses).mean()


def _label_value(value: str) -> str:
    """A metadata value as labels compare it: case and spacing ignored."""
    return " ".join(value.split()).lower()


def label_ids(records: Sequence[Record], levels: Sequence[Sequence[str]]) -> np.ndarray:
    """``(n, len(levels))`` label ids; a level's label is the tuple of its columns' values
    (case and spacing ignored). A row with an empty value in any of a level's columns gets -1.
    """
    out = np.full((len(records), len(levels)), -1, dtype=np.int64)
    for level, columns in enumerate(levels):
        index: dict[tuple[str, ...], int] = {}
        for i, r in enumerate(records):
            key = tuple(_label_value(r.get(c)) for c in columns)
            if all(key):
                out[i, level] = index.setdefault(key, len(index))
    return out


class GroupedBatches:
    """Batches built around label groups, for the label term's positives and hard negatives.

    A batch is filled by repeatedly drawing an anchor item uniformly (so common types stay
    common) and adding up to ``group_size`` items of its finest label (``labels[:, -1]``, e.g.
    type + colour) plus up to ``group_size`` items of another finest label under the same
    coarsest label (``labels[:, 0]``: the same type in another colour). Items without labels
    join as themselves. Indices come back sorted, without repeats.
    """

    def __init__(self, labels: np.ndarray, batch_size: int, group_size: int):
        self.n = len(labels)
        self.batch_size = batch_size
        self.group_size = group_size
        self.fine, self.coarse = labels[:, -1], labels[:, 0]
        order = np.argsort(self.fine, kind="stable")
        values, starts = np.unique(self.fine[order], return_index=True)
        self.members: dict[int, np.ndarray] = {
            int(v): chunk
            for v, chunk in zip(values, np.split(order, starts[1:]), strict=True)
            if v >= 0
        }
        self.siblings: dict[int, list[int]] = {}
        for v, chunk in self.members.items():
            c = int(self.coarse[chunk[0]])
            if c >= 0:
                self.siblings.setdefault(c, []).append(v)

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        if self.n <= self.batch_size:
            return np.arange(self.n)
        chosen: set[int] = set()
        while len(chosen) < self.batch_size:
            anchor = int(rng.integers(self.n))
            chosen.add(anchor)
            f, c = int(self.fine[anchor]), int(self.coarse[anchor])
            groups = [f] if f >= 0 else []
            others = [g for g in self.siblings.get(c, []) if g != f]
            if others:
                groups.append(others[int(rng.integers(len(others)))])
            for g in groups:
                members = self.members[g]
                take = min(self.group_size, len(members))
                chosen.update(int(i) for i in rng.choice(members, size=take, replace=False))
        items = np.fromiter(chosen, dtype=np.int64)
        if len(items) > self.batch_size:
            items = rng.choice(items, size=self.batch_size, replace=False)
        return np.sort(items)


# -- data assembly ------------------------------------------------------------------------------


@dataclass
class Dataset:
    """Training pairs in memory: images as one uint8 array, captions as token rows."""

    images: np.ndarray  # (n, S, S, 3) uint8, train items
    caption_lists: list[list[int]]  # per train item: ids into ``captions`` (first = title)
    labels: np.ndarray  # (n, L) label ids per train item (see label_ids), -1 = unknown
    item_values: np.ndarray  # (n, len(CLAIM_COLUMNS)) value ids per train item, -1 = empty
    caption_claims: np.ndarray  # (len(captions), len(CLAIM_COLUMNS)) claimed value ids, -1 = none
    captions: list[str]
    tokens: torch.Tensor  # (len(captions), context_length)
    val_records: list[Record]
    val_images: np.ndarray
    sources: list[dict[str, Any]]
    val_ids: set[str]
    # Per train item: index of its source block in ``blocks`` (catalog manifests, then photo sets).
    item_block: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    blocks: list[dict[str, Any]] = field(default_factory=list)
    val_photos: np.ndarray | None = None  # held-out senders' photos, uint8 at the training size
    val_photo_labels: list[str] = field(default_factory=list)
    photo_types: dict[str, tuple[str, ...]] = field(default_factory=dict)
    photo_prompts: dict[str, str] = field(default_factory=dict)


def load_data(cfg: TrainConfig, size: int, tokenizer: Any) -> Dataset:
    """Reads every manifest, holds out the validation ids of the first one everywhere, decodes
    (or memory-maps cached) images and tokenises every distinct caption once."""
    if not cfg.sources:
        raise TrainingSetupError("No training data: pass --manifest CSV (and --images-root DIR).")
    per_source = []
    for src in cfg.sources:
        recs = read_manifest(src.manifest, src.images_root, drop_missing=cfg.skip_missing)
        per_source.append(recs)
    primary = per_source[0]
    val_ids = validation_ids(
        primary,
        fraction=cfg.val_fraction,
        size=None if cfg.val_fraction is not None else cfg.val_size,
        salt=cfg.split_salt,
    )
    image_blocks, train_records, val_records, val_blocks, source_info = [], [], [], [], []
    item_block: list[np.ndarray] = []
    blocks: list[dict[str, Any]] = []
    for i, (src, recs) in enumerate(zip(cfg.sources, per_source, strict=True)):
        arr = build_image_cache(
            [r.image_path for r in recs],
            size,
            cache_dir=cfg.cache_dir,
            workers=cfg.workers,
            desc=f"decoding {Path(src.manifest).parent.name}",
        )
        train_idx = [j for j, r in enumerate(recs) if r.product_id not in val_ids]
        image_blocks.append(np.asarray(arr[train_idx]))
        item_block.append(np.full(len(train_idx), len(blocks), np.int64))
        blocks.append(
            {"paths": [recs[j].image_path for j in train_idx], "studio": True, "primary": i == 0}
        )
        train_records.extend(recs[j] for j in train_idx)
        if i == 0:
            v_idx = [j for j, r in enumerate(recs) if r.product_id in val_ids]
            val_blocks.append(np.asarray(arr[v_idx]))
            val_records.extend(recs[j] for j in v_idx)
        source_info.append(
            {
                "manifest": str(Path(src.manifest).resolve()),
                "images_root": str(Path(src.images_root or Path(src.manifest).parent).resolve()),
                "rows": len(recs),
                "train_rows": len(train_idx),
                "held_out_rows": len(recs) - len(train_idx),
            }
        )
    photo_info, val_photos, val_photo_labels, photo_types, photo_prompts = _load_photo_sources(
        cfg, size
    )
    for block in photo_info:
        image_blocks.append(block.pop("images"))
        train_records.extend(block.pop("records"))
        item_block.append(np.full(len(image_blocks[-1]), len(blocks), np.int64))
        blocks.append(
            {"paths": block.pop("paths"), "studio": False, "primary": False, "crop": True}
        )
        source_info.append(block)
    value_index: dict[tuple[int, str], int] = {}

    def value_id(column: int, value: str) -> int:
        value = _label_value(value)
        return value_index.setdefault((column, value), len(value_index)) if value else -1

    item_values = np.array(
        [[value_id(k, r.get(c)) for k, c in enumerate(CLAIM_COLUMNS)] for r in train_records],
        dtype=np.int64,
    ).reshape(len(train_records), len(CLAIM_COLUMNS))
    caption_index: dict[str, int] = {}
    claims: list[np.ndarray] = []
    caption_lists: list[list[int]] = []
    for i, r in enumerate(train_records):
        ids = []
        for c, claimed in captions_with_claims(r):
            if c not in caption_index:
                caption_index[c] = len(caption_index)
                claims.append(np.full(len(CLAIM_COLUMNS), -1, dtype=np.int64))
            row = claims[caption_index[c]]
            if claimed and (row < 0).all():
                # A title that reads exactly like a metadata caption ("Red Tshirts") means what
                # the metadata caption means; the first claim of a caption string stands.
                for k, column in enumerate(CLAIM_COLUMNS):
                    if column in claimed:
                        row[k] = item_values[i, k]
            ids.append(caption_index[c])
        caption_lists.append(ids)
    captions = list(caption_index)
    chunks = [
        tokenizer(captions[s : s + 4096])
        for s in tqdm(range(0, len(captions), 4096), desc="tokenising", unit="chunk")
    ]
    tokens = torch.cat(chunks).long()
    return Dataset(
        images=np.concatenate(image_blocks),
        caption_lists=caption_lists,
        labels=label_ids(train_records, cfg.label_levels),
        item_values=item_values,
        caption_claims=np.stack(claims) if claims else np.zeros((0, len(CLAIM_COLUMNS)), np.int64),
        captions=captions,
        tokens=tokens,
        val_records=val_records,
        val_images=np.concatenate(val_blocks),
        sources=source_info,
        val_ids=val_ids,
        item_block=np.concatenate(item_block),
        blocks=blocks,
        val_photos=val_photos,
        val_photo_labels=val_photo_labels,
        photo_types=photo_types,
        photo_prompts=photo_prompts,
    )


def _load_photo_sources(
    cfg: TrainConfig, size: int
) -> tuple[
    list[dict[str, Any]], np.ndarray | None, list[str], dict[str, tuple[str, ...]], dict[str, str]
]:
    """Training blocks of the photo sets' kept senders, the held-out senders' photos and labels,
    and the label maps' catalog types and prompt words.

    A photo trains as a product whose title is its label's prompt words ("t-shirt") and whose
    articleType is the first catalog type its label maps to, so the caption and label terms
    pull it towards the catalog products of that type."""
    from embeddings.evaluation_photos import PhotoSetError, load_label_map, read_photo_manifest
    from embeddings.training.data import (
        PHOTO_SPLIT_SALT,
        PHOTO_VAL_FRACTION,
        photo_sender_is_validation,
    )

    blocks: list[dict[str, Any]] = []
    val_imgs: list[np.ndarray] = []
    val_labels: list[str] = []
    types: dict[str, tuple[str, ...]] = {}
    prompts: dict[str, str] = {}
    for src in cfg.photo_sources:
        try:
            label_map = load_label_map(src.label_map)
            photos = read_photo_manifest(src.manifest, src.images_root)
        except PhotoSetError as exc:
            raise TrainingSetupError(str(exc)) from exc
        photos = [p for p in photos if p.label in label_map.catalog_types]
        if not photos:
            raise TrainingSetupError(
                f"No photo of {src.manifest} has a label that {src.label_map} maps to catalog types."
            )
        types.update(label_map.catalog_types)
        prompts.update(label_map.prompts)
        held = [photo_sender_is_validation(p.sender) for p in photos]
        arr = build_image_cache(
            [p.image_path for p in photos],
            size,
            cache_dir=cfg.cache_dir,
            workers=cfg.workers,
            desc=f"decoding {Path(src.manifest).parent.name}",
            crop=True,
        )
        keep = [j for j, h in enumerate(held) if not h]
        out = [j for j, h in enumerate(held) if h]
        records = [
            Record(
                photos[j].image_path,
                f"photo:{photos[j].image_path}",
                label_map.prompts.get(photos[j].label) or photos[j].label,
                {"articleType": label_map.catalog_types[photos[j].label][0]},
            )
            for j in keep
        ]
        blocks.append(
            {
                "images": np.asarray(arr[keep]),
                "records": records,
                "paths": [photos[j].image_path for j in keep],
                "manifest": str(Path(src.manifest).resolve()),
                "images_root": str(Path(src.images_root or Path(src.manifest).parent).resolve()),
                "label_map": str(Path(src.label_map).resolve()),
                "val_fraction": PHOTO_VAL_FRACTION,
                "salt": PHOTO_SPLIT_SALT,
                "rows": len(photos),
                "train_rows": len(keep),
                "held_out_rows": len(out),
                "held_out_senders": len({photos[j].sender for j in out}),
            }
        )
        val_imgs.append(np.asarray(arr[out]))
        val_labels.extend(photos[j].label for j in out)
    val = np.concatenate(val_imgs) if val_imgs else None
    return blocks, val, val_labels, types, prompts


# -- evaluation during training -----------------------------------------------------------------


@torch.no_grad()
def encode_uint8_images(
    model: torch.nn.Module, images: np.ndarray, mean, std, size: int, batch: int = 256
) -> np.ndarray:
    out = []
    for s in range(0, len(images), batch):
        x = to_model_input(images[s : s + batch], mean, std, size)
        out.append(F.normalize(model.encode_image(x).float(), dim=-1).numpy())
    return np.concatenate(out) if out else np.zeros((0, 1), np.float32)


def text_encoder_fn(
    model: torch.nn.Module, tokenizer: Any, batch: int = 512
) -> Callable[[Sequence[str]], np.ndarray]:
    @torch.no_grad()
    def encode(texts: Sequence[str]) -> np.ndarray:
        out = []
        for s in range(0, len(texts), batch):
            out.append(
                F.normalize(
                    model.encode_text(tokenizer(list(texts[s : s + batch]))).float(), dim=-1
                ).numpy()
            )
        return np.concatenate(out)

    return encode


def validate(
    model: torch.nn.Module, tokenizer: Any, data: Dataset, mean, std, size: int
) -> dict[str, float]:
    """The headline retrieval metrics on the held-out products (training resolution, no aug)."""
    was_training = model.training
    model.eval()
    try:
        emb = encode_uint8_images(model, data.val_images, mean, std, size)
        recs = data.val_records
        report = retrieval_report(
            emb,
            [r.title for r in recs],
            [r.get("articleType") for r in recs],
            [r.get("baseColour") for r in recs],
            text_encoder_fn(model, tokenizer),
        )
        if data.val_photos is not None and len(data.val_photos) > 10:
            photos = encode_uint8_images(model, data.val_photos, mean, std, size)
            photos_report = photo_report(
                photos,
                data.val_photo_labels,
                emb,
                [r.get("articleType") for r in recs],
                data.photo_types,
                text_encoder_fn(model, tokenizer),
                prompts=data.photo_prompts,
            )
            # The scalar figures only (the per-label breakdown is evaluate's to print).
            report.update({k: v for k, v in photos_report.items() if isinstance(v, float)})
        return report
    finally:
        model.train(was_training)


# -- the loop -----------------------------------------------------------------------------------


@torch.no_grad()
def trunk_features(
    model: torch.nn.Module,
    images: np.ndarray,
    mean,
    std,
    size: int,
    views: int,
    augment: bool,
    seed: int,
    device: torch.device,
    batch: int = 256,
) -> torch.Tensor:
    """``(views, n, C)`` pooled trunk features of a timm image tower, in eval mode: view 0 is
    each plain image, later views are random crops/flips (when ``augment``)."""
    trunk = model.visual.trunk
    was_training = trunk.training
    trunk.eval()
    gen = torch.Generator().manual_seed(seed + 1)
    n_views = views if augment else 1
    out: torch.Tensor | None = None
    try:
        bar = tqdm(total=n_views * len(images), desc="image trunk features", unit="img")
        for v in range(n_views):
            for s in range(0, len(images), batch):
                x = to_model_input(images[s : s + batch], mean, std, size)
                if v > 0:
                    x = augment_batch(x, gen)
                f = trunk(x.to(device)).float().cpu()
                if out is None:
                    out = torch.empty((n_views, len(images), f.shape[1]), dtype=torch.float32)
                out[v, s : s + len(f)] = f
                bar.update(len(f))
        bar.close()
    finally:
        trunk.train(was_training)
    assert out is not None
    return out


def cached_trunk_features(
    model: torch.nn.Module,
    images: np.ndarray,
    cfg: TrainConfig,
    mean,
    std,
    size: int,
    device: torch.device,
) -> torch.Tensor:
    """:func:`trunk_features`, kept in ``cfg.cache_dir`` under a key of the trunk's weights, the
    images and the view settings, so a repeated run (another pilot, another seed of the head)
    skips the passes."""
    key = hashlib.sha1(f"{size}|{cfg.trunk_views}|{cfg.augment}|{cfg.seed}|{images.shape}".encode())
    for t in model.visual.trunk.state_dict().values():
        key.update(t.detach().cpu().contiguous().numpy().tobytes())
    key.update(np.ascontiguousarray(images).data)
    return torch.from_numpy(
        cached_array(
            cfg.cache_dir,
            f"trunk-{len(images)}-{key.hexdigest()[:20]}",
            lambda: trunk_features(
                model, images, mean, std, size, cfg.trunk_views, cfg.augment, cfg.seed, device
            ).numpy(),
        )
    )


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool | None:
    """Whether the CPU computes bf16 natively (AVX512-BF16 or AMX), from /proc/cpuinfo's flags;
    None where that cannot be read (not Linux)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return None
    flags = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
    if not flags:
        return None
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        # Norms, biases, embeddings and the logit scale are not decayed (standard CLIP recipe).
        if (
            p.ndim < 2
            or "embedding" in name
            or "logit_scale" in name
            or "bn" in name
            or ".norm" in name
        ):
            no_decay.append(p)
        else:
            decay.append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def _model_norm(model: torch.nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    visual = getattr(model, "visual", None)
    mean = getattr(visual, "image_mean", None) or OPENAI_MEAN
    std = getattr(visual, "image_std", None) or OPENAI_STD
    return tuple(mean), tuple(std)


def _hardware() -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    try:
        import os

        info["cpu_count"] = os.cpu_count()
    except Exception:  # pragma: no cover - informational only
        pass
    if torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name(0)
    return info


def train(cfg: TrainConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Runs a training job and writes the checkpoint, sidecar and card; returns the card."""
    return train_model(cfg, log)[1]


def train_model(
    cfg: TrainConfig, log: Callable[[str], None] = print
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Like :func:`train`, also returning the trained model (in eval mode, fp32).

    The checkpoint and card are rewritten after every epoch, so a long job can be stopped (or
    hit ``time_limit_minutes``) and still leave a usable model.
    """
    torch.set_num_threads(max(1, cfg.threads))
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    if cfg.precision not in ("fp32", "bf16"):
        raise TrainingSetupError(
            f"--precision {cfg.precision!r} is not supported; use fp32 or bf16."
        )
    if cfg.precision == "bf16" and cfg.device == "cpu" and cpu_has_native_bf16() is False:
        log(
            "WARNING: this CPU has no native bf16 (no avx512_bf16 / amx_bf16 flag), so bf16 "
            "autocast is emulated and far slower than fp32 (measured: 120 s against 3.4 s a "
            "step); use --precision fp32 here."
        )
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise TrainingSetupError(
            "--device cuda was asked for but no CUDA GPU is visible; use --device cpu."
        )
    device = torch.device(cfg.device)

    model_cfg = resolve_model_config(cfg.model_name, cfg.model_config, cfg.init)
    raw_cfg = raw_model_config(cfg.model_name, cfg.model_config, cfg.init)
    model, tokenizer = create_model(cfg.model_name, cfg.init, device="cpu")
    size = int(cfg.image_size or model_cfg.get("vision_cfg", {}).get("image_size", 224))
    cfg_image_size = model_cfg.get("vision_cfg", {}).get("image_size", 224)
    if size != cfg_image_size:
        raise TrainingSetupError(
            f"--image-size {size} differs from the model config's vision_cfg.image_size {cfg_image_size}; "
            "set them equal (the checkpoint's preprocessing comes from the config)."
        )
    inits: dict[str, Any] = {}
    if cfg.image_init:
        from embeddings.training.onnx_import import ImageInitError, init_image_tower

        try:
            inits["image_init"] = init_image_tower(model, cfg.image_init)
        except ImageInitError as exc:
            raise TrainingSetupError(str(exc)) from exc
        log(f"image tower initialised from {cfg.image_init}: {inits['image_init']}")
    if cfg.text_init:
        inits["text_init"] = copy_text_side(model, cfg.text_init)
        log(f"text side copied from {cfg.text_init}: {inits['text_init']['tensors']} tensors")
    token_init = False
    if cfg.init_token_embeddings and cfg.init == "random" and not cfg.text_init:
        token_init = init_token_embeddings_from_minilm(model)
        log(f"token embeddings initialised from MiniLM: {token_init}")
    if cfg.lock_image and cfg.lock_image_trunk:
        raise TrainingSetupError(
            "--lock-image freezes the whole image tower and --lock-image-trunk all of it but the "
            "projection head; pass one of them."
        )
    if cfg.lock_image:
        for p in model.visual.parameters():
            p.requires_grad_(False)
    if cfg.lock_image_trunk:
        if not (hasattr(model.visual, "trunk") and hasattr(model.visual, "head")):
            raise TrainingSetupError(
                f"--lock-image-trunk needs a timm image tower (vision_cfg.timm_model_name), but "
                f"{cfg.model_name}'s image tower is {type(model.visual).__name__}; use "
                "--lock-image to freeze all of it instead."
            )
        if cfg.trunk_views < 1:
            raise TrainingSetupError(f"--trunk-views {cfg.trunk_views} must be at least 1.")
        for p in model.visual.trunk.parameters():
            p.requires_grad_(False)
    split = None
    if cfg.lock_image_trunk and (cfg.trunk_tail > 0 or cfg.phone_views > 0):
        from embeddings.training.views import TrunkSplit, describe

        try:
            split = TrunkSplit(model.visual.trunk, cfg.trunk_tail)
        except ValueError as exc:
            raise TrainingSetupError(str(exc)) from exc
        for p in split.tail_parameters():
            p.requires_grad_(True)
        inits["trunk_split"] = describe(split)
    elif cfg.trunk_tail or cfg.phone_views:
        raise TrainingSetupError("--trunk-tail and --phone-views need --lock-image-trunk.")
    cfg.extra_card.update(inits)  # what the towers started from, for the model card
    model.to(device)
    mean, std = _model_norm(model)

    data = load_data(cfg, size, tokenizer)
    n_train = len(data.images)
    if (cfg.label_weight > 0 or cfg.group_size > 0) and not (data.labels >= 0).any():
        option = "--label-weight" if cfg.label_weight > 0 else "--group-size"
        raise TrainingSetupError(
            f"{option} needs the label columns {[list(lv) for lv in cfg.label_levels]} in "
            "the manifest, but no training row has them; pass --label-levels with columns your "
            f"manifest has, or drop {option}."
        )
    log(
        f"training pairs: {n_train} images, {len(data.captions)} distinct captions; validation: {len(data.val_records)} products"
    )
    trunk_cache = (
        cached_trunk_features(model, data.images, cfg, mean, std, size, device)
        if cfg.lock_image_trunk and split is None
        else None
    )
    view_cache = view_index = None
    if split is not None:
        view_cache, view_index = _view_cache(model, split, data, cfg, mean, std, size)

    head = None
    teacher_caps = teacher_words = None
    word_tokens = None
    if cfg.distill_weight > 0:
        from embeddings.training.teacher import minilm_embed, minilm_vocabulary_words

        teacher_caps = torch.from_numpy(
            minilm_embed(data.captions, cache_dir=None).astype(np.float32)
        )
        words = minilm_vocabulary_words()
        teacher_words = torch.from_numpy(minilm_embed(words, cache_dir=None).astype(np.float32))
        word_tokens = torch.cat(
            [tokenizer(words[s : s + 4096]) for s in range(0, len(words), 4096)]
        ).long()
        embed_dim = int(model_cfg["embed_dim"])
        head = torch.nn.Linear(embed_dim, teacher_caps.shape[1]).to(device)

    params = _param_groups(model, cfg.weight_decay)
    if head is not None:
        params.append({"params": list(head.parameters()), "weight_decay": 0.0})
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)
    steps_per_epoch = max(1, n_train // cfg.batch_size)
    total_steps = max(1, int(round(cfg.epochs * steps_per_epoch)))

    def lr_at(step: int) -> float:
        if step < cfg.warmup_steps:
            return cfg.lr * (step + 1) / cfg.warmup_steps
        progress = (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps)
        if cfg.time_limit_minutes:
            # On a shared machine the step rate varies; anneal by whichever runs out first,
            # steps or wall-clock time, so a run cut by the time limit still ends at a low LR.
            progress = max(progress, (time.time() - started) / (cfg.time_limit_minutes * 60))
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    started = time.time()
    gen = torch.Generator().manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    n_params = parameter_count(model)
    log(
        f"model {cfg.model_name}: {n_params / 1e6:.2f}M parameters, image size {size}, {total_steps} steps"
    )

    grouped = (
        GroupedBatches(data.labels, cfg.batch_size, cfg.group_size) if cfg.group_size > 0 else None
    )
    history: list[dict[str, Any]] = []
    step = 0
    stopped_early = False
    epoch = 0
    card: dict[str, Any] = {}
    while step < total_steps:
        epoch += 1
        perm = rng.permutation(n_train)
        model.train()
        if cfg.lock_image:
            model.visual.eval()  # frozen BatchNorm statistics too, not just frozen weights
        if cfg.lock_image_trunk:
            model.visual.trunk.eval()
        steps_this_epoch = min(steps_per_epoch, total_steps - step)
        bar = tqdm(range(steps_this_epoch), desc=f"epoch {epoch}", unit="step")
        running = 0.0
        for b in bar:
            if cfg.group_size > 0:
                assert grouped is not None
                idx = grouped.sample(rng)
            else:
                idx = np.sort(perm[b * cfg.batch_size : (b + 1) * cfg.batch_size])
            if trunk_cache is None and view_cache is None:
                x = to_model_input(data.images[idx], mean, std, size)
                if cfg.augment:
                    x = augment_batch(x, gen)
            caps = []
            for i in idx:
                options = data.caption_lists[i]
                if len(options) == 1 or rng.random() < cfg.title_prob:
                    caps.append(options[0])
                else:
                    caps.append(options[1 + int(rng.integers(len(options) - 1))])
            cap_ids = torch.tensor(caps)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16"):
                if view_cache is not None:
                    assert split is not None and view_index is not None
                    rows = sample_views(view_index, np.asarray(idx), rng)
                    maps = torch.from_numpy(view_cache[rows])
                    img_raw = model.visual.head(split.tail(maps.float().to(device)))
                elif trunk_cache is not None:
                    view = torch.from_numpy(rng.integers(trunk_cache.shape[0], size=len(idx)))
                    feats = trunk_cache[view, torch.from_numpy(np.asarray(idx))]
                    img_raw = model.visual.head(feats.to(device))
                else:
                    with torch.set_grad_enabled(not cfg.lock_image):
                        img_raw = model.encode_image(x.to(device))
                txt_raw = model.encode_text(data.tokens[cap_ids].to(device))
            # The loss is computed in fp32 whatever the autocast precision.
            img_f = F.normalize(img_raw.float(), dim=-1)
            txt_f = F.normalize(txt_raw.float(), dim=-1)
            scale = model.logit_scale.exp().clamp(max=100.0)
            positives = (
                caption_positives(data.item_values[idx], data.caption_claims[caps]).to(device)
                if cfg.label_captions
                else None
            )
            loss = contrastive_loss(img_f, txt_f, scale, cap_ids.to(device), positives)
            if head is not None:
                assert (
                    teacher_caps is not None
                    and teacher_words is not None
                    and word_tokens is not None
                )
                pred = F.normalize(head(txt_f), dim=-1)
                distill = 1 - (pred * teacher_caps[cap_ids].to(device)).sum(-1).mean()
                w_idx = torch.randint(
                    len(word_tokens), (min(128, len(word_tokens)),), generator=gen
                )
                with torch.autocast(
                    device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16"
                ):
                    w_raw = model.encode_text(word_tokens[w_idx].to(device))
                w_pred = F.normalize(head(F.normalize(w_raw.float(), dim=-1)), dim=-1)
                distill = distill + 1 - (w_pred * teacher_words[w_idx].to(device)).sum(-1).mean()
                loss = loss + cfg.distill_weight * distill
            if cfg.label_weight > 0:
                lab = torch.from_numpy(data.labels[idx]).to(device)
                loss = loss + cfg.label_weight * label_contrastive_loss(
                    img_f, lab, cfg.label_temperature
                )
            for g in optimizer.param_groups:
                g["lr"] = lr_at(step)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100.0))
            step += 1
            running = 0.98 * running + 0.02 * loss.item() if b else loss.item()
            bar.set_postfix(
                loss=f"{running:.3f}", scale=f"{scale.item():.1f}", lr=f"{lr_at(step):.1e}"
            )
            if cfg.time_limit_minutes and (time.time() - started) > cfg.time_limit_minutes * 60:
                stopped_early = True
                break
        bar.close()
        metrics = validate(model, tokenizer, data, mean, std, size)
        elapsed = time.time() - started
        history.append(
            {
                "epoch": epoch,
                "step": step,
                "loss": round(running, 4),
                "minutes": round(elapsed / 60, 2),
                **{k: round(v, 4) for k, v in metrics.items()},
            }
        )
        log(
            f"epoch {epoch} (step {step}/{total_steps}, {elapsed / 60:.1f} min) loss {running:.3f} | "
            + ", ".join(f"{k} {metrics[k]:.3f}" for k, _ in HEADLINE if k in metrics)
        )
        save_checkpoint(model, cfg.output, cfg.model_name, raw_cfg, half=cfg.half_checkpoint)
        card = _card(
            cfg,
            data,
            model,
            raw_cfg=raw_cfg,
            size=size,
            history=history,
            elapsed=elapsed,
            token_init=token_init,
            stopped_early=stopped_early,
            step=step,
            total_steps=total_steps,
        )
        if inits:  # what --image-init/--text-init loaded and which trunk modules trained
            card["initialisation"] = inits
        write_card(card_path_for(cfg.output), card)
        if stopped_early:
            log(f"stopped at the time limit of {cfg.time_limit_minutes} minutes")
            break
    model.eval()
    return model, card


def _card(
    cfg: TrainConfig,
    data: Dataset,
    model: torch.nn.Module,
    *,
    raw_cfg: dict[str, Any],
    size: int,
    history: list[dict[str, Any]],
    elapsed: float,
    token_init: bool,
    stopped_early: bool,
    step: int,
    total_steps: int,
) -> dict[str, Any]:
    """The model card after an epoch: run settings, data, split, progress and metrics."""
    n_params = parameter_count(model)
    ckpt = Path(cfg.output)
    embed_dim = int(raw_cfg.get("embed_dim", 0))
    cfg_dict = asdict(cfg)
    cfg_dict.pop("extra_card", None)
    card = {
        "model_name": cfg.model_name,
        "checkpoint": ckpt.name,
        "checkpoint_bytes": ckpt.stat().st_size if ckpt.is_file() else None,
        "weights_dtype": "float16" if cfg.half_checkpoint else "float32",
        "embedding_dim": embed_dim,
        "parameters": n_params,
        "image_size": size,
        "init": cfg.init,
        "image_tower_locked": (
            ("trunk prefix (tail + head trained)" if cfg.trunk_tail else "trunk (head trained)")
            if cfg.lock_image_trunk
            else cfg.lock_image
        ),
        "token_embeddings_from_minilm": token_init,
        "command": cfg.command,
        "training_config": cfg_dict,
        "data": {
            "sources": data.sources,
            "train_pairs": int(len(data.images)),
            "distinct_captions": len(data.captions),
            "captions": f"title (p={cfg.title_prob:.2f}) else one of: <articleType>, a photo of <articleType>, <baseColour> <articleType>, "
            "a photo of <baseColour> <articleType>, <usage> <articleType>, <baseColour> <subCategory>",
        },
        "split": {
            "rule": "validation = the val_size product_ids of the first manifest with the smallest sha1('<salt>:<product_id>'), "
            "or every id whose hash/2^64 < val_fraction; those ids are excluded from training in every manifest",
            "salt": cfg.split_salt,
            "val_size": cfg.val_size if cfg.val_fraction is None else None,
            "val_fraction": cfg.val_fraction,
            "validation_products": len(data.val_records),
        },
        "training": {
            "steps": step,
            "planned_steps": total_steps,
            "epochs_completed": round(step / max(1, len(data.images) // cfg.batch_size), 2),
            "minutes": round(elapsed / 60, 2),
            "stopped_at_time_limit": stopped_early,
            "final_logit_scale": round(model.logit_scale.exp().item(), 3),
            "hardware": _hardware(),
        },
        "validation_history": history,
        "validation_metrics": history[-1] if history else {},
        "validation_note": "metrics computed during training on the held-out products at the training resolution from the "
        "uint8 cache; manage.py evaluate --split val recomputes them from the JPEGs through the model's own preprocessing",
    }
    card.update(cfg.extra_card)
    return card


def copy_text_side(model: torch.nn.Module, checkpoint: str) -> dict[str, Any]:
    """Copies every weight outside ``visual.`` (text tower, token embedding, projection, logit
    scale) from ``checkpoint``; raises unless every one of them is there with the same shape
    (a partly copied text side - say only the logit scale - would train as if it were new)."""
    if not Path(checkpoint).is_file():
        raise TrainingSetupError(f"--text-init {checkpoint} does not exist; pass a checkpoint .pt.")
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    own = model.state_dict()
    take = {
        k: v.to(own[k].dtype)
        for k, v in state.items()
        if not k.startswith("visual.") and k in own and own[k].shape == v.shape
    }
    text_keys = [k for k in own if not k.startswith("visual.")]
    lacking = [k for k in text_keys if k not in take]
    if lacking:
        raise TrainingSetupError(
            f"--text-init {checkpoint} matches {len(take)} of this model's {len(text_keys)} text "
            f"weights (missing or shaped differently: {lacking[:3]}); its text config differs."
        )
    model.load_state_dict(take, strict=False)
    return {"source": str(checkpoint), "tensors": len(take), "of": len(text_keys)}


def _view_cache(model, split, data: Dataset, cfg: TrainConfig, mean, std, size: int):
    """Frozen-prefix maps of every training item's plain view and of the phone-like views of
    the first manifest's and the photo sets' items (see embeddings.training.views)."""
    from embeddings.training.views import view_maps

    sources, studio, views = [], [], []
    backgrounds = None
    for k, block in enumerate(data.blocks):
        count = int((data.item_block == k).sum())
        wants = cfg.phone_views if (block.get("primary") or not block["studio"]) else 0
        src = None
        if wants and cfg.augment:
            src = np.asarray(
                build_image_cache(
                    block["paths"],
                    max(size, 224),
                    cache_dir=cfg.cache_dir,
                    workers=cfg.workers,
                    desc="decoding originals for phone views",
                    crop=bool(block.get("crop")),
                )
            )
        sources.append(src if src is not None else np.zeros((count, 1, 1, 3), np.uint8))
        studio.append(bool(block["studio"]))
        views.append(wants if src is not None else 0)
    # Room textures for the catalog's swapped backgrounds: the training photos' own scenes.
    for k, block in enumerate(data.blocks):
        if not block["studio"] and views[k]:
            backgrounds = sources[k][:: max(1, len(sources[k]) // 400)]
            break

    def to_input(imgs: np.ndarray) -> torch.Tensor:
        return to_model_input(imgs, mean, std, size)

    was = split.trunk.training
    split.trunk.eval()
    # channels_last about halves the frozen passes' time on CPU; the tower goes back after.
    split.trunk.to(memory_format=torch.channels_last)
    # The views are drawn in workers - 1 processes beside this one: leave them their cores.
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, threads - max(0, cfg.workers - 1)))
    try:
        return view_maps(
            split,
            to_input,
            data.images,
            sources,
            studio,
            views,
            size,
            cfg.seed,
            backgrounds,
            cache_dir=cfg.cache_dir,
            workers=cfg.workers,
        )
    finally:
        torch.set_num_threads(threads)
        split.trunk.to(memory_format=torch.contiguous_format)
        split.trunk.train(was)
