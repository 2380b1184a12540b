#!/usr/bin/env python
"""`make load`: mixed traffic for a bounded time against a production-like stack on loopback,
then checks that nothing was lost, indexed twice or left behind.

The stack (scripts/live_stack.py): gunicorn with searchsite/gunicorn.conf.py and several
workers, a throwaway PostgreSQL database, a throwaway redis-server (broker and throttle cache),
one Celery worker and celery beat (a snapshot every minute, so a base is compacted and switched
to under load; the reconcile every 20 s with a 5 s grace, so an image the worker has not reached
within 5 s is queued a second time). The worker logs each task it runs; the figures count them. The catalog: a few
hundred products with the real photos of ../shared/datasets/myntra-small (read in place, as
scripts/bench_data.py finds it; BENCH_DATASET elsewhere), or generated images without it.

Traffic, for --seconds (LOAD_SECONDS, default 180), from threads that each hold a keep-alive
connection: shoppers send text searches, image searches (800x800 JPEGs of real photos),
filtered searches (category, price), product pages (HTML) and product reads (API) and
"similar" lookups; staff clients create products with one or two new photos through the API and
delete some of them (whole products, some right after the upload while the worker embeds them,
and single images). Progress is printed every 15 s.

At the end it waits for the queue to drain and checks, in the database and in the serving index
(through embeddings.runtime, after a sync): every kept upload is indexed, with exactly one vector
of the serving model; deleted images have no row, no vector and no place in the index; no image
has two vectors; the index holds exactly the images that have a vector; and a sample of uploads
is found first by a search with its own photo, through gunicorn. It prints requests/s, p50/p99 per
kind, answers by status and the load average, and exits non-zero on any failed check, any 5xx,
any unexpected 4xx or any request that got no answer.

    python scripts/load_test.py [--seconds 180] [--products 300] [--shoppers 6] [--staff 2]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from bench_data import DATASET  # noqa: E402
from bench_e2e import Http, pct, say  # noqa: E402
from live_stack import LiveStack, StackError  # noqa: E402
from load_clients import SHOPPER_MIX, STAFF_KINDS, Catalog, Recorder, read_manifest, traffic  # noqa: E402

CHECK_CODE = """
import json, os
from django.db.models import Count
from catalog.models import ProductImage
from embeddings import runtime
from embeddings.models import ImageEmbedding

data = json.load(open(os.environ["LOAD_CHECK_INPUT"]))
kept, deleted = set(data["kept_images"]), set(data["deleted_images"])
model_id = runtime.get_encoder().model_id
live = runtime.get_live_index()
live.sync()
index_ids = {int(i) for i in live.store.image_ids().tolist()}
vector_ids = set(ImageEmbedding.objects.filter(model_id=model_id).values_list("image_id", flat=True))
rows = dict(ProductImage.objects.values_list("id", "index_status"))
per_image = dict(
    ImageEmbedding.objects.filter(model_id=model_id, image_id__in=kept)
    .values_list("image_id").annotate(n=Count("id")).values_list("image_id", "n")
)
duplicates = (
    ImageEmbedding.objects.values("image_id", "model_id").annotate(n=Count("id")).filter(n__gt=1)
)
first = lambda ids: sorted(ids)[:20]
print(json.dumps({
    "model_id": model_id,
    "images": len(rows),
    "status": dict(__import__("collections").Counter(rows.values())),
    "vectors": len(vector_ids),
    "index_size": len(index_ids),
    "kept_missing": first(kept - rows.keys()),
    "kept_not_indexed": first(i for i in kept if rows.get(i) not in (None, "indexed")),
    "kept_vectors_not_one": first(i for i in kept if per_image.get(i, 0) != 1),
    "deleted_rows_left": first(deleted & rows.keys()),
    "deleted_vectors_left": ImageEmbedding.objects.filter(image_id__in=deleted).count(),
    "deleted_in_index": first(deleted & index_ids),
    "duplicate_vectors": duplicates.count(),
    "images_without_vector": first(rows.keys() - vector_ids),
    "index_not_in_db": first(index_ids - vector_ids),
    "db_not_in_index": first(vector_ids - index_ids),
}))
"""


def drain(stack: LiveStack, timeout: float) -> float | None:
    """Seconds until the broker queue is empty and no image is pending; None on timeout."""
    import psycopg
    import redis

    broker = redis.Redis.from_url(stack.redis_url)
    t0 = time.monotonic()
    said = 0.0
    with psycopg.connect(stack.env["DATABASE_URL"], autocommit=True) as conn:
        while time.monotonic() - t0 < timeout:
            queued = broker.llen("celery") + broker.hlen("unacked")
            pending = conn.execute(
                "SELECT count(*) FROM catalog_productimage WHERE index_status = 'pending'"
            ).fetchone()[0]
            if queued == 0 and pending == 0:
                return time.monotonic() - t0
            if time.monotonic() - said > 10:
                say(f"  draining: {queued} tasks queued or running, {pending} images pending")
                said = time.monotonic()
            time.sleep(0.5)
    return None


def found_by_own_photo(port: int, cat: Catalog, sample: int, seed: int) -> tuple[int, list[str]]:
    """Searches (through gunicorn) with the photos of up to ``sample`` kept uploads."""
    client = Http(port, timeout=60)
    picks = random.Random(seed).sample(sorted(cat.kept), min(sample, len(cat.kept)))
    misses = []
    for pid in picks:
        status, body, _ = client.post_form(
            "/api/v1/search/", {}, {"image": ("q.jpg", cat.kept[pid]["photo"], "image/jpeg")}
        )
        hits = json.loads(body).get("results", []) if status == 200 else []
        top = hits[0]["product"]["id"] if hits else None
        if top != pid:
            misses.append(f"product {pid}: HTTP {status}, top hit {top}")
    client.close()
    return len(picks), misses


def worker_tasks(log: Path) -> dict:
    """What the worker ran, from its INFO log (a "Task <name>[id] succeeded in ...: <result>"
    line per task; the reconcile logs a warning when it queues images)."""
    text = log.read_text(errors="replace") if log.exists() else ""
    done = re.findall(r"Task embeddings\.tasks\.(\w+)\[[^\]]+\] succeeded in [\d.]+s: (.*)", text)
    results = Counter(result.strip("'\"") for name, result in done if name == "image_embed_task")
    return {
        "embed": sum(results.values()),
        "embed_results": ", ".join(f"{r} x{n}" for r, n in results.most_common()) or "none",
        "reconcile": sum(1 for name, _ in done if name == "index_reconcile_task"),
        "reconciled": sum(int(n) for n in re.findall(r"reconcile queued (\d+) image", text)),
        "snapshot": sum(1 for name, _ in done if name == "index_snapshot_task"),
        "task_errors": len(re.findall(r"Task embeddings\.tasks\.\w+\[[^\]]+\] raised", text)),
    }


def report(args, rec: Recorder, wall: float, loads: list[float], cat: Catalog) -> list[str]:
    """Prints the figures; returns what counts as a failure."""
    problems = []
    kinds = list(SHOPPER_MIX) + list(STAFF_KINDS)
    print()
    print(f"{'kind':<15}{'requests':>9}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}  answers")
    total = 0
    for kind in kinds:
        ms = rec.ms.get(kind, [])
        answers = {s: n for (k, s), n in rec.statuses.items() if k == kind}
        answers.update({e: n for (k, e), n in rec.failed.items() if k == kind})
        n = len(ms) + sum(n for (k, _), n in rec.failed.items() if k == kind)
        total += n
        p50, p99 = pct(ms, 50), pct(ms, 99)
        print(
            f"{kind:<15}{n:>9}{n / wall:>8.1f}{p50 or 0:>9.0f}{p99 or 0:>9.0f}  "
            + ", ".join(f"{s} x{c}" for s, c in sorted(answers.items(), key=str))
        )
    print(f"{'all':<15}{total:>9}{total / wall:>8.1f}")
    by_status = Counter()
    for (_, s), n in rec.statuses.items():
        by_status[s] += n
    print("answers by status: " + ", ".join(f"{s} x{n}" for s, n in sorted(by_status.items())))
    one, five, fifteen = os.getloadavg()
    print(
        f"load average now {one:.2f} {five:.2f} {fifteen:.2f} (1/5/15 min); during the run "
        f"(1-min, every 15 s): mean {np.mean(loads) if loads else 0:.2f}, max {max(loads, default=0):.2f}"
        f" on {os.cpu_count()} CPUs"
    )
    print(
        f"uploads: {cat.created} products ({cat.created_images} images) created, "
        f"{cat.deleted_products} products and {cat.deleted_single} single images deleted, "
        f"{len(cat.kept)} products kept"
    )
    server_errors = sum(n for s, n in by_status.items() if s >= 500)
    if server_errors:
        problems.append(f"{server_errors} answers with a 5xx status")
    unexpected = sum(n for (_, s), n in rec.statuses.items() if 400 <= s < 500)
    if unexpected:
        problems.append(f"{unexpected} answers with a 4xx status to valid requests")
    if rec.failed:
        problems.append(f"{sum(rec.failed.values())} requests got no answer: {dict(rec.failed)}")
    if rec.samples:
        print("first unexpected answers:")
        for line in rec.samples:
            print(f"  {line}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=float(os.environ.get("LOAD_SECONDS", 180)))
    parser.add_argument("--products", type=int, default=300, help="catalog size before the run")
    parser.add_argument("--web-workers", type=int, default=3)
    parser.add_argument("--shoppers", type=int, default=6)
    parser.add_argument("--staff", type=int, default=2)
    parser.add_argument(
        "--upload-interval", type=float, default=1.0, help="seconds per staff client"
    )
    parser.add_argument("--drain-timeout", type=float, default=300)
    parser.add_argument("--search-sample", type=int, default=30, help="uploads searched by photo")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--pg-url", default=os.environ.get("PG_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    )
    parser.add_argument("--workdir", type=Path, default=ROOT / "var" / "load")
    parser.add_argument("--keep", action="store_true", help="keep the throwaway database")
    args = parser.parse_args(argv)

    source = DATASET if (DATASET / "manifest.csv").is_file() else None
    if source is None:
        say(f"no dataset at {DATASET} (BENCH_DATASET): the catalog gets generated images")
        if args.products > 300:
            say("  the generated catalog holds at most 300 products: using 300")
            args.products = 300
    extra = {
        "EMBEDDINGS_SNAPSHOT_INTERVAL": "60",
        # The reconcile runs every 20 s and queues again any image pending for 5 s: when the
        # worker falls behind, an image gets a second task and must still end with one vector.
        "EMBEDDINGS_RECONCILE_INTERVAL": "20",
        "EMBEDDINGS_RECONCILE_GRACE": "5",
    }
    problems: list[str] = []
    try:
        with LiveStack(
            "load",
            pg_url=args.pg_url,
            workdir=args.workdir,
            web_workers=args.web_workers,
            keep=args.keep,
            env=extra,
        ) as stack:
            stack.load_catalog(count=args.products, source=source)
            photo_root = source or Path(stack.env["DATA_DIR"]) / "demo-catalog"
            cat = Catalog(photo_root, read_manifest(photo_root, args.products), 40, args.seed)
            token = stack.staff_token()
            stack.start_worker(log_level="INFO")
            stack.start_beat()
            port = stack.start_web()
            client = Http(port)
            _, body, _ = client.request("GET", "/api/v1/categories/")
            cat.categories = [c["slug"] for c in json.loads(body)]
            cat.product_ids = [
                int(i)
                for i in stack.django(
                    "from catalog.models import Product; "
                    "print(*Product.objects.values_list('id', flat=True))"
                ).split()
            ]
            client.close()
            rec = Recorder()
            wall, loads = traffic(args, port, token, cat, rec)
            problems += report(args, rec, wall, loads, cat)

            say(f"waiting for the queue to drain (at most {args.drain_timeout:.0f} s)")
            drained = drain(stack, args.drain_timeout)
            if drained is None:
                problems.append(
                    f"queue not drained / images still pending after {args.drain_timeout:.0f} s"
                )
            else:
                say(f"  drained {drained:.1f} s after the traffic stopped")
            time.sleep(3)  # the web workers' background sync (EMBEDDINGS_SYNC_INTERVAL)
            kept_images = sorted(i for v in cat.kept.values() for i in v["images"])
            check_input = args.workdir / "check-input.json"
            check_input.write_text(
                json.dumps(
                    {"kept_images": kept_images, "deleted_images": sorted(cat.deleted_images)}
                )
            )
            stack.env["LOAD_CHECK_INPUT"] = str(check_input)
            state = stack.django_json(CHECK_CODE)
            print(
                f"database and index: {state['images']} images {state['status']}, "
                f"{state['vectors']} vectors of {state['model_id']}, {state['index_size']} in the index"
            )
            for key, what in (
                ("kept_missing", "kept uploads whose image row is gone"),
                ("kept_not_indexed", "kept uploads not indexed"),
                ("kept_vectors_not_one", "kept uploads without exactly one vector"),
                ("deleted_rows_left", "deleted images whose row is still there"),
                ("deleted_vectors_left", "vectors of deleted images"),
                ("deleted_in_index", "deleted images still in the index"),
                ("duplicate_vectors", "images with two vectors of one model"),
                ("images_without_vector", "images without a vector"),
                ("index_not_in_db", "index entries with no vector in the database"),
                ("db_not_in_index", "vectors missing from the index"),
            ):
                if state[key]:
                    problems.append(f"{what}: {state[key]}")
            tasks = worker_tasks(args.workdir / "worker.log")
            print(
                f"worker: {tasks['embed']} embed tasks run ({tasks['embed_results']}) for "
                f"{cat.created_images} uploaded images; {tasks['reconcile']} reconcile runs "
                f"queued {tasks['reconciled']} image(s) again; {tasks['snapshot']} snapshots"
            )
            if tasks["task_errors"]:
                problems.append(f"worker.log: {tasks['task_errors']} task(s) raised")
            n, misses = found_by_own_photo(port, cat, args.search_sample, args.seed)
            print(f"found first by its own photo: {n - len(misses)} of {n} sampled uploads")
            if misses:
                problems.append(f"uploads not found first by their own photo: {misses[:10]}")
            log = (args.workdir / "gunicorn.log").read_text(errors="replace")
            for marker in ("WORKER TIMEOUT", "Traceback"):
                if marker in log:
                    problems.append(f"gunicorn.log has {log.count(marker)} x {marker!r}")
            dead = stack.check_alive()
            if dead:
                problems.append(f"exited during the run: {dead}")
    except StackError as exc:
        print(f"FAILED to start the stack: {exc}", file=sys.stderr)
        return 2
    print()
    if problems:
        print("FAILED:")
        for p in problems:
            print(f"  - {p}")
        print(f"Logs: {args.workdir}/{{gunicorn,worker,beat,manage}}.log")
        return 1
    print("All checks passed: no 5xx, every upload indexed exactly once, index == database.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
