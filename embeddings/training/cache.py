"""Decode every training image once into one uint8 array, cached on disk.

Decoding JPEGs dominates a CPU epoch at small resolutions; a ``(n, size, size, 3)`` uint8
array decodes once (in worker processes) and is memory-mapped by later runs. Images are
squashed to a square with bicubic resampling, which is what the open_clip eval transform
(resize shortest side + centre crop) does to the square 224 px catalog photos, so training
and evaluation see the same pixels.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

DEFAULT_CACHE_DIR = (
    Path(os.environ.get("SHOPSEARCH_IMAGE_CACHE", tempfile.gettempdir())) / "shopsearch-image-cache"
)


def decode_square(path: str, size: int, crop: bool = False) -> np.ndarray:
    """One image as a ``(size, size, 3)`` uint8 RGB array (squashed, bicubic; ``crop``: the
    shorter side resized to ``size`` and the centre cropped, as the eval transform does - for
    photos that are not square, such as shoppers' phone photos).

    Unreadable files become mid-grey so one bad file does not stop a long cache build; the
    caller counts them through :func:`build_image_cache`'s return value.
    """
    from embeddings.encoder import ImageDecodeError, load_image

    try:
        img = load_image(path)
    except ImageDecodeError:
        return np.full((size, size, 3), 128, dtype=np.uint8)
    if crop:
        w, h = img.size
        scale = size / min(w, h)
        img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BICUBIC)
        w, h = img.size
        left, top = (w - size) // 2, (h - size) // 2
        return np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.uint8)
    return np.asarray(img.resize((size, size), Image.BICUBIC), dtype=np.uint8)


def _decode_chunk(args: tuple[list[str], int, bool]) -> np.ndarray:
    paths, size, crop = args
    return (
        np.stack([decode_square(p, size, crop) for p in paths])
        if paths
        else np.zeros((0, size, size, 3), np.uint8)
    )


def cache_key(paths: Sequence[str], size: int) -> str:
    """Content key of a cache file: the ordered image paths, their sizes/mtimes and the size."""
    digest = hashlib.sha1(str(size).encode())
    for p in paths:
        try:
            st = os.stat(p)
            digest.update(f"{p}|{st.st_size}|{int(st.st_mtime)}\n".encode())
        except OSError:
            digest.update(f"{p}|missing\n".encode())
    return digest.hexdigest()[:20]


def build_image_cache(
    paths: Sequence[str],
    size: int,
    *,
    cache_dir: str | os.PathLike[str] | None = DEFAULT_CACHE_DIR,
    workers: int = 2,
    chunk: int = 256,
    desc: str = "decoding images",
    crop: bool = False,
) -> np.ndarray:
    """Returns the ``(len(paths), size, size, 3)`` uint8 array of the images, in order.

    With ``cache_dir`` the array is saved as ``<key>.npy`` (written atomically) and later calls
    with the same paths memory-map it instead of decoding; ``cache_dir=None`` never touches disk.
    """
    cache_file: Path | None = None
    if cache_dir is not None:
        cache_dir = Path(cache_dir)
        cache_dir.mkdir(parents=True, exist_ok=True)
        kind = "crop" if crop else "img"
        cache_file = cache_dir / f"{kind}{size}-{len(paths)}-{cache_key(paths, size)}.npy"
        if cache_file.is_file():
            return np.load(cache_file, mmap_mode="r")
    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    jobs = [(list(paths[i : i + chunk]), size, crop) for i in range(0, len(paths), chunk)]
    bar = tqdm(total=len(paths), desc=desc, unit="img")
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for i, arr in enumerate(pool.map(_decode_chunk, jobs)):
                out[i * chunk : i * chunk + len(arr)] = arr
                bar.update(len(arr))
    else:
        for i, job in enumerate(jobs):
            arr = _decode_chunk(job)
            out[i * chunk : i * chunk + len(arr)] = arr
            bar.update(len(arr))
    bar.close()
    if cache_file is not None:
        _save_atomic(cache_file, out)
    return out


def _save_atomic(cache_file: Path, array: np.ndarray) -> None:
    """``np.save`` to a temporary file beside ``cache_file``, then renamed over it, so a reader
    never sees half a file."""
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=cache_file.name, suffix=".tmp", dir=cache_file.parent)
    with os.fdopen(fd, "wb") as fh:
        np.save(fh, array)
    os.replace(tmp, cache_file)


def cached_array(
    cache_dir: str | os.PathLike[str] | None, name: str, build: Callable[[], np.ndarray]
) -> np.ndarray:
    """``build()``'s array, saved as ``<cache_dir>/<name>.npy`` (atomically) and loaded from
    there by later calls with the same name; the name must carry a key of everything the array
    depends on. ``cache_dir=None`` always builds."""
    if cache_dir is None:
        return build()
    cache_file = Path(cache_dir) / f"{name}.npy"
    if cache_file.is_file():
        return np.load(cache_file)
    out = build()
    _save_atomic(cache_file, out)
    return out
