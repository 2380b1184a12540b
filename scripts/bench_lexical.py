#!/usr/bin/env python
"""Word search at catalog scale: the machine's full-text index (tantivy,
``embeddings/engine/fulltext.py``) over --products products in PostgreSQL.

It creates a throw-away database next to --pg-url's (dropped afterwards), migrates it, copies
--products rows whose titles are real product titles from ../shared/datasets/myntra-small (read
in place, repeated to reach the count; SKUs unique; category = the row's subCategory; a price on
19 of 20; 1 in 100 inactive), then measures:

- the index build from the database (``FullText.rebuild``): time and size on disk;
- one writer sync that re-indexes 1,000 changed products (commit + reload);
- query latency p50/p99 of ``FullText.search`` (limit 100, what hybrid search asks for) for a
  fixed list of queries and for "colour type" queries, without a filter and with a category or
  a price filter;
- "colour type" precision@10: one query "<baseColour> <articleType>" (lower-cased) per most
  common pair in the manifest; a result is relevant when its source row has that articleType and
  baseColour.

    python scripts/bench_lexical.py [--pg-url postgres://postgres@127.0.0.1:5432/postgres]
                                    [--products 1000000] [--repeats 5] [--pairs 50]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

QUERIES = [
    ("giraffe", "a word no title has"),
    ("TS-0012345", "a SKU lookup"),
    ("polo", "a common type word"),
    ("puma", "a brand"),
    ("navy blue shirt", "three common words"),
    ("kurta", "a common type word"),
    ("shirt", "the commonest type word"),
    ("men black casual shoes", "four common words"),
]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def folder_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


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
    parser.add_argument("--pairs", type=int, default=50, help="colour type queries")
    parser.add_argument("--quick", action="store_true", help="100,000 products, 3 repeats")
    args = parser.parse_args()
    if args.quick:
        args.products, args.repeats = min(args.products, 100_000), min(args.repeats, 3)
    manifest = args.dataset / "manifest.csv"
    if not manifest.is_file():
        sys.exit(f"{manifest} not found; pass --dataset DIR (a folder with manifest.csv).")
    with manifest.open(newline="") as fh:
        rows = [row for row in csv.DictReader(fh) if row.get("title")]

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
        from django.utils.text import slugify

        from catalog.models import Category, Product
        from embeddings.engine.columns import Filter
        from embeddings.engine.fulltext import FullText, product_docs
        from embeddings.models import IndexChange

        call_command("migrate", verbosity=0)
        names = sorted({r["subCategory"] for r in rows if r["subCategory"]})
        Category.objects.bulk_create(Category(name=n, slug=slugify(n)) for n in names)
        category_ids = dict(Category.objects.values_list("name", "id"))
        with (
            connection.cursor() as cur,
            cur.copy(
                "COPY catalog_product (title, description, sku, price, category_id, is_active, "
                "created_at, updated_at) FROM STDIN"
            ) as copy,
        ):
            for i in tqdm(range(args.products), desc="Copying products", unit="row"):
                r = rows[i % len(rows)]
                price = None if i % 20 == 0 else f"{(i * 37) % 1000}.99"
                category = category_ids.get(r["subCategory"])
                active = i % 100 != 1
                copy.write_row(
                    (r["title"], "", f"TS-{i:07d}", price, category, active, "now", "now")
                )
        with connection.cursor() as cur:
            cur.execute("ANALYZE catalog_product")
        first_id = Product.objects.order_by("id").values_list("id", flat=True).first()

        def source(pid: int) -> dict:
            return rows[(pid - first_id) % len(rows)]

        t = time.perf_counter()
        read = sum(1 for _ in product_docs())
        read_s = time.perf_counter() - t

        tmp = Path(tempfile.mkdtemp(prefix="bench-fulltext-"))
        fulltext = FullText(tmp / "fulltext")
        t = time.perf_counter()
        docs = fulltext.rebuild(progress=True)
        build_s = time.perf_counter() - t
        fulltext.sync()  # becomes the writer
        size_mb = folder_mb(Path(fulltext.status()["path"]))

        step = max(1, args.products // 1000)
        changed = list(
            Product.objects.filter(
                is_active=True, id__in=[first_id + k * step + 7 for k in range(1000)]
            ).values_list("id", flat=True)
        )
        Product.objects.filter(id__in=changed).update(description="zqbench")
        IndexChange.objects.bulk_create(
            IndexChange(product_id=pid, op=IndexChange.Op.PRODUCT) for pid in changed
        )
        t = time.perf_counter()
        fulltext.sync()
        sync_ms = (time.perf_counter() - t) * 1000
        assert len(fulltext.search("zqbench", limit=2000).ids) == len(changed)

        pairs = Counter(
            (r["baseColour"], r["articleType"])
            for r in rows
            if r["baseColour"] and r["articleType"]
        )
        colour_type = [(f"{c} {t}".lower(), c, t) for (c, t), _ in pairs.most_common(args.pairs)]
        filters = {
            "no filter": Filter(),
            "category Topwear": Filter(category_ids=(category_ids["Topwear"],)),
            "price 100-500": Filter(price_min=100.0, price_max=500.0),
        }

        def timed(texts: list[str], flt: Filter) -> list[float]:
            out = []
            for text in texts:
                fulltext.search(text, flt=flt, limit=100)  # warm
                for _ in range(args.repeats):
                    t = time.perf_counter()
                    fulltext.search(text, flt=flt, limit=100)
                    out.append((time.perf_counter() - t) * 1000)
            return out

        per_query = {}
        for text, _ in QUERIES:
            per_query[text] = statistics.median(timed([text], Filter()))
        latency = {}
        for fname, flt in filters.items():
            latency[("listed", fname)] = timed([q for q, _ in QUERIES], flt)
            latency[("colour type", fname)] = timed([q for q, _, _ in colour_type], flt)

        precision = []
        for text, colour, article in colour_type:
            top = fulltext.search(text, flt=Filter(), limit=10).ids
            hits = sum(
                1
                for pid in top
                if source(pid)["baseColour"] == colour and source(pid)["articleType"] == article
            )
            precision.append(hits / 10)
        sku_hit = fulltext.search("TS-0012345", limit=1).exact_sku
        fulltext.close()
        connection.close()
    finally:
        admin.execute(f"DROP DATABASE IF EXISTS {bench_db} WITH (FORCE)")
        admin.close()

    print(f"\nFull-text index (tantivy) over {args.products:,} products ({docs:,} active):")
    print(f"  reading the products from PostgreSQL alone: {read_s:.1f} s ({read:,} rows)")
    print(f"  rebuild (read + index + commit): {build_s:.1f} s, {size_mb:.1f} MB on disk")
    print(f"  writer sync re-indexing {len(changed):,} changed products: {sync_ms:.0f} ms")
    print(f"  SKU lookup 'TS-0012345' exact match: {'found' if sku_hit else 'MISSING'}")
    print(f"\nMedian of {args.repeats} (ms), no filter:")
    for text, what in QUERIES:
        print(f"  {text:<24} {what:<26} {per_query[text]:7.2f}")
    print("\nLatency over every query x repeat (ms):")
    print(f"  {'queries':<14} {'filter':<18} {'p50':>7} {'p99':>7}")
    for (group, fname), values in latency.items():
        print(
            f"  {group:<14} {fname:<18} {statistics.median(values):7.2f} {percentile(values, 0.99):7.2f}"
        )
    print(
        f"\n'colour type' precision@10 over the {len(colour_type)} most common pairs: "
        f"{statistics.mean(precision):.3f}"
    )
    shutil.rmtree(tmp, ignore_errors=True)
    # Merged by size into one file that scripts/bench_report.py puts in the summary table.
    out = ROOT / "var" / "bench" / "results-lexical.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    results = json.loads(out.read_text()) if out.is_file() else {}
    colour = latency[("colour type", "no filter")]
    results[str(args.products)] = {
        "build_s": build_s,
        "size_mb": size_mb,
        "sync_1000_ms": sync_ms,
        "colour_type_p10": statistics.mean(precision),
        "colour_type_p50_ms": statistics.median(colour),
        "colour_type_p99_ms": percentile(colour, 0.99),
        "loadavg": os.getloadavg(),
    }
    out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
