#!/usr/bin/env python
"""End-to-end search API latency: GET /api/v1/search/?q=... (text) and POST /api/v1/search/
(image upload) through Django's test client - URL routing, query encoding, FAISS, the product
queries and JSON rendering - over a catalog of a few thousand real products.

The catalog is imported from ../shared/datasets/myntra-small (read in place, never copied) into
a throw-away SQLite database and media folder under --workdir. The model: the trained starter
when embeddings/starter/shopclip-starter.pt exists, else the starter architecture with random
weights (the same speed; the ranking is meaningless, the latency is not).

    python scripts/bench_search_api.py [--dataset DIR] [--limit 3000] [--queries 100]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
STARTER = ROOT / "embeddings" / "starter" / "shopclip-starter.pt"

TEXTS = [
    "red t-shirt",
    "navy blue shirt",
    "black watch",
    "white sports shoes",
    "leather handbag",
    "blue jeans",
    "floral dress",
    "striped polo",
    "kids sandals",
    "sunglasses",
    "green kurta",
    "grey backpack",
]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--dataset", type=Path, default=ROOT.parent / "shared" / "datasets" / "myntra-small"
    )
    parser.add_argument("--limit", type=int, default=3000, help="Products to import.")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--workdir", type=Path, default=None, help="Default: a temporary folder.")
    parser.add_argument("--quick", action="store_true", help="1000 products, 40 queries.")
    args = parser.parse_args()
    if args.quick:
        args.limit, args.queries = min(args.limit, 1000), min(args.queries, 40)
    if not (args.dataset / "manifest.csv").is_file():
        sys.exit(
            f"{args.dataset}/manifest.csv not found; pass --dataset DIR (a folder with manifest.csv)."
        )

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-search-"))
    workdir.mkdir(parents=True, exist_ok=True)
    os.environ.update(
        DJANGO_SETTINGS_MODULE="searchsite.settings",
        DATA_DIR=str(workdir),
        DEBUG="false",
        DATABASE_URL=f"sqlite:///{workdir / 'bench.sqlite3'}",
        CELERY_BROKER_URL="",
        LOG_LEVEL="WARNING",
    )
    os.environ.pop("CELERY_TASK_ALWAYS_EAGER", None)
    if STARTER.is_file():
        os.environ.update(EMBEDDINGS_MODEL="shopclip-starter", EMBEDDINGS_PRETRAINED=str(STARTER))
        label = "trained starter model"
    else:
        os.environ.update(EMBEDDINGS_MODEL="shopclip-starter", EMBEDDINGS_PRETRAINED="")
        label = "starter architecture, random weights (no starter checkpoint yet)"
    import django

    django.setup()
    from django.core.management import call_command
    from django.test import Client
    from django.test.utils import setup_test_environment

    from embeddings import runtime, selectors
    from embeddings.bulk_import import ImportColumns, catalog_import, images_missing_embedding
    from embeddings.services import images_embed_batched

    setup_test_environment()  # Client needs 'testserver' in ALLOWED_HOSTS
    call_command("migrate", verbosity=0)
    t = time.perf_counter()
    report = catalog_import(
        csv_path=args.dataset / "manifest.csv",
        columns=ImportColumns(description=("baseColour",)),
        limit=args.limit,
        batch_size=64,
    )
    # A reused --workdir may hold vectors of an older model: embed what this model lacks.
    images_embed_batched(
        image_ids=images_missing_embedding(model_id=runtime.get_encoder().model_id)
    )
    import_s = time.perf_counter() - t
    live = runtime.get_live_index()
    print(
        f"Model: {label}. Catalog: {report.created} new / {report.unchanged} unchanged products from "
        f"{args.dataset} in {import_s:.0f}s; index {len(live)} vectors ({live.params.kind}); workdir {workdir}"
    )

    client = Client()
    print(
        f"A search for 'red t-shirt' finds {client.get('/api/v1/search/', {'q': 'red t-shirt'}).json()['count']} products"
    )
    texts = [f"{t} {i}" for i in range(args.queries // len(TEXTS) + 1) for t in TEXTS][
        : args.queries
    ]
    client.get("/api/v1/search/", {"q": "warm up"})

    def timed(fn) -> float:
        t = time.perf_counter()
        response = fn()
        assert response.status_code == 200, response.content[:300]
        return (time.perf_counter() - t) * 1000

    def report_line(name: str, times: list[float]) -> None:
        print(
            f"{name:<44} p50 {np.percentile(times, 50):7.1f} ms   p95 {np.percentile(times, 95):7.1f} ms   "
            f"({len(times)} requests)",
            flush=True,
        )

    selectors.clear_query_cache()
    report_line(
        "GET search/?q= (new text, encoded)",
        [timed(lambda q=q: client.get("/api/v1/search/", {"q": q})) for q in texts],
    )
    report_line(
        "GET search/?q= (repeated text, cached vector)",
        [timed(lambda q=q: client.get("/api/v1/search/", {"q": q})) for q in texts],
    )
    report_line(
        "GET search/?q=&category=tshirts (filtered)",
        [
            timed(lambda q=q: client.get("/api/v1/search/", {"q": q, "category": "tshirts"}))
            for q in texts
        ],
    )
    import csv as _csv

    with (args.dataset / "manifest.csv").open() as fh:
        paths = [
            args.dataset / row["path"]
            for _, row in zip(range(args.queries), _csv.DictReader(fh), strict=False)
        ]
    blobs = [p.read_bytes() for p in paths]

    def image_search(data: bytes):
        from django.core.files.uploadedfile import SimpleUploadedFile

        return client.post(
            "/api/v1/search/",
            {"image": SimpleUploadedFile("q.jpg", data, content_type="image/jpeg")},
        )

    report_line("POST search/ (image upload)", [timed(lambda d=d: image_search(d)) for d in blobs])


if __name__ == "__main__":
    main()
