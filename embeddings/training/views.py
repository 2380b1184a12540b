"""Frozen-trunk training on CPU: a pretrained image trunk split into a frozen prefix, whose
outputs are computed once per image view and cached, and a trainable tail.

``train_model --lock-image-trunk --trunk-tail N --phone-views V``:

- the prefix (stem and all but the last ``N - 1`` blocks of a timm MobileNet/EfficientNet
  trunk) runs once per view: view 0 is the plain image, views 1..V phone-photo-like views
  (:mod:`embeddings.training.augment`) of the first catalog and of the shopper photo sets;
- the tail (``N >= 1``: the final 1x1 conv and its norm, plus ``N - 1`` last blocks) and the
  projection head, text tower and logit scale train on those cached maps, so a step costs the
  tail's forward and backward only, a small fraction of the network's work.

``N = 0`` caches the pooled features (nothing of the trunk trains).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from embeddings.training.augment import phone_view
from embeddings.training.cache import cached_array

TRUNK_PARTS = ("conv_stem", "bn1", "blocks", "conv_head", "bn2", "global_pool")


class TrunkSplit:
    """``prefix(x)`` -> cached maps; ``tail(maps)`` -> pooled trunk features; ``tail_modules``
    are the modules that train."""

    def __init__(self, trunk: torch.nn.Module, tail: int):
        missing = [p for p in TRUNK_PARTS if not hasattr(trunk, p)]
        if tail > 0 and missing:
            raise ValueError(
                f"--trunk-tail needs a timm MobileNet/EfficientNet trunk (with {TRUNK_PARTS}); "
                f"{type(trunk).__name__} lacks {missing}. Use --trunk-tail 0."
            )
        self.trunk = trunk
        self.tail_n = tail
        if tail > 0:
            n_blocks = len(trunk.blocks)
            if tail - 1 > n_blocks:
                raise ValueError(
                    f"--trunk-tail {tail} is more than the trunk's {n_blocks} blocks + 1"
                )
            self.split_at = n_blocks - (tail - 1)
            self.tail_modules: list[torch.nn.Module] = [
                *trunk.blocks[self.split_at :],
                trunk.conv_head,
                trunk.bn2,
            ]
        else:
            self.split_at = None
            self.tail_modules = []

    def prefix(self, x: torch.Tensor) -> torch.Tensor:
        t = self.trunk
        if self.split_at is None:
            return t(x)
        return t.blocks[: self.split_at](t.bn1(t.conv_stem(x)))

    def tail(self, maps: torch.Tensor) -> torch.Tensor:
        t = self.trunk
        if self.split_at is None:
            return maps
        x = t.blocks[self.split_at :](maps)
        return t.global_pool(t.bn2(t.conv_head(x))).flatten(1)

    def prefix_state(self) -> list[torch.Tensor]:
        """Every weight and buffer the prefix computes with (the cache key of its outputs)."""
        t = self.trunk
        if self.split_at is None:
            return list(t.state_dict().values())
        mods = [t.conv_stem, t.bn1, *t.blocks[: self.split_at]]
        return [v for m in mods for v in m.state_dict().values()]

    def tail_parameters(self) -> list[torch.nn.Parameter]:
        return [p for m in self.tail_modules for p in m.parameters()]


def _views_chunk(args: tuple[np.ndarray, int, int, bool, np.ndarray | None]) -> np.ndarray:
    images, size, seed, studio, backgrounds = args
    rng = np.random.default_rng(seed)
    return np.stack(
        [phone_view(img, size, rng, backgrounds=backgrounds, studio=studio) for img in images]
    )


def view_maps(
    split: TrunkSplit,
    to_input: Callable[[np.ndarray], torch.Tensor],
    plain: np.ndarray,
    sources: Sequence[np.ndarray | None],
    studio: Sequence[bool],
    views: Sequence[int],
    size: int,
    seed: int,
    backgrounds: np.ndarray | None,
    *,
    cache_dir: str | None,
    workers: int = 1,
    batch: int = 32,
) -> tuple[np.ndarray, np.ndarray]:
    """The prefix outputs (float16) of every view of every item, and ``(n, 1 + max views)``
    row indices into them (-1 = no such view). ``plain[i]`` is item i at the training size;
    ``sources[k]`` the larger originals of block k's items (or None: plain view only);
    blocks are contiguous in item order and ``views[k]`` phone views are made per item.

    Each block is cached on its own, keyed by the prefix's weights (not the tail's, which a
    continued run has trained), its images and its view settings: adding a catalog to a run,
    or continuing a run from its checkpoint, recomputes only what changed."""
    n = len(plain)
    max_views = 1 + max(views) if views else 1
    index = np.full((n, max_views), -1, dtype=np.int64)
    prefix_key = hashlib.sha1(f"{size}|{seed}|{split.split_at}".encode())
    # Weights count to float16 precision, the precision checkpoints store: a run continued
    # from its own checkpoint finds the maps its first part computed.
    for t in split.prefix_state():
        t = t.detach().cpu()
        t = t.half() if t.is_floating_point() else t
        prefix_key.update(t.contiguous().numpy().tobytes())
    bg_key = hashlib.sha1(
        np.ascontiguousarray(backgrounds).data if backgrounds is not None else b"none"
    ).hexdigest()[:12]
    parts: list[np.ndarray] = []
    first = offset = 0
    for k, (src, v, st) in enumerate(zip(sources, views, studio, strict=True)):
        count = len(src) if src is not None else 0
        v = v if src is not None else 0
        block = plain[first : first + count]
        key = prefix_key.copy()
        key.update(f"{k}|{count}|{v}|{st}|{bg_key if v and st else ''}".encode())
        key.update(np.ascontiguousarray(block[:: max(1, count // 256)]).data)
        items = np.arange(first, first + count)
        for j in range(1 + v):
            index[items, j] = offset + j * count + np.arange(count)
        maps = cached_array(
            cache_dir,
            f"views-{count * (1 + v)}-{key.hexdigest()[:20]}",
            lambda block=block, src=src, v=v, st=st, k=k: _block_maps(
                split,
                to_input,
                block,
                src,
                v,
                st,
                size,
                seed + 101 * k,
                backgrounds,
                workers,
                batch,
            ),
        )
        parts.append(maps)
        first += count
        offset += len(maps)
    if first != n:
        raise ValueError(f"the blocks cover {first} items, the plain images {n}")
    return (np.concatenate(parts) if len(parts) > 1 else parts[0]), index


@torch.no_grad()
def _block_maps(
    split: TrunkSplit,
    to_input: Callable[[np.ndarray], torch.Tensor],
    plain: np.ndarray,
    src: np.ndarray | None,
    views: int,
    studio: bool,
    size: int,
    seed: int,
    backgrounds: np.ndarray | None,
    workers: int,
    batch: int,
) -> np.ndarray:
    """One block's rows: its plain views, then ``views`` rounds of phone views."""
    count = len(plain)
    total = count * (1 + views)
    out: np.ndarray | None = None
    bar = tqdm(total=total, desc=f"frozen trunk, {count} items x {1 + views} views", unit="view")

    def put(rows: int, imgs: np.ndarray) -> None:
        nonlocal out
        x = to_input(imgs).contiguous(memory_format=torch.channels_last)
        f = split.prefix(x).to(torch.float16).contiguous().numpy()
        if out is None:
            out = np.empty((total, *f.shape[1:]), dtype=np.float16)
        out[rows : rows + len(f)] = f
        bar.update(len(f))

    for s in range(0, count, batch):
        put(s, plain[s : s + batch])
    tasks = []
    if src is not None:
        for j in range(views):
            for s in range(0, count, batch):
                seed_js = seed * 1000 + j * 7919 + s
                tasks.append(
                    ((1 + j) * count + s, (src[s : s + batch], size, seed_js, studio, backgrounds))
                )
    if workers > 1 and tasks:
        with ProcessPoolExecutor(max_workers=workers - 1) as pool:
            for (rows, _), imgs in zip(
                tasks, pool.map(_views_chunk, [a for _, a in tasks]), strict=True
            ):
                put(rows, imgs)
    else:
        for rows, a in tasks:
            put(rows, _views_chunk(a))
    bar.close()
    assert out is not None or total == 0
    return out if out is not None else np.zeros((0,), np.float16)


def sample_views(index: np.ndarray, items: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One random available view row per item."""
    rows = index[items]
    avail = (rows >= 0).sum(1)
    pick = (rng.random(len(items)) * avail).astype(np.int64)
    return rows[np.arange(len(items)), pick]


def describe(split: TrunkSplit) -> dict[str, Any]:
    return {
        "trunk_tail": split.tail_n,
        "trained_trunk_modules": [type(m).__name__ for m in split.tail_modules],
        "trained_trunk_parameters": int(sum(p.numel() for p in split.tail_parameters())),
    }
