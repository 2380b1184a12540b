#!/usr/bin/env python
"""Lexical half of hybrid search on PostgreSQL at catalog scale: latency of
``selectors.product_lexical_ranking`` (title/SKU word match + BM25 over the candidates) with the
trigram indexes of migration catalog 0002, and without them (a sequential scan).

It creates a throw-away database next to --pg-url's (dropped afterwards), migrates it, copies
--products rows whose titles are real product titles from ../shared/datasets/myntra-small
(read in place, repeated to reach the count; SKUs unique), then times each query.

    python scripts/bench_lexical.py [--pg-url postgres://postgres@127.0.0.1:5432/postgres]
                                    [--products 1000000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

QUERIES = [
    ("giraffe", "a word no title has"),
    ("TS-0123456", "a SKU lookup"),
    ("polo", "a common type word"),
    ("puma", "a brand"),
    ("navy blue shirt", "three common words"),
    ("kurta", "a common type word"),
]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("PG_URL", "postgres://postgres@127.0.0.1:5432/postgres"),
        help="a PostgreSQL server URL whose user may create databases",
    )
    parser.add_argument(
        "--dataset", type=Path, default=ROOT.parent / "shared" / "datasets" / "myntra-small"
    )
    parser.add_argument("--products", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="100,000 products, 3 repeats")
    args = parser.parse_args()
    if args.quick:
        args.products, args.repeats = min(args.products, 100_000), min(args.repeats, 3)
    manifest = args.dataset / "manifest.csv"
    if not manifest.is_file():
        sys.exit(f"{manifest} not found; pass --dataset DIR (a folder with manifest.csv).")

    import psycopg
    from tqdm import tqdm

    bench_db = "shopsearch_bench_lexical"
    base = args.pg_url.rsplit("/", 1)[0]
    try:
        admin = psycopg.connect(args.pg_url, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        sys.exit(
            f"Cannot reach PostgreSQL at {args.pg_url} ({exc}); start it (make services) or pass --pg-url."
        )
    admin.execute(f"DROP DATABASE IF EXISTS {bench_db}")
    admin.execute(f"CREATE DATABASE {bench_db}")
    try:
        os.environ.update(
            DJANGO_SETTINGS_MODULE="searchsite.settings",
            DATABASE_URL=f"{base}/{bench_db}",
            CELERY_BROKER_URL="",
            LOG_LEVEL="WARNING",
        )
        import django

        django.setup()
        from django.core.management import call_command
        from django.db import connection

        from catalog.selectors import product_queryset
        from embeddings.selectors import product_lexical_ranking

        call_command("migrate", verbosity=0)
        with manifest.open(newline="") as fh:
            titles = [row["title"] for row in csv.DictReader(fh) if row.get("title")]
        with (
            connection.cursor() as cur,
            cur.copy(
                "COPY catalog_product (title, description, sku, is_active, created_at, updated_at) "
                "FROM STDIN"
            ) as copy,
        ):
            for i in tqdm(range(args.products), desc="Copying products", unit="row"):
                copy.write_row((titles[i % len(titles)], "", f"TS-{i:07d}", True, "now", "now"))
        with connection.cursor() as cur:
            cur.execute("ANALYZE catalog_product")

        def timed(label: str) -> dict[str, float]:
            out = {}
            products = product_queryset()
            for query, _ in QUERIES:
                product_lexical_ranking(text=query, products=products)  # warm the cache
                times = []
                for _ in range(args.repeats):
                    t = time.perf_counter()
                    product_lexical_ranking(text=query, products=products)
                    times.append((time.perf_counter() - t) * 1000)
                out[query] = statistics.median(times)
            return out

        with_index = timed("trigram indexes")
        with connection.cursor() as cur:
            cur.execute("DROP INDEX catalog_product_title_trgm, catalog_product_sku_trgm")
            cur.execute("ANALYZE catalog_product")
        without = timed("sequential scan")
        connection.close()
    finally:
        admin.execute(f"DROP DATABASE IF EXISTS {bench_db} WITH (FORCE)")
        admin.close()

    print(
        f"\nLexical ranking on PostgreSQL, {args.products:,} products, median of {args.repeats} (ms):"
    )
    print(f"{'query':<18} {'what':<20} {'trigram index':>14} {'scan':>10}")
    for query, what in QUERIES:
        print(f"{query:<18} {what:<20} {with_index[query]:>14.1f} {without[query]:>10.1f}")


if __name__ == "__main__":
    main()
