#!/usr/bin/env python
"""Embedding benchmark on CPU: image throughput (images/s, batched as the import and the
workers do) and text-query latency (one query at a time, as a search request does).

The model: the trained starter (embeddings/starter/shopclip-starter.pt) when it exists, else a
random-init ViT-B-32 (same speed as the pretrained one; say which in the figures). Images come
from ../shared/datasets/myntra-224 when present, else are generated.

    python scripts/bench_embedding.py [--model NAME --pretrained PATH_OR_TAG] [--images DIR] [--n 256]
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from embeddings.encoder import ClipEncoder, load_image  # noqa: E402

STARTER = ROOT / "embeddings" / "starter" / "shopclip-starter.pt"
QUERIES = [
    "red t-shirt",
    "navy blue shirt",
    "giraffe shirt",
    "black leather handbag",
    "white sneakers",
    "striped polo",
    "floral summer dress",
    "denim jeans",
    "sports watch",
    "kids shoes",
]


def default_model() -> tuple[str, str | None, str]:
    if STARTER.is_file():
        return "shopclip-starter", str(STARTER), "trained starter model"
    return "ViT-B-32", None, "random-init ViT-B-32 (no starter checkpoint yet)"


def load_images(folder: Path | None, n: int):
    if folder and (folder / "manifest.csv").is_file():
        with (folder / "manifest.csv").open() as fh:
            paths = [
                folder / row["path"] for _, row in zip(range(n), csv.DictReader(fh), strict=False)
            ]
        return [load_image(p) for p in paths], f"{len(paths)} images from {folder}"
    from embeddings.demo import demo_image, demo_products

    products = demo_products(min(n, 300))
    images = [demo_image(products[i % len(products)]) for i in range(n)]
    return images, f"{n} generated 224x224 images"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=None)
    parser.add_argument("--pretrained", default=None)
    parser.add_argument(
        "--images", type=Path, default=ROOT.parent / "shared" / "datasets" / "myntra-224"
    )
    parser.add_argument("--n", type=int, default=256, help="Images to embed.")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--text-queries", type=int, default=100)
    parser.add_argument("--quick", action="store_true", help="64 images, 30 text queries.")
    parser.add_argument(
        "--threads",
        type=int,
        default=int(os.environ.get("EMBEDDINGS_TORCH_THREADS", "1")),
        help="torch threads (default: EMBEDDINGS_TORCH_THREADS or 1, as the app uses; 0 = all cores)",
    )
    args = parser.parse_args()
    if args.quick:
        args.n, args.text_queries = min(args.n, 64), min(args.text_queries, 30)
    if args.model:
        name, pretrained, label = (
            args.model,
            args.pretrained,
            f"{args.model} / {args.pretrained or 'random-init'}",
        )
    else:
        name, pretrained, label = default_model()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"Model: {label}; torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs"
    )
    images, source = load_images(args.images, args.n)
    print(f"Images: {source}")

    for batch_size in args.batch_sizes:
        encoder = ClipEncoder(name, pretrained, batch_size=batch_size)
        t = time.perf_counter()
        encoder.encode_images(images[:2])
        load_s = time.perf_counter() - t
        count = len(images) if batch_size > 1 else min(len(images), 64)
        t = time.perf_counter()
        encoder.encode_images(images[:count])
        elapsed = time.perf_counter() - t
        print(
            f"image embedding, batch {batch_size:>3}: {count / elapsed:7.1f} images/s "
            f"({count} images in {elapsed:.1f}s; model load {load_s:.1f}s; dim {encoder.dim})",
            flush=True,
        )

    texts = [f"{q} {i}" for i in range(args.text_queries // len(QUERIES) + 1) for q in QUERIES][
        : args.text_queries
    ]
    encoder.encode_texts(["warm up"])
    times = []
    for text in texts:  # distinct strings: no cache in play
        t = time.perf_counter()
        encoder.encode_texts([text])
        times.append((time.perf_counter() - t) * 1000)
    print(
        f"text query encoding: p50 {np.percentile(times, 50):.1f} ms, p95 {np.percentile(times, 95):.1f} ms "
        f"over {len(times)} queries"
    )


if __name__ == "__main__":
    main()
