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
    blocks are contiguous in item order and ``views[k]`` phone views are made per item."""
    n = len(plain)
    max_views = 1 + max(views) if views else 1
    index = np.full((n, max_views), -1, dtype=np.int64)
    index[:, 0] = np.arange(n)
    jobs: list[tuple[int, int, int, bool]] = []  # (first item, count, views, studio)
    start = 0
    for src, v, st in zip(sources, views, studio, strict=True):
        count = len(src) if src is not None else 0
        jobs.append((start, count, v if src is not None else 0, st))
        start += count if src is not None else 0
    total_views = n + sum(c * v for _, c, v, _ in jobs)
    key = hashlib.sha1(f"{size}|{seed}|{views}|{studio}|{plain.shape}|{split.split_at}".encode())
    for t in split.trunk.state_dict().values():
        key.update(t.detach().cpu().contiguous().numpy().tobytes())
    key.update(np.ascontiguousarray(plain[:: max(1, n // 512)]).data)

    row = n
    for first, count, v, _ in jobs:
        for j in range(v):
            index[first : first + count, 1 + j] = np.arange(row, row + count)
            row += count

    @torch.no_grad()
    def build() -> np.ndarray:
        out: np.ndarray | None = None
        bar = tqdm(total=total_views, desc="frozen trunk, every view", unit="view")

        def put(rows: int, imgs: np.ndarray) -> None:
            nonlocal out
            x = to_input(imgs).contiguous(memory_format=torch.channels_last)
            f = split.prefix(x).to(torch.float16).contiguous().numpy()
            if out is None:
                out = np.empty((total_views, *f.shape[1:]), dtype=np.float16)
            out[rows : rows + len(f)] = f
            bar.update(len(f))

        for s in range(0, n, batch):
            put(s, plain[s : s + batch])
        pos = n
        tasks = []
        for (_first, count, v, st), src in zip(jobs, sources, strict=True):
            for j in range(v):
                for s in range(0, count, batch):
                    tasks.append(
                        (
                            pos + s,
                            (src[s : s + batch], size, seed * 1000 + j * 7919 + s, st, backgrounds),
                        )
                    )
                pos += count
        if workers > 1:
            with ProcessPoolExecutor(max_workers=workers - 1) as pool:
                for (rows, _), imgs in zip(
                    tasks, pool.map(_views_chunk, [a for _, a in tasks]), strict=True
                ):
                    put(rows, imgs)
        else:
            for rows, a in tasks:
                put(rows, _views_chunk(a))
        bar.close()
        assert out is not None
        return out

    maps = cached_array(cache_dir, f"views-{total_views}-{key.hexdigest()[:20]}", build)
    return maps, index


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
