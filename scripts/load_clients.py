"""The clients of `make load` (scripts/load_test.py): shopper and staff threads, each with its
own keep-alive connection (scripts/bench_e2e.py's Http), and what they record.

Shoppers draw from a mix of text, image (800x800 JPEGs of real photos) and filtered searches,
product pages (HTML), product reads (API) and similar-product lookups. Staff clients upload a
product with one or two new photos every ``interval`` seconds and delete: a third of the new
products right away (the worker is embedding them), some older ones, and single images of
two-image products. Every request is recorded with its kind, status and time.
"""

from __future__ import annotations

import csv
import json
import os
import random
import threading
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
from bench_e2e import Http, jpeg_800, say, unique_jpeg_800

SKU_PREFIX = "LOAD-"
# Shopper request mix (weights).
SHOPPER_MIX = {
    "text": 30,
    "image": 15,
    "filtered": 20,
    "page": 15,
    "product": 10,
    "similar": 10,
}
STAFF_KINDS = ("upload", "delete_product", "delete_image")


class Recorder:
    """Every request's kind, status (or exception name) and time; thread-safe."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ms: dict[str, list[float]] = defaultdict(list)
        self.statuses: Counter = Counter()  # (kind, status)
        self.failed: Counter = Counter()  # (kind, exception name): no answer at all
        self.samples: list[str] = []  # first unexpected answers, for the report

    def add(self, kind: str, status: int, ms: float, body: bytes = b"", expect=(200,)) -> None:
        with self.lock:
            self.ms[kind].append(ms)
            self.statuses[(kind, status)] += 1
            if status not in expect and len(self.samples) < 12:
                self.samples.append(f"{kind} -> {status}: {body[:300]!r}")

    def fail(self, kind: str, exc: BaseException) -> None:
        with self.lock:
            self.failed[(kind, type(exc).__name__)] += 1
            if len(self.samples) < 12:
                self.samples.append(f"{kind} -> no answer: {exc!r}")

    def total(self) -> int:
        with self.lock:
            return sum(self.statuses.values()) + sum(self.failed.values())


class Catalog:
    """What the clients draw from: queries, query photos, categories, product ids, uploads."""

    def __init__(self, source: Path, rows: list[dict], n_photos: int, seed: int) -> None:
        self.source, self.rows = source, rows
        rng = random.Random(seed)
        titles = [r["title"] for r in rows if r.get("title")]
        pairs = {
            f"{r.get('baseColour', '')} {r.get('articleType', '')}".strip().lower() for r in rows
        }
        self.queries = titles + sorted(p for p in pairs if p)
        picks = rng.sample(rows, min(n_photos, len(rows)))
        say(f"preparing {len(picks)} 800x800 JPEG query photos from {source}")
        self.photos = [jpeg_800(source / r["path"]) for r in picks]
        self.categories: list[str] = []
        self.product_ids: list[int] = []
        self.upload_lock = threading.Lock()
        self.kept: dict[int, dict] = {}  # product id -> {"images": [ids], "photo": bytes}
        self.deleted_images: set[int] = set()
        self.created = self.created_images = self.deleted_products = self.deleted_single = 0


def read_manifest(source: Path, limit: int) -> list[dict]:
    with (source / "manifest.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    return rows[:limit]


def shopper(port: int, cat: Catalog, rec: Recorder, stop: threading.Event, seed: int) -> None:
    rng = random.Random(seed)
    client = Http(port, timeout=60)
    kinds, weights = zip(*SHOPPER_MIX.items(), strict=True)
    while not stop.is_set():
        kind = rng.choices(kinds, weights)[0]
        try:
            if kind == "text":
                out = client.get_search({"q": rng.choice(cat.queries)})
            elif kind == "filtered":
                params = {"q": rng.choice(cat.queries), "category": rng.choice(cat.categories)}
                if rng.random() < 0.5:
                    low = rng.choice([0, 10, 50])
                    params.update(price_min=low, price_max=low + rng.choice([20, 100, 500]))
                out = client.get_search(params)
            elif kind == "image":
                photo = rng.choice(cat.photos)
                fields = {"q": rng.choice(cat.queries)} if rng.random() < 0.3 else {}
                out = client.post_form(
                    "/api/v1/search/", fields, {"image": ("photo.jpg", photo, "image/jpeg")}
                )
            elif kind == "page":
                out = client.request("GET", f"/products/{rng.choice(cat.product_ids)}/")
            elif kind == "product":
                out = client.request("GET", f"/api/v1/products/{rng.choice(cat.product_ids)}/")
            else:
                pid = rng.choice(cat.product_ids)
                out = client.request("GET", f"/api/v1/products/{pid}/similar/")
        except OSError as exc:
            client.close()
            rec.fail(kind, exc)
            continue
        status, body, ms = out
        rec.add(kind, status, ms, body)
    client.close()


def staff(
    port: int,
    token: str,
    cat: Catalog,
    rec: Recorder,
    stop: threading.Event,
    seed: int,
    interval: float,
) -> None:
    """Uploads a product every ``interval`` seconds (one or two new photos) and deletes: a third
    of the new products right away (the worker is embedding them), some older ones, and single
    images of two-image products."""
    rng = random.Random(seed)
    nprng = np.random.default_rng(seed)
    client = Http(port, timeout=60)
    auth = {"Authorization": f"Token {token}"}
    while not stop.is_set():
        started = time.monotonic()
        n_images = 1 + (rng.random() < 0.4)
        photos = [
            unique_jpeg_800(cat.source / rng.choice(cat.rows)["path"], nprng)
            for _ in range(n_images)
        ]
        files = [(f"upload-{i}.jpg", p, "image/jpeg") for i, p in enumerate(photos)]
        fields = {
            "title": f"Load upload {uuid.uuid4().hex[:8]}",
            "category": rng.choice(["Tshirts", "Shirts", "Casual Shoes", "Handbags"]),
            "price": f"{rng.uniform(5, 200):.2f}",
            "sku": f"{SKU_PREFIX}{uuid.uuid4().hex[:12]}",
        }
        try:
            client.close()  # a create is never sent twice: a fresh connection, no retry
            status, body, ms = post_images(client, fields, files, auth)
        except OSError as exc:
            client.close()
            rec.fail("upload", exc)
            continue
        rec.add("upload", status, ms, body, expect=(201,))
        if status != 201:
            continue
        product = json.loads(body)
        image_ids = [img["id"] for img in product["images"]]
        with cat.upload_lock:
            cat.created += 1
            cat.created_images += len(image_ids)
        roll = rng.random()
        if roll < 0.33:
            delete_product(client, auth, product["id"], image_ids, cat, rec)
        else:
            if roll < 0.5 and len(image_ids) > 1:
                delete_image(client, auth, product["id"], image_ids.pop(), cat, rec)
            with cat.upload_lock:
                cat.kept[product["id"]] = {"images": image_ids, "photo": photos[0]}
            if rng.random() < 0.15 and len(cat.kept) > 5:
                with cat.upload_lock:
                    old = rng.choice(list(cat.kept))
                    victim = cat.kept.pop(old)
                delete_product(client, auth, old, victim["images"], cat, rec)
        stop.wait(max(0.0, interval - (time.monotonic() - started)))
    client.close()


def post_images(client: Http, fields: dict, files: list, auth: dict):
    """multipart with a repeated ``images`` field (bench_e2e's helper takes one file a name)."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        )
    for filename, content, ctype in files:
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="images"; '
            f'filename="{filename}"\r\nContent-Type: {ctype}\r\n\r\n'
        )
        parts.append(head.encode() + content + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}", **auth}
    return client.request(
        "POST", "/api/v1/products/", body=b"".join(parts), headers=headers, retry=False
    )


def delete_product(client, auth, pid: int, image_ids: list[int], cat: Catalog, rec) -> None:
    try:
        status, body, ms = client.request(
            "DELETE", f"/api/v1/products/{pid}/", headers=auth, retry=False
        )
    except OSError as exc:
        client.close()
        rec.fail("delete_product", exc)
        return
    rec.add("delete_product", status, ms, body, expect=(204,))
    if status == 204:
        with cat.upload_lock:
            cat.deleted_images.update(image_ids)
            cat.deleted_products += 1


def delete_image(client, auth, pid: int, image_id: int, cat: Catalog, rec) -> None:
    try:
        status, body, ms = client.request(
            "DELETE", f"/api/v1/products/{pid}/images/{image_id}/", headers=auth, retry=False
        )
    except OSError as exc:
        client.close()
        rec.fail("delete_image", exc)
        return
    rec.add("delete_image", status, ms, body, expect=(204,))
    if status == 204:
        with cat.upload_lock:
            cat.deleted_images.add(image_id)
            cat.deleted_single += 1


def traffic(args, port: int, token: str, cat: Catalog, rec: Recorder) -> tuple[float, list]:
    stop = threading.Event()
    threads = [
        threading.Thread(target=shopper, args=(port, cat, rec, stop, 100 + i), daemon=True)
        for i in range(args.shoppers)
    ]
    threads += [
        threading.Thread(
            target=staff,
            args=(port, token, cat, rec, stop, 200 + i, args.upload_interval),
            daemon=True,
        )
        for i in range(args.staff)
    ]
    say(
        f"traffic for {args.seconds} s: {args.shoppers} shopper and {args.staff} staff clients "
        f"(a product upload every {args.upload_interval:.1f} s per staff client)"
    )
    loads: list[float] = []
    t0 = time.monotonic()
    for t in threads:
        t.start()
    last_n, last_t = 0, t0
    while (elapsed := time.monotonic() - t0) < args.seconds:
        time.sleep(min(15.0, args.seconds - elapsed))
        now, n = time.monotonic(), rec.total()
        loads.append(os.getloadavg()[0])
        bad = sum(v for (_, s), v in rec.statuses.items() if s >= 500) + sum(rec.failed.values())
        say(
            f"  {now - t0:5.0f} s: {n} requests ({(n - last_n) / (now - last_t):.1f}/s lately), "
            f"{cat.created} uploads, {cat.deleted_products} products deleted, "
            f"5xx/no answer {bad}, load {loads[-1]:.2f}"
        )
        last_n, last_t = n, now
    stop.set()
    for t in threads:
        t.join(90)
    return time.monotonic() - t0, loads
