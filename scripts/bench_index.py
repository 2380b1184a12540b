#!/usr/bin/env python
"""FAISS index benchmark: build time, memory, search latency (k=100) and recall@10 against exact
search, for the flat (exact) and IVF (approximate) kinds the project uses, at 100k and 1M random
unit vectors of dim 512 (ViT-B-32) and the starter model's dim.

Random unit vectors are the worst case for IVF (no cluster structure): recall on real CLIP
embeddings, which cluster strongly, is higher at the same nprobe. Two query sets are measured:
`random` (fresh random unit vectors) and `near` (stored vectors plus noise, cosine ~0.9 to their
source - what a photo of a catalog product looks like).

    python scripts/bench_index.py [--sizes 100000 1000000] [--dims 512 256] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from embeddings.index import IndexParams, VectorIndex  # noqa: E402

STARTER_CONFIG = ROOT / "embeddings" / "starter" / "shopclip-starter.json"


def starter_dim() -> int:
    try:
        return int(json.loads(STARTER_CONFIG.read_text())["embed_dim"])
    except (OSError, KeyError, ValueError):
        return 256


def unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 100_000):  # in chunks: float64 temporaries of 1M x 512 are 4 GB
        x = rng.standard_normal((min(100_000, n - start), dim), dtype=np.float32)
        out[start : start + len(x)] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def clustered(rng: np.random.Generator, n: int, dim: int, centres: int = 2000) -> np.ndarray:
    """Unit vectors around ``centres`` random directions (cosine ~0.75 to their centre): closer to
    real CLIP embeddings of a catalog (many near-identical products) than uniform noise."""
    c = unit(rng, centres, dim)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        x = c[rng.integers(0, centres, m)] + 0.9 * unit(rng, m, dim)
        out[start : start + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def near(rng: np.random.Generator, base: np.ndarray, n: int) -> np.ndarray:
    src = base[rng.integers(0, len(base), n)]
    noise = rng.standard_normal(src.shape, dtype=np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    q = src + 0.48 * noise  # cosine to the source ~0.9
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def latencies_ms(index: VectorIndex, queries: np.ndarray, k: int) -> tuple[float, float]:
    times = []
    for q in queries:
        t = time.perf_counter()
        index.search(q, k)
        times.append((time.perf_counter() - t) * 1000)
    return float(np.percentile(times, 50)), float(np.percentile(times, 95))


def recall_at_10(index: VectorIndex, queries: np.ndarray, truth: list[set[int]]) -> float:
    got = index.search(queries, 10)
    return float(
        np.mean([len({h.id for h in hits} & t) / 10 for hits, t in zip(got, truth, strict=True)])
    )


def run(n: int, dim: int, args, rng) -> list[dict]:
    print(f"\n== {n:,} {args.data} vectors, dim {dim} ==", flush=True)
    data = clustered(rng, n, dim) if args.data == "clustered" else unit(rng, n, dim)
    ids = np.arange(n, dtype=np.int64)
    queries = {"random": unit(rng, args.queries, dim), "near": near(rng, data, args.queries)}
    rows = []

    t = time.perf_counter()
    flat = VectorIndex(dim, IndexParams(kind="flat"))
    flat.add(ids, data)
    build = time.perf_counter() - t
    mem = len(flat.to_bytes()) / 2**20
    truth = {
        name: [{h.id for h in hits} for hits in flat.search(q, 10)] for name, q in queries.items()
    }
    p50, p95 = latencies_ms(flat, queries["random"][: args.latency_queries], args.k)
    rows.append(
        {
            "n": n,
            "dim": dim,
            "index": "flat",
            "build_s": build,
            "mem_mb": mem,
            "p50_ms": p50,
            "p95_ms": p95,
            "recall_random": 1.0,
            "recall_near": 1.0,
        }
    )
    print_row(rows[-1])

    nlist = args.nlist or int(4 * np.sqrt(n))  # the project's default (EMBEDDINGS_IVF_NLIST=0)
    t = time.perf_counter()
    ivf = VectorIndex(dim, IndexParams(kind="ivf", nlist=nlist, nprobe=8))
    sample = data[rng.choice(n, min(n, nlist * args.train_per_list), replace=False)]
    ivf.train(sample)
    ivf.add(ids, data)
    build = time.perf_counter() - t
    mem = len(ivf.to_bytes()) / 2**20
    del data
    for nprobe in args.nprobe:
        ivf._index.nprobe = nprobe  # benchmark only: the setting is EMBEDDINGS_IVF_NPROBE
        p50, p95 = latencies_ms(ivf, queries["random"][: args.latency_queries], args.k)
        rows.append(
            {
                "n": n,
                "dim": dim,
                "index": f"ivf{nlist},nprobe={nprobe}",
                "build_s": build,
                "mem_mb": mem,
                "p50_ms": p50,
                "p95_ms": p95,
                "recall_random": recall_at_10(ivf, queries["random"], truth["random"]),
                "recall_near": recall_at_10(ivf, queries["near"], truth["near"]),
            }
        )
        print_row(rows[-1])
    return rows


def print_row(r: dict) -> None:
    print(
        f"{r['n']:>9,} {r['dim']:>4} {r['index']:<24} build {r['build_s']:7.1f}s  mem {r['mem_mb']:7.0f} MB  "
        f"p50 {r['p50_ms']:7.2f} ms  p95 {r['p95_ms']:7.2f} ms  recall@10 random {r['recall_random']:.3f}  "
        f"near {r['recall_near']:.3f}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument(
        "--dims",
        type=int,
        nargs="+",
        default=None,
        help="Default: 512 and the starter model's dim.",
    )
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--queries", type=int, default=500, help="Queries for recall.")
    parser.add_argument("--latency-queries", type=int, default=200)
    parser.add_argument(
        "--nlist", type=int, default=0, help="IVF clusters (default 4*sqrt(n), as the project)."
    )
    parser.add_argument("--nprobe", type=int, nargs="+", default=[8, 32, 128])
    parser.add_argument(
        "--train-per-list", type=int, default=40, help="IVF training vectors per cluster."
    )
    parser.add_argument(
        "--data",
        choices=["random", "clustered"],
        default="random",
        help="random: uniform unit vectors (IVF's worst case); clustered: a mixture around 2000 directions.",
    )
    parser.add_argument("--quick", action="store_true", help="100k vectors only.")
    parser.add_argument("--json", type=Path, default=None, help="Also write the figures here.")
    args = parser.parse_args()
    if args.quick:
        args.sizes = [s for s in args.sizes if s <= 100_000] or [100_000]
    dims = args.dims or sorted({512, starter_dim()}, reverse=True)
    import faiss

    print(
        f"FAISS {faiss.__version__}, {faiss.omp_get_max_threads()} threads, {os.cpu_count()} CPUs; "
        f"k={args.k}, latency over {args.latency_queries} single queries, recall over {args.queries}"
    )
    rng = np.random.default_rng(0)
    rows = [r for n in args.sizes for dim in dims for r in run(n, dim, args, rng)]
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
