#!/usr/bin/env python
"""Benchmark data shared by the index-only and end-to-end benchmarks: real product vectors and
perturbed copies of them up to any catalog size, plus text and image queries.

How the catalog is made (what `make bench` means by "100k / 1M products"):

* Real vectors: every image of the shared myntra-small catalog (39,680 product photos, 60x80
  JPEG, read in place from /work/shared/datasets/myntra-small) embedded with the project's
  starter model (embeddings/starter/shopclip-starter.pt, 256-d, unit rows) by the project's own
  encoder (embeddings.encoder.ClipEncoder, as embeddings.runtime.get_encoder() builds it).
* Perturbed copies: rows past 39,680 are copies of uniformly drawn real rows with isotropic
  Gaussian noise added and the result re-normalised, v = normalize(real[src] + e),
  e ~ N(0, sigma^2 I), sigma = 0.0303 so that cos(v, real[src]) = 1/sqrt(1 + 256 sigma^2) ~ 0.90
  (the measured mean is printed by the CLI: 0.900). A cosine of 0.9 is what the starter model
  gives two photos of near-identical products (same cut, another shot or colourway): the copies
  keep the real catalog's cluster structure (dense clusters of shirts, shoes, ...) and so make
  the approximate indexes work about as hard as a large real catalog would, unlike uniform random
  vectors (no structure) or exact duplicates (trivial ties).
* Image queries: real rows plus smaller noise (cosine ~0.95 to the stored vector: a new photo of
  a product in the catalog), so a query is never exactly its own stored vector.
* Text queries: "<colour> <type>" strings ("navy blue shirts") from the most common
  (baseColour, articleType) pairs of the manifest, embedded by the starter's text tower; a
  result is relevant when its source product has that articleType and baseColour.

Everything is cached under var/bench/ (git-ignored), keyed by the model id (name + checkpoint
hash), written atomically; synthetic sets are memory-mapped on reuse.

    python scripts/bench_data.py --sizes 100000 1000000   # prepare and cache everything
"""

from __future__ import annotations

import argparse
import csv
import functools
import hashlib
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# Read in place from the shared folder beside the checkout (BENCH_DATASET to point elsewhere).
DATASET = Path(
    os.environ.get("BENCH_DATASET", ROOT.parent / "shared" / "datasets" / "myntra-small")
)
CACHE_DIR = ROOT / "var" / "bench"
MODEL_NAME = "shopclip-starter"
CHECKPOINT = ROOT / "embeddings" / "starter" / "shopclip-starter.pt"

DIM = 256
# Per-coordinate noise for a target cosine c on d dims: |e|^2 ~ d sigma^2 and e is almost
# orthogonal to the unit vector, so cos = 1/sqrt(1 + d sigma^2) => sigma = sqrt((1/c^2 - 1)/d).
COPY_COSINE = 0.90  # a perturbed catalog copy vs its source: a near-duplicate product photo
QUERY_COSINE = 0.95  # an image query vs its product's stored vector: a new photo of it
CHUNK = 65_536  # rows per generation chunk (64k x 256 float32 = 64 MB)
N_TEXT_QUERIES = 80

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def sigma_for_cosine(cosine: float, dim: int = DIM) -> float:
    return float(np.sqrt((1.0 / cosine**2 - 1.0) / dim))


# -- catalog -----------------------------------------------------------------------------------
@functools.cache
def _rows() -> tuple[dict, ...]:
    with open(DATASET / "manifest.csv", newline="") as fh:
        return tuple(csv.DictReader(fh))


def catalog_rows() -> list[dict]:
    """The manifest rows, in manifest order (row i of real_vectors() is row i here)."""
    return list(_rows())


@functools.cache
def _column(name: str) -> np.ndarray:
    return np.array([r[name] for r in _rows()], dtype=object)


def category_of(rows) -> np.ndarray:
    """articleType of each catalog row index (pass a synthetic set's ``src`` for its rows)."""
    return _column("articleType")[np.asarray(rows, dtype=np.int64)]


def colour_of(rows) -> np.ndarray:
    """baseColour of each catalog row index."""
    return _column("baseColour")[np.asarray(rows, dtype=np.int64)]


@functools.cache
def _prices() -> np.ndarray:
    cents = [
        500 + int.from_bytes(hashlib.sha1(r["product_id"].encode()).digest()[:4], "big") % 19_501
        for r in _rows()
    ]
    return np.asarray(cents, dtype=np.int64)


def price_of(src) -> np.ndarray:
    """Deterministic price (5.00-200.00, two decimals) of each catalog row index, from a hash of
    its product_id: a synthetic copy costs what its source costs."""
    return _prices()[np.asarray(src, dtype=np.int64)] / 100.0


# -- encoder and cache -------------------------------------------------------------------------
@functools.cache
def encoder():
    """The project's encoder for the starter model, built as embeddings.runtime.get_encoder()
    does with the default settings (no Django needed)."""
    import torch

    from embeddings.encoder import ClipEncoder

    torch.set_num_threads(int(os.environ.get("BENCH_TORCH_THREADS", "2")))
    return ClipEncoder(MODEL_NAME, str(CHECKPOINT), device="cpu", batch_size=128)


@functools.cache
def model_hash() -> str:
    """Short hash of the model id (name + checkpoint content hash): the cache key."""
    return hashlib.sha1(encoder().model_id.encode()).hexdigest()[:12]


def cache_path(name: str) -> Path:
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    return CACHE_DIR / name


def save_npy(path: Path, array: np.ndarray) -> None:
    """np.save, atomically (temporary file in the same folder, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.save(fh, array)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _unit_rows(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


# -- real vectors ------------------------------------------------------------------------------
@functools.cache
def real_vectors() -> np.ndarray:
    """(39680, 256) float32 unit rows: the starter model's image vector of every catalog photo;
    row i is catalog_rows()[i]. Embedded once (a few minutes on 2 cores) and cached."""
    path = cache_path(f"real-{model_hash()}.npy")
    if path.is_file():
        return np.load(path)
    from tqdm import tqdm

    from embeddings.encoder import load_image

    rows = _rows()
    enc = encoder()
    out = np.empty((len(rows), enc.dim), dtype=np.float32)
    batch = 512
    t0 = time.perf_counter()
    with tqdm(total=len(rows), desc="embedding catalog photos", unit="img", file=sys.stdout) as bar:
        for start in range(0, len(rows), batch):
            chunk = rows[start : start + batch]
            images = [load_image(DATASET / r["path"]) for r in chunk]
            out[start : start + len(chunk)] = enc.encode_images(images)
            bar.update(len(chunk))
    print(f"embedded {len(rows):,} photos in {time.perf_counter() - t0:.0f} s -> {path}")
    save_npy(path, out)
    return out


# -- synthetic catalogs ------------------------------------------------------------------------
def synthetic(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(vectors (n, 256) float32 unit rows, src (n,) int64 catalog row of each).

    The first min(n, 39680) rows are the real vectors; the rest are normalize(real[src] + noise)
    with src drawn uniformly and the noise sized for cosine ~0.90 to the source. Cached under
    var/bench/ and memory-mapped (read-only) on reuse."""
    real = real_vectors()
    stem = f"synthetic-{n}-{seed}-{model_hash()}"
    vec_path, src_path = cache_path(stem + ".npy"), cache_path(stem + "-src.npy")
    if vec_path.is_file() and src_path.is_file():
        return np.load(vec_path, mmap_mode="r"), np.load(src_path)

    from tqdm import tqdm

    n_real = min(n, len(real))
    rng = np.random.default_rng(seed)
    src = np.concatenate(
        [np.arange(n_real, dtype=np.int64), rng.integers(0, len(real), n - n_real, dtype=np.int64)]
    )
    sigma = np.float32(sigma_for_cosine(COPY_COSINE, real.shape[1]))
    fd, tmp = tempfile.mkstemp(dir=vec_path.parent, prefix=vec_path.name + ".", suffix=".tmp")
    os.close(fd)
    try:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, real.shape[1]))
        out[:n_real] = real[:n_real]
        with tqdm(
            total=n - n_real,
            desc=f"synthetic {n:,}",
            unit="vec",
            file=sys.stdout,
            disable=n <= n_real,
        ) as bar:
            for start in range(n_real, n, CHUNK):
                stop = min(n, start + CHUNK)
                x = rng.standard_normal((stop - start, real.shape[1]), dtype=np.float32)
                x *= sigma
                x += real[src[start:stop]]
                out[start:stop] = _unit_rows(x)
                bar.update(stop - start)
        out.flush()
        del out
        save_npy(src_path, src)
        os.chmod(tmp, 0o644)
        os.replace(tmp, vec_path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return np.load(vec_path, mmap_mode="r"), src


def copy_cosines(vectors: np.ndarray, src: np.ndarray, sample: int = 20_000) -> np.ndarray:
    """Cosine of perturbed copies to their source (a sample), to check/report the noise level."""
    real = real_vectors()
    idx = np.arange(len(real), len(vectors))
    if len(idx) == 0:
        return np.ones(0, dtype=np.float32)
    idx = idx[np.linspace(0, len(idx) - 1, min(sample, len(idx))).astype(np.int64)]
    return np.einsum("ij,ij->i", np.asarray(vectors[idx]), real[src[idx]])


# -- queries -----------------------------------------------------------------------------------
@functools.cache
def _text_queries() -> tuple[tuple[str, str, str], ...]:
    pairs = Counter(
        (r["baseColour"], r["articleType"])
        for r in _rows()
        if r["baseColour"].strip() and r["articleType"].strip() and r["baseColour"] != "NA"
    )
    return tuple(
        (f"{colour} {kind}".lower(), colour, kind)
        for (colour, kind), _ in pairs.most_common(N_TEXT_QUERIES)
    )


def text_queries() -> list[tuple[str, str, str]]:
    """(query, baseColour, articleType) for the 80 most common (colour, type) pairs of the
    catalog, most common first, e.g. ("black tshirts", "Black", "Tshirts"). A product is relevant
    to a query when it has that articleType and baseColour."""
    return list(_text_queries())


@functools.cache
def text_query_vectors() -> np.ndarray:
    """(len(text_queries()), 256) float32 unit rows: the starter's text vector of each query."""
    texts = [q for q, _, _ in _text_queries()]
    key = hashlib.sha1("\n".join(texts).encode()).hexdigest()[:8]
    path = cache_path(f"text-queries-{key}-{model_hash()}.npy")
    if path.is_file():
        return np.load(path)
    vectors = encoder().encode_texts(texts)
    save_npy(path, vectors)
    return vectors


def image_query_rows(m: int, seed: int = 0) -> np.ndarray:
    """m distinct catalog row indices (real photos) used as image queries."""
    rng = np.random.default_rng([seed, 1])
    return np.sort(rng.choice(len(_rows()), size=m, replace=False)).astype(np.int64)


def image_query_vectors(m: int, seed: int = 0) -> np.ndarray:
    """(m, 256) float32 unit rows: real_vectors()[image_query_rows(m, seed)] plus noise for
    cosine ~0.95 (a new photo of that product), so a query is not its own stored vector."""
    rng = np.random.default_rng([seed, 2])
    base = real_vectors()[image_query_rows(m, seed)]
    noise = rng.standard_normal(base.shape, dtype=np.float32)
    noise *= np.float32(sigma_for_cosine(QUERY_COSINE, base.shape[1]))
    return _unit_rows(base + noise)


# -- CLI ---------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    print(f"catalog: {len(_rows()):,} products from {DATASET}")
    print(f"model: {encoder().model_id} (cache key {model_hash()}, cache {CACHE_DIR})")
    real = real_vectors()
    print(f"real vectors: {real.shape} {real.dtype}")
    tq = text_query_vectors()
    print(f"text queries: {len(tq)} (e.g. {', '.join(q for q, _, _ in text_queries()[:4])})")
    iq = image_query_vectors(200, args.seed)
    cos_q = np.einsum("ij,ij->i", iq, real[image_query_rows(200, args.seed)])
    print(f"image queries: 200, cosine to their product's stored vector mean {cos_q.mean():.3f}")
    for n in args.sizes:
        t = time.perf_counter()
        vectors, src = synthetic(n, args.seed)
        cos = copy_cosines(vectors, src)
        note = (
            f"copies' cosine to source mean {cos.mean():.3f} (p5 {np.percentile(cos, 5):.3f}, "
            f"p95 {np.percentile(cos, 95):.3f})"
            if len(cos)
            else "real vectors only"
        )
        print(f"synthetic {n:,}: {vectors.shape}, {time.perf_counter() - t:.1f} s; {note}")


if __name__ == "__main__":
    main()
