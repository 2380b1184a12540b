#!/usr/bin/env python
"""End-to-end benchmark through HTTP: the catalog in PostgreSQL, the index built by
``manage.py rebuild_index``, gunicorn started with the project's config
(searchsite/gunicorn.conf.py), a real Celery worker for uploads, and a plain keep-alive HTTP
client (stdlib http.client, threads for concurrency). It only uses HTTP, management commands and
the database, so it measures whatever the search code is when it runs.

Per size it prints one markdown table: text search (distinct queries and repeated ones),
filtered text search (the largest category and one holding ~0.1% of the products), image search
(800x800 JPEG uploads), image + text, throughput with 4 concurrent clients, time from launching
gunicorn to the first answer, memory of the web workers (PSS and RSS from smaps_rollup, at start
and steady), and upload -> found by its own photo. Rows also go to var/bench/results-e2e.json.

Data (scripts/bench_data.py): real starter-model image embeddings of the myntra-small photos plus
noise-perturbed copies, with those photos' titles, categories and prices. Each size has its own
database (shopsearch_bench_<n>), created with the project's migrations and filled with COPY; a
marker row keeps it for the next run while n, seed, model id and data version are unchanged, so
the 1M load is paid once (--reload forces a new load). The index is rebuilt on every run.

The server processes get the caller's environment with the bench's own settings on top, so a
knob such as EMBEDDINGS_IVF_NPROBE=16 or GUNICORN_THREADS=2 in front of the command reaches them.
Logs of each size: var/bench/<n>/{manage,gunicorn,celery}.log.

    python scripts/bench_e2e.py --sizes 100000 1000000 [--pg-url URL] [--workers 4] [--quick]
    python scripts/bench_e2e.py --sizes 1000000 --load-only   # pay the 1M load ahead of time
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import http.client
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
import urllib.parse
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
DATASET = Path(
    os.environ.get("BENCH_DATASET", ROOT.parent / "shared" / "datasets" / "myntra-small")
)  # read in place (the same variable as scripts/bench_data.py)
STARTER = ROOT / "embeddings" / "starter" / "shopclip-starter.pt"
MODEL_NAME = "shopclip-starter"
VAR = ROOT / "var" / "bench"
MEDIA_ROOT = VAR / "media"
RESULTS = VAR / "results-e2e.json"
BIN = ROOT / ".venv" / "bin" if (ROOT / ".venv" / "bin" / "python").exists() else None
LOADER_VERSION = 1  # bump when the rows written by load_catalog change
UPLOAD_SKU_PREFIX = "BENCHUP-"
BENCH_USER, BENCH_PASSWORD = "bench-e2e", "bench-e2e-password-7f3a"
SECRET_KEY = "bench-e2e-secret-key-" + "x" * 40

# Targets of the issue, at 1M products on the 2-core machine.
TARGETS = {
    "text_p50_ms": ("<=", 30),
    "text_p99_ms": ("<=", 100),
    "filtered_common_p50_ms": ("<=", 40),
    "filtered_rare_p50_ms": ("<=", 40),
    "image_p50_ms": ("<=", 60),
    "throughput_rps": (">=", 60),
    "start_first_answer_s": ("<=", 3),
    "mem_server_pss_start_mb": ("<=", 2048),
    "mem_server_pss_steady_mb": ("<=", 2048),
    "upload_first_s": ("<=", 2),
    "upload_next_max_s": ("<=", 2),
}


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def tool(name: str) -> str:
    if BIN is not None:
        return str(BIN / name)
    return str(Path(sys.executable).parent / name)


# --- data ------------------------------------------------------------------------------------------
class StandInData:
    """Used only while scripts/bench_data.py does not exist: random unit vectors (the latency is
    real, the ranking is not), the real catalog rows, prices and categories."""

    VERSION = "stand-in-1"

    def __init__(self) -> None:
        self._rows: list[dict] | None = None

    def catalog_rows(self) -> list[dict]:
        if self._rows is None:
            with (DATASET / "manifest.csv").open(newline="") as fh:
                self._rows = list(csv.DictReader(fh))
        return self._rows

    def synthetic(self, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(seed)
        vectors = rng.standard_normal((n, 256), dtype=np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        src = np.arange(n, dtype=np.int64) % len(self.catalog_rows())
        return vectors, src

    def price_of(self, src: np.ndarray) -> np.ndarray:
        return 5 + (np.asarray(src, dtype=np.int64) * 7919 % 20000) / 100

    def category_of(self, rows) -> list[str]:
        catalog = self.catalog_rows()
        return [catalog[int(i)]["articleType"] for i in rows]

    def text_queries(self) -> list[tuple[str, str, str]]:
        seen: dict[str, tuple[str, str, str]] = {}
        for r in self.catalog_rows():
            if r["baseColour"] and r["articleType"]:
                q = f"{r['baseColour']} {r['articleType']}".lower()
                seen.setdefault(q, (q, r["baseColour"], r["articleType"]))
        return list(seen.values())[:80]


def data_module():
    try:
        import bench_data  # scripts/bench_data.py
    except ImportError:
        say("scripts/bench_data.py not found: using the stand-in data (random vectors)")
        return StandInData(), StandInData.VERSION
    version = getattr(bench_data, "VERSION", None) or getattr(bench_data, "DATA_VERSION", None)
    cosine = getattr(bench_data, "COPY_COSINE", None)
    return bench_data, f"bench_data:{version or 1}:copy-cos-{cosine}"


def row_get(row, key: str) -> str:
    if isinstance(row, dict):
        return row.get(key) or ""
    return getattr(row, key, "") or ""


def model_id() -> str:
    sys.path.insert(0, str(ROOT))
    from embeddings.encoder import ClipEncoder

    return ClipEncoder(MODEL_NAME, str(STARTER)).model_id


def slugify(name: str) -> str:
    from django.utils.text import slugify as dj_slugify

    return dj_slugify(name)[:140] or "category"


# --- database ----------------------------------------------------------------------------------
def db_url(pg_url: str, name: str) -> str:
    parts = urllib.parse.urlsplit(pg_url)
    return urllib.parse.urlunsplit(parts._replace(path="/" + name))


def manage(env: dict, *args: str, timeout: float, log: Path | None = None) -> float:
    t = time.perf_counter()
    cmd = [tool("python"), "manage.py", *args]
    out = log.open("a") if log else subprocess.DEVNULL
    try:
        proc = subprocess.run(
            cmd, cwd=ROOT, env=env, timeout=timeout, stdout=out, stderr=subprocess.STDOUT
        )
    finally:
        if log:
            out.close()
    if proc.returncode:
        tail = log.read_text()[-3000:] if log else ""
        raise RuntimeError(f"manage.py {' '.join(args)} failed ({proc.returncode}):\n{tail}")
    return time.perf_counter() - t


def required_columns(cur, table: str) -> set[str]:
    cur.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = %s "
        "AND is_nullable = 'NO' AND column_default IS NULL AND is_identity = 'NO'",
        (table,),
    )
    return {r[0] for r in cur.fetchall()}


def check_columns(cur, table: str, provided: list[str]) -> None:
    missing = required_columns(cur, table) - set(provided) - {"id"}
    if missing:
        raise RuntimeError(
            f"{table} has NOT NULL columns the bench loader does not fill: {sorted(missing)}; "
            "update load_catalog in scripts/bench_e2e.py"
        )


def plain_indexes(cur, table: str) -> list[tuple[str, str]]:
    """Indexes not backing a constraint: dropped during COPY, created again after."""
    cur.execute(
        "SELECT i.relname, pg_get_indexdef(i.oid) FROM pg_index x "
        "JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid "
        "WHERE t.relname = %s AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.oid)",
        (table,),
    )
    return cur.fetchall()


def load_catalog(url: str, n: int, data, seed: int, mid: str) -> None:
    import psycopg

    rows = data.catalog_rows()
    say(f"generating {n:,} vectors (bench_data.synthetic, seed {seed})")
    t = time.perf_counter()
    vectors, src = data.synthetic(n, seed=seed)
    vectors = np.ascontiguousarray(vectors, dtype="<f4")
    src = np.asarray(src, dtype=np.int64)
    if vectors.shape[0] != n or src.shape != (n,):
        raise RuntimeError(f"synthetic({n}) returned {vectors.shape} / {src.shape}")
    dim = int(vectors.shape[1])
    prices = np.asarray(data.price_of(src), dtype=np.float64)
    say(f"  {time.perf_counter() - t:.1f} s, dim {dim}")
    row_cats = list(data.category_of(np.arange(len(rows))))
    names = sorted({c for c in row_cats if c})
    cat_ids, slugs = {}, set()
    cat_rows = []
    for i, name in enumerate(names, start=1):
        slug, k = slugify(name), 2
        while slug in slugs:
            slug, k = f"{slugify(name)[:130]}-{k}", k + 1
        slugs.add(slug)
        cat_ids[name] = i
        cat_rows.append((i, name[:120], slug))
    titles = [row_get(r, "title")[:255] or "Untitled" for r in rows]

    # One small real JPEG serves as the file of every loaded image.
    first = DATASET / row_get(rows[0], "path")
    image_name = "bench/product.jpg"
    (MEDIA_ROOT / "bench").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(first, MEDIA_ROOT / image_name)
    content_hash = hashlib.sha256((MEDIA_ROOT / image_name).read_bytes()).hexdigest()
    now = datetime.now(UTC)
    step = max(1, n // 10)

    with psycopg.connect(url, connect_timeout=10) as conn, conn.cursor() as cur:
        cur.execute("SET session_replication_role = replica")  # no FK triggers during COPY
        cur.execute("SET maintenance_work_mem = '512MB'")
        product_cols = ["id", "title", "description", "price", "category_id", "sku"]
        product_cols += ["is_active", "created_at", "updated_at"]
        image_cols = ["id", "product_id", "image", "alt_text", "position", "content_hash"]
        image_cols += ["index_status", "index_error", "indexed_at", "created_at"]
        emb_cols = ["id", "image_id", "model_id", "dim", "vector", "content_hash"]
        emb_cols += ["created_at", "updated_at"]
        tables = {
            "catalog_category": ["id", "name", "slug"],
            "catalog_product": product_cols,
            "catalog_productimage": image_cols,
            "embeddings_imageembedding": emb_cols,
        }
        dropped = []
        for table, cols in tables.items():
            check_columns(cur, table, cols)
            for name, definition in plain_indexes(cur, table):
                cur.execute(f'DROP INDEX "{name}"')
                dropped.append((name, definition))

        t = time.perf_counter()
        with cur.copy("COPY catalog_category (id, name, slug) FROM STDIN") as copy:
            for r in cat_rows:
                copy.write_row(r)
        with cur.copy(f"COPY catalog_product ({', '.join(product_cols)}) FROM STDIN") as copy:
            for i in range(n):
                s = int(src[i])
                copy.write_row(
                    (
                        i + 1,
                        titles[s],
                        "",
                        f"{prices[i]:.2f}",
                        cat_ids.get(row_cats[s]),
                        f"BENCH-{i + 1:07d}",
                        True,
                        now,
                        now,
                    )
                )
                if (i + 1) % step == 0:
                    say(f"  products {i + 1:,}/{n:,} ({time.perf_counter() - t:.0f} s)")
        t = time.perf_counter()
        with cur.copy(f"COPY catalog_productimage ({', '.join(image_cols)}) FROM STDIN") as copy:
            for i in range(n):
                copy.write_row(
                    (i + 1, i + 1, image_name, "", 0, content_hash, "indexed", "", now, now)
                )
                if (i + 1) % step == 0:
                    say(f"  images {i + 1:,}/{n:,} ({time.perf_counter() - t:.0f} s)")
        t = time.perf_counter()
        with cur.copy(
            f"COPY embeddings_imageembedding ({', '.join(emb_cols)}) FROM STDIN (FORMAT BINARY)"
        ) as copy:
            copy.set_types(["int8", "int8", "text", "int4", "bytea", "text"] + ["timestamptz"] * 2)
            for i in range(n):
                copy.write_row(
                    (i + 1, i + 1, mid, dim, vectors[i].tobytes(), content_hash, now, now)
                )
                if (i + 1) % step == 0:
                    say(f"  embeddings {i + 1:,}/{n:,} ({time.perf_counter() - t:.0f} s)")
        t = time.perf_counter()
        for _name, definition in dropped:
            cur.execute(definition)
        for table in tables:
            cur.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"(SELECT COALESCE(MAX(id), 0) + 1 FROM {table}), false)"
            )
        say(f"  indexes recreated ({len(dropped)}, {time.perf_counter() - t:.0f} s)")
        conn.commit()
    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
        t = time.perf_counter()
        for table in tables:
            conn.execute(f"VACUUM (ANALYZE) {table}")
        say(f"  vacuum analyze {time.perf_counter() - t:.0f} s")


def marker_get(url: str):
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=10) as conn:
            row = conn.execute(
                "SELECT value FROM bench_e2e_marker WHERE key = 'dataset'"
            ).fetchone()
            return row[0] if row else None
    except psycopg.Error:
        return None


def marker_set(url: str, value: dict) -> None:
    import psycopg

    with psycopg.connect(url, connect_timeout=10) as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS bench_e2e_marker (key text PRIMARY KEY, value jsonb)"
        )
        conn.execute(
            "INSERT INTO bench_e2e_marker VALUES ('dataset', %s) "
            "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            (json.dumps(value),),
        )


def remove_uploads(url: str) -> int:
    """Products a previous (interrupted) run uploaded; the index is rebuilt afterwards."""
    import psycopg

    with psycopg.connect(url, connect_timeout=10) as conn:
        like = UPLOAD_SKU_PREFIX + "%"
        conn.execute(
            "DELETE FROM embeddings_imageembedding WHERE image_id IN (SELECT i.id FROM "
            "catalog_productimage i JOIN catalog_product p ON p.id = i.product_id WHERE p.sku LIKE %s)",
            (like,),
        )
        conn.execute(
            "DELETE FROM catalog_productimage WHERE product_id IN "
            "(SELECT id FROM catalog_product WHERE sku LIKE %s)",
            (like,),
        )
        return conn.execute("DELETE FROM catalog_product WHERE sku LIKE %s", (like,)).rowcount


def ensure_database(args, n: int, env: dict, data, data_tag: str, mid: str, log: Path) -> dict:
    import psycopg

    name = f"shopsearch_bench_{n}"
    url = db_url(args.pg_url, name)
    env["DATABASE_URL"] = url
    want = {"n": n, "seed": args.seed, "model_id": mid, "loader": LOADER_VERSION, "data": data_tag}
    try:
        admin = psycopg.connect(args.pg_url, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        sys.exit(f"Cannot reach PostgreSQL at {args.pg_url} ({exc}); pass --pg-url.")
    with admin:
        exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if exists and not args.reload and marker_get(url) == want:
            removed = remove_uploads(url)
            with psycopg.connect(url, connect_timeout=10) as conn:
                count = conn.execute("SELECT count(*) FROM catalog_product").fetchone()[0]
            if count == n:
                say(f"database {name}: kept from an earlier run ({n:,} products, marker matches)")
                if removed:
                    say(f"  removed {removed} products a previous run uploaded")
                manage(env, "migrate", "--noinput", timeout=3600, log=log)
                return {"db": name, "loaded": False, "load_s": None}
            say(f"database {name}: {count:,} products, expected {n:,}; loading again")
        say(f"database {name}: creating (migrations, then COPY of {n:,} products)")
        t0 = time.perf_counter()
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {name}")
    manage(env, "migrate", "--noinput", timeout=3600, log=log)
    load_catalog(url, n, data, args.seed, mid)
    marker_set(url, want)
    load_s = time.perf_counter() - t0
    say(f"database {name}: loaded in {load_s:.0f} s")
    return {"db": name, "loaded": True, "load_s": load_s}


def category_counts(url: str) -> list[tuple[str, str, int]]:
    import psycopg

    with psycopg.connect(url, connect_timeout=10) as conn:
        return conn.execute(
            "SELECT c.slug, c.name, count(*) FROM catalog_product p JOIN catalog_category c "
            "ON c.id = p.category_id WHERE p.is_active GROUP BY c.slug, c.name ORDER BY 3 DESC"
        ).fetchall()


def ensure_staff_user(url: str, env: dict, log: Path) -> None:
    import psycopg

    with psycopg.connect(url, connect_timeout=10) as conn:
        if conn.execute("SELECT 1 FROM auth_user WHERE username = %s", (BENCH_USER,)).fetchone():
            return
    manage(
        {**env, "DJANGO_SUPERUSER_PASSWORD": BENCH_PASSWORD},
        "createsuperuser",
        "--noinput",
        "--username",
        BENCH_USER,
        "--email",
        "bench@example.com",
        timeout=120,
        log=log,
    )


# --- processes ---------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], env: dict, log: Path) -> subprocess.Popen:
    fh = log.open("w")
    try:
        return subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
        )
    finally:
        fh.close()


def stop(proc: subprocess.Popen | None, what: str) -> None:
    if proc is None or proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            say(f"{what} did not stop after {wait} s; sending SIGKILL")


def children_of(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
        return [int(x) for x in text.split()]
    except OSError:
        out = []
        for p in Path("/proc").iterdir():
            if p.name.isdigit():
                try:
                    stat = (p / "stat").read_text()
                    if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(p.name))
                except (OSError, IndexError, ValueError):
                    pass
        return out


def memory_kb(pid: int) -> tuple[int, int] | None:
    """(RSS, PSS) in kB from /proc/<pid>/smaps_rollup."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    values = dict(re.findall(r"^(Rss|Pss):\s+(\d+) kB", text, re.M))
    if "Rss" not in values:
        return None
    return int(values["Rss"]), int(values.get("Pss", 0))


READY_RE = re.compile(r"index ready|could not warm up", re.I)
BOOT_RE = re.compile(r"Booting worker with pid", re.I)


class StartWatch(threading.Thread):
    """Samples memory of the gunicorn master and workers every 100 ms from launch, and notes
    when each worker logs that its index is ready."""

    def __init__(self, master: int, log: Path, t0: float) -> None:
        super().__init__(daemon=True)
        self.master, self.log, self.t0 = master, log, t0
        self.samples: list[tuple[float, tuple[int, int] | None, dict[int, tuple[int, int]]]] = []
        self.ready_at: list[float] = []
        self.stop_event = threading.Event()

    def run(self) -> None:
        pos = 0
        while not self.stop_event.is_set():
            now = time.perf_counter() - self.t0
            workers = {}
            for pid in children_of(self.master):
                m = memory_kb(pid)
                if m:
                    workers[pid] = m
            self.samples.append((now, memory_kb(self.master), workers))
            try:
                with self.log.open() as fh:
                    fh.seek(pos)
                    chunk = fh.read()
                    pos = fh.tell()
                self.ready_at += [now for line in chunk.splitlines() if READY_RE.search(line)]
            except OSError:
                pass
            self.stop_event.wait(0.1)

    def peak(self) -> dict:
        """The sample where master + workers PSS is highest (PSS of pages shared between the
        processes is split among them, so the sum is what the server really holds)."""
        best = {"server_pss": 0, "workers_pss": 0, "workers_rss": 0, "master_pss": 0}
        best["per_worker_pss"] = {}
        for _, master, workers in self.samples:
            master_pss = master[1] if master else 0
            pss = sum(m[1] for m in workers.values())
            if pss + master_pss > best["server_pss"]:
                best.update(
                    server_pss=pss + master_pss,
                    workers_pss=pss,
                    workers_rss=sum(m[0] for m in workers.values()),
                    master_pss=master_pss,
                )
            for pid, m in workers.items():
                best["per_worker_pss"][pid] = max(best["per_worker_pss"].get(pid, 0), m[1])
        return best


# --- HTTP ------------------------------------------------------------------------------------------
class Http:
    """One keep-alive connection; a request the server dropped (idle keep-alive) is sent again
    once on a new connection, and only that attempt is timed."""

    RETRY = (
        http.client.RemoteDisconnected,
        http.client.CannotSendRequest,
        http.client.ResponseNotReady,
        ConnectionResetError,
        BrokenPipeError,
    )

    def __init__(self, port: int, timeout: float = 30.0) -> None:
        self.port, self.timeout = port, timeout
        self.conn: http.client.HTTPConnection | None = None

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def request(self, method, path, body=None, headers=None, timeout=None, retry=True):
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(
                    "127.0.0.1", self.port, timeout=timeout or self.timeout
                )
            t = time.perf_counter()
            try:
                self.conn.request(method, path, body=body, headers=headers or {})
                resp = self.conn.getresponse()
                data = resp.read()
            except self.RETRY:
                self.close()
                if attempt or not retry:
                    raise
                continue
            except OSError:
                self.close()
                raise
            ms = (time.perf_counter() - t) * 1000
            if (resp.getheader("Connection") or "").lower() == "close":
                self.close()
            return resp.status, data, ms
        raise AssertionError("unreachable")

    def get_search(self, params: dict, timeout=None):
        return self.request(
            "GET", "/api/v1/search/?" + urllib.parse.urlencode(params), timeout=timeout
        )

    def post_form(self, path: str, fields: dict, files: dict, headers=None, retry=True):
        body, ctype = multipart(fields, files)
        return self.request(
            "POST", path, body=body, headers={"Content-Type": ctype, **(headers or {})}, retry=retry
        )


def multipart(fields: dict, files: dict) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    out = io.BytesIO()
    for name, value in fields.items():
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode())
        out.write(str(value).encode() + b"\r\n")
    for name, (filename, content, ctype) in files.items():
        out.write(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
            f'filename="{filename}"\r\nContent-Type: {ctype}\r\n\r\n'.encode()
        )
        out.write(content + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


def pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


class Series:
    def __init__(self) -> None:
        self.ms: list[float] = []
        self.errors: list[str] = []

    def add(self, fn) -> tuple[int, bytes] | None:
        try:
            status, data, ms = fn()
        except Exception as exc:  # noqa: BLE001 - counted, reported
            self.errors.append(type(exc).__name__)
            return None
        if status != 200:
            self.errors.append(f"HTTP {status}")
            return None
        self.ms.append(ms)
        return status, data

    def p(self, q: float) -> float | None:
        return pct(self.ms, q)


# --- images ----------------------------------------------------------------------------------------
def jpeg_800(path: Path) -> bytes:
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB").resize((800, 800), Image.BICUBIC)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def unique_jpeg_800(path: Path, rng: np.random.Generator) -> bytes:
    """A real photo made unlike anything in the catalog: mirrored, tinted, with a random block
    pattern on top. Its own embedding is then found only through its own upload."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB").transpose(Image.FLIP_LEFT_RIGHT).resize((800, 800), Image.BICUBIC)
    arr = np.asarray(im).astype(np.int16)
    arr += rng.integers(-50, 50, 3, dtype=np.int16)
    arr += np.kron(
        rng.integers(-40, 40, (20, 20, 1), dtype=np.int16), np.ones((40, 40, 3), np.int16)
    )
    buf = io.BytesIO()
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


# --- one size --------------------------------------------------------------------------------------
class QueryPool:
    """Distinct text queries, handed out once each (then cycled if they run out)."""

    def __init__(self, queries: list[str]) -> None:
        self.queries, self.i, self.lock = queries, 0, threading.Lock()

    def take(self, k: int = 1) -> list[str]:
        with self.lock:
            out = [self.queries[(self.i + j) % len(self.queries)] for j in range(k)]
            self.i += k
            return out


def server_env(args, n: int) -> tuple[dict, Path]:
    """The environment of every process of one size: the caller's environment (so other knobs,
    e.g. EMBEDDINGS_IVF_NPROBE or GUNICORN_THREADS, reach the server) with these set."""
    size_dir = VAR / str(n)
    size_dir.mkdir(parents=True, exist_ok=True)
    (size_dir / "static").mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("CELERY_TASK_ALWAYS_EAGER",)}
    env.update(
        DJANGO_SETTINGS_MODULE="searchsite.settings",
        DATA_DIR=str(size_dir),
        EMBEDDINGS_INDEX_DIR=str(size_dir / "index"),
        MEDIA_ROOT=str(MEDIA_ROOT),
        STATIC_ROOT=str(size_dir / "static"),
        EMBEDDINGS_MODEL=MODEL_NAME,
        EMBEDDINGS_PRETRAINED=str(STARTER),
        DEBUG="false",
        ALLOWED_HOSTS="127.0.0.1",
        SECRET_KEY=SECRET_KEY,
        # A benchmark measures capacity: the API's per-address rate limits would turn it into 429s.
        THROTTLE_SEARCH_ANON="off",
        THROTTLE_SEARCH_USER="off",
        LOG_LEVEL="WARNING",
        CELERY_BROKER_URL=args.redis_url,
        DATABASE_CONN_MAX_AGE=str(args.conn_max_age),
        GUNICORN_BIND=f"127.0.0.1:{free_port()}",
        GUNICORN_WORKERS=str(args.workers),
        # The code of this checkout, also for a copy of it run with another checkout's venv.
        PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
    )
    return env, size_dir


def measure_size(args, n: int, data, data_tag: str, mid: str) -> dict:
    env, size_dir = server_env(args, n)
    port = int(env["GUNICORN_BIND"].rsplit(":", 1)[1])
    log = size_dir / "manage.log"
    log.write_text("")
    res: dict = {"size": n, "workers": args.workers}
    res.update(ensure_database(args, n, env, data, data_tag, mid, log))
    url = env["DATABASE_URL"]

    say("rebuild_index")
    res["rebuild_s"] = manage(env, "rebuild_index", timeout=args.rebuild_timeout, log=log)
    tail = [line for line in log.read_text().splitlines() if line.strip()][-2:]
    say(f"  {res['rebuild_s']:.1f} s: {' / '.join(tail)}")
    ensure_staff_user(url, env, log)

    counts = category_counts(url)
    total = sum(c for _, _, c in counts)
    common = counts[0]
    rare = min(
        (c for c in counts if c[2] >= 3),
        key=lambda c: abs(np.log(c[2] / total) - np.log(0.001)),
    )
    res["common"] = {"slug": common[0], "products": common[2]}
    res["rare"] = {"slug": rare[0], "products": rare[2]}

    # Queries and photos, prepared before the server starts.
    rows = data.catalog_rows()
    rng = np.random.default_rng(args.seed + 1)
    ct = [q[0] if isinstance(q, tuple | list) else q for q in data.text_queries()]
    ct = list(dict.fromkeys(q.strip() for q in ct if q and q.strip()))
    titles = list(dict.fromkeys(row_get(r, "title").strip() for r in rows if row_get(r, "title")))
    rng.shuffle(titles)
    rng.shuffle(ct)
    pool_list = [q[:500] for pair in zip(ct, titles[: len(ct)], strict=False) for q in pair]
    pool_list += [q[:500] for q in titles[len(ct) :]]
    pool = QueryPool(list(dict.fromkeys(pool_list)))
    row_cats = list(data.category_of(np.arange(len(rows))))

    def queries_for(name: str, k: int) -> list[str]:
        own = [i for i, c in enumerate(row_cats) if c == name and i < n]  # rows in the catalog
        picks = rng.permutation(own)[:k] if own else []
        out = []
        for j, i in enumerate(picks):
            r = rows[int(i)]
            if j % 2 and row_get(r, "baseColour"):
                out.append(f"{row_get(r, 'baseColour')} {name}".lower())
            else:
                out.append(row_get(r, "title")[:500])
        return out or [name.lower()]

    q = args.requests
    photo_rows = rng.permutation(len(rows))[: q["image"] + q["image_text"] + 10]
    say(f"making {len(photo_rows)} 800x800 JPEGs from myntra-small photos")
    photos = [jpeg_800(DATASET / row_get(rows[int(i)], "path")) for i in photo_rows]
    upload_src = rng.permutation(len(rows))[:6]
    uploads = [
        unique_jpeg_800(DATASET / row_get(rows[int(i)], "path"), np.random.default_rng())
        for i in upload_src
    ]

    gunicorn = worker = None
    try:
        say(f"starting gunicorn ({args.workers} workers) on 127.0.0.1:{port}")
        glog = size_dir / "gunicorn.log"
        t0 = time.perf_counter()
        gunicorn = start(
            [tool("gunicorn"), "-c", "searchsite/gunicorn.conf.py", "searchsite.wsgi"], env, glog
        )
        watch = StartWatch(gunicorn.pid, glog, t0)
        watch.start()
        client = Http(port)
        first = failing_since = None
        while time.perf_counter() - t0 < args.start_timeout and gunicorn.poll() is None:
            left = args.start_timeout - (time.perf_counter() - t0)
            try:
                status, body, _ = client.get_search({"q": "blue tshirt"}, timeout=max(1.0, left))
                if status == 200:
                    first = time.perf_counter() - t0
                    break
                if failing_since is None:
                    failing_since = time.perf_counter()
                    say(f"  start probe: HTTP {status} {body[:200]!r}")
                elif time.perf_counter() - failing_since > 10:
                    break  # answering, but not with results: give up
            except OSError:
                client.close()
            time.sleep(0.05)
        if first is None:
            raise RuntimeError(
                f"no search answer within {args.start_timeout} s; see {glog}:\n"
                + glog.read_text()[-3000:]
            )
        say(f"  first answer {first:.2f} s after launch")
        deadline = time.perf_counter() + max(20.0, args.start_timeout - first)
        while time.perf_counter() < deadline and len(watch.ready_at) < args.workers:
            if not watch.ready_at and time.perf_counter() - t0 > first + 10:
                break  # no readiness line in the log: stop sampling 10 s after the first answer
            time.sleep(0.1)
        time.sleep(0.3)
        watch.stop_event.set()
        watch.join(5)
        res["start_first_answer_s"] = first
        res["start_all_ready_s"] = (
            max(watch.ready_at) if len(watch.ready_at) >= args.workers else None
        )
        res["start_ready_s"] = sorted(watch.ready_at)
        res["mem_start"] = watch.peak()
        say(
            f"  workers ready at {', '.join(f'{t:.1f}' for t in sorted(watch.ready_at)) or '?'} s; "
            f"peak PSS master + workers {res['mem_start']['server_pss'] / 1024:.0f} MB"
        )

        def timed_phase(label: str, items: list, fn, limit_s: float) -> tuple[Series, list]:
            series, bodies = Series(), []
            end = time.perf_counter() + limit_s
            for item in items:
                if time.perf_counter() > end:
                    say(f"  {label}: time limit {limit_s:.0f} s reached")
                    break
                out = series.add(lambda item=item: fn(item))
                bodies.append((item, out[1] if out else None))
            p50, p99 = series.p(50), series.p(99)
            say(
                f"  {label}: n={len(series.ms)} p50={fmt(p50)} ms p99={fmt(p99)} ms"
                + (f" errors={len(series.errors)}" if series.errors else "")
            )
            return series, bodies

        limit = args.phase_limit
        say("text search, distinct queries (first hit of each)")
        cold_q = pool.take(q["text"])
        cold, _ = timed_phase("text distinct", cold_q, lambda s: client.get_search({"q": s}), limit)
        res["text"] = summary(cold)

        say("text search, repeated queries (per-process query cache warm)")
        warm_q = cold_q[: q["warm_set"]]
        for _ in range(2 * args.workers):  # prime: every worker this connection reaches
            for s in warm_q:
                client.get_search({"q": s})
        repeated = [s for _ in range(q["warm_rounds"]) for s in warm_q]
        warm, _ = timed_phase(
            "text repeated", repeated, lambda s: client.get_search({"q": s}), limit
        )
        res["text_repeated"] = summary(warm)

        for key, (slug, name, count) in (("common", common), ("rare", rare)):
            say(f"filtered text search, category={slug} ({count:,} products)")
            k = q["filtered"]
            own = queries_for(name, k // 2)
            general = pool.take(k - k // 2)
            items = [(s, True) for s in own] + [(s, False) for s in general]
            items = [items[i] for i in rng.permutation(len(items))]
            series, bodies = timed_phase(
                f"filtered {key}",
                items,
                lambda it, slug=slug: client.get_search({"q": it[0], "category": slug}),
                limit,
            )
            wrong = empty_own = empty_general = 0
            for (_s, is_own), body in bodies:
                if body is None:
                    continue
                payload = json.loads(body)
                hits = payload.get("results", [])
                wrong += sum(
                    1
                    for h in hits
                    if ((h.get("product") or {}).get("category") or {}).get("slug") != slug
                )
                if payload.get("count", 0) == 0:
                    if is_own:
                        empty_own += 1
                    else:
                        empty_general += 1
            res[f"filtered_{key}"] = {
                **summary(series),
                "slug": slug,
                "products": count,
                "wrong_category_hits": wrong,
                "empty_own_queries": empty_own,
                "own_queries": sum(1 for (_, o), b in bodies if o and b is not None),
                "empty_other_queries": empty_general,
                "other_queries": sum(1 for (_, o), b in bodies if not o and b is not None),
            }
            say(
                f"  wrong-category hits {wrong}; empty answers: {empty_own} of the category's own "
                f"queries, {empty_general} of the other queries"
            )

        say("image search, 800x800 JPEG uploads")
        series, _ = timed_phase(
            "image",
            photos[: q["image"]],
            lambda b: client.post_form(
                "/api/v1/search/", {}, {"image": ("photo.jpg", b, "image/jpeg")}
            ),
            limit,
        )
        res["image"] = summary(series)
        say("image + text search")
        items = list(zip(photos[q["image"] :], pool.take(q["image_text"]), strict=False))
        series, _ = timed_phase(
            "image+text",
            items[: q["image_text"]],
            lambda it: client.post_form(
                "/api/v1/search/", {"q": it[1]}, {"image": ("photo.jpg", it[0], "image/jpeg")}
            ),
            limit,
        )
        res["image_text"] = summary(series)
        client.close()

        say(f"throughput: {args.clients} concurrent clients, text, {args.throughput_s:.0f} s")
        res["throughput"] = throughput(port, pool, args.clients, args.throughput_s)
        say(
            f"  {res['throughput']['rps']:.1f} req/s, p50 {fmt(res['throughput']['p50_ms'])} ms, "
            f"p99 {fmt(res['throughput']['p99_ms'])} ms, errors {res['throughput']['errors']}"
        )

        time.sleep(1.0)
        res["mem_steady"] = memory_now(gunicorn.pid)
        say(
            f"steady memory: PSS master + workers {res['mem_steady']['server_pss'] / 1024:.0f} MB "
            f"(workers {res['mem_steady']['workers_pss'] / 1024:.0f} MB)"
        )

        say("upload -> found by its own photo (Celery worker in another process)")
        try:
            worker = start_celery(args, env, size_dir)
            res["upload"] = upload_check(args, worker, port, uploads)
        except Exception as exc:  # noqa: BLE001 - the other figures still stand
            traceback.print_exc()
            res["upload_error"] = f"{type(exc).__name__}: {exc}"[:500]
    finally:
        stop(worker, "celery worker")
        stop(gunicorn, "gunicorn")
    text = (size_dir / "gunicorn.log").read_text(errors="replace")
    res["gunicorn_log"] = {
        "booted": len(BOOT_RE.findall(text)),
        "worker_timeouts": text.count("WORKER TIMEOUT"),
        "tracebacks": text.count("Traceback"),
    }
    return res


def summary(series: Series) -> dict:
    return {
        "n": len(series.ms),
        "p50_ms": series.p(50),
        "p99_ms": series.p(99),
        "mean_ms": float(np.mean(series.ms)) if series.ms else None,
        "errors": len(series.errors),
    }


def memory_now(master: int) -> dict:
    workers = {pid: m for pid in children_of(master) if (m := memory_kb(pid))}
    master_mem = memory_kb(master) or (0, 0)
    return {
        "server_pss": sum(m[1] for m in workers.values()) + master_mem[1],
        "workers_pss": sum(m[1] for m in workers.values()),
        "workers_rss": sum(m[0] for m in workers.values()),
        "master_pss": master_mem[1],
        "master_rss": master_mem[0],
        "per_worker_pss": {pid: m[1] for pid, m in workers.items()},
        "per_worker_rss": {pid: m[0] for pid, m in workers.items()},
    }


def throughput(port: int, pool: QueryPool, clients: int, seconds: float) -> dict:
    lock = threading.Lock()
    series = Series()
    end = time.perf_counter() + seconds
    max_requests = 20000

    def run() -> None:
        client = Http(port)
        local = Series()
        while time.perf_counter() < end and len(local.ms) + len(local.errors) < max_requests:
            (s,) = pool.take(1)
            local.add(lambda s=s: client.get_search({"q": s}))
        client.close()
        with lock:
            series.ms += local.ms
            series.errors += local.errors

    t = time.perf_counter()
    threads = [threading.Thread(target=run, daemon=True) for _ in range(clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(seconds + 60)
    elapsed = time.perf_counter() - t
    return {
        "clients": clients,
        "seconds": elapsed,
        "requests": len(series.ms),
        "rps": len(series.ms) / elapsed,
        "p50_ms": series.p(50),
        "p99_ms": series.p(99),
        "errors": len(series.errors),
    }


def start_celery(args, env: dict, size_dir: Path) -> subprocess.Popen:
    """A real worker process; ready once it answers a control ping (its log says nothing at
    LOG_LEVEL=WARNING: the project's LOGGING sets the celery logger to LOG_LEVEL)."""
    import redis
    from celery import Celery

    r = redis.Redis.from_url(args.redis_url, socket_timeout=5)
    r.delete(env.get("CELERY_TASK_DEFAULT_QUEUE", "celery"))  # our own db: stale tasks only
    clog = size_dir / "celery.log"
    name = f"bench-e2e-{os.getpid()}@bench"
    t = time.perf_counter()
    worker = start(
        [tool("celery"), "-A", "searchsite", "worker", "--concurrency=1", "--loglevel=WARNING"]
        + ["-n", name],
        env,
        clog,
    )
    worker.bench_name = name
    control = Celery(broker=args.redis_url).control
    while time.perf_counter() - t < 120 and worker.poll() is None:
        if control.ping(destination=[name], timeout=0.5):
            worker.bench_ready_s = time.perf_counter() - t
            # Then wait until its pool processes are idle (a warm-up at process start, if the
            # project has one, is done): "the first upload" is the first to a settled worker.
            settle_cpu(worker.pid, quiet_s=1.0, limit_s=90)
            worker.bench_settled_s = time.perf_counter() - t
            say(
                f"  celery worker answers after {worker.bench_ready_s:.1f} s, "
                f"idle after {worker.bench_settled_s:.1f} s"
            )
            return worker
    stop(worker, "celery worker")
    raise RuntimeError(
        f"celery worker not ready in 120 s; see {clog}:\n" + clog.read_text()[-3000:]
    )


def cpu_ticks(pid: int) -> int | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime
    except (OSError, IndexError, ValueError):
        return None


def settle_cpu(master: int, *, quiet_s: float, limit_s: float) -> None:
    """Waits until the child processes of ``master`` (the pool) use no CPU for ``quiet_s``, at
    most ``limit_s``."""
    end = time.perf_counter() + limit_s
    last, quiet_since = None, time.perf_counter()
    while time.perf_counter() < end:
        pids = children_of(master) or [master]
        now = tuple(cpu_ticks(p) for p in pids)
        if now != last:
            last, quiet_since = now, time.perf_counter()
        elif time.perf_counter() - quiet_since >= quiet_s:
            return
        time.sleep(0.2)


def upload_check(args, worker: subprocess.Popen, port: int, photos: list[bytes]) -> dict:
    client = Http(port)
    status, body, _ = client.request(
        "POST",
        "/api/v1/auth/token/",
        body=urllib.parse.urlencode({"username": BENCH_USER, "password": BENCH_PASSWORD}),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    if status != 200:
        raise RuntimeError(f"token: HTTP {status} {body[:300]!r}")
    auth = {"Authorization": f"Token {json.loads(body)['token']}"}
    out: dict = {
        "worker_ready_s": worker.bench_ready_s,
        "worker_settled_s": worker.bench_settled_s,
        "times_s": [],
        "create_ms": [],
    }
    created = []
    try:
        for i, photo in enumerate(photos):
            sku = f"{UPLOAD_SKU_PREFIX}{uuid.uuid4().hex[:12]}"
            client.close()  # a fresh connection: a create is not retried
            t = time.perf_counter()
            status, body, ms = client.post_form(
                "/api/v1/products/",
                {"title": f"Bench upload {i}", "category": "Tshirts", "price": "19.99", "sku": sku},
                {"images": (f"upload-{i}.jpg", photo, "image/jpeg")},
                headers=auth,
                retry=False,
            )
            if status != 201:
                raise RuntimeError(f"product create: HTTP {status} {body[:300]!r}")
            pid = json.loads(body)["id"]
            created.append(pid)
            out["create_ms"].append(ms)
            found = None
            while time.perf_counter() - t < args.upload_timeout:
                try:
                    status, body, _ = client.post_form(
                        "/api/v1/search/", {}, {"image": ("q.jpg", photo, "image/jpeg")}
                    )
                except OSError:
                    client.close()
                    status = 0
                if status == 200:
                    hits = json.loads(body).get("results") or []
                    if hits and hits[0]["product"]["id"] == pid:
                        found = time.perf_counter() - t
                        break
                time.sleep(0.05)
            out["times_s"].append(found)
            say(
                f"  upload {i + 1}: "
                + (f"found after {found:.2f} s" if found is not None else "NOT found")
                + f" (create {ms:.0f} ms)"
            )
    finally:
        for pid in created:
            try:
                client.request("DELETE", f"/api/v1/products/{pid}/", headers=auth)
            except OSError:
                client.close()
        client.close()
    return out


# --- report ----------------------------------------------------------------------------------------
def fmt(v, digits: int = 1) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def verdict(key: str, value) -> tuple[str, str]:
    if key not in TARGETS:
        return "", ""
    op, target = TARGETS[key]
    if value is None:
        return f"{op} {target}", "MISS"
    ok = value <= target if op == "<=" else value >= target
    return f"{op} {target}", "ok" if ok else "MISS"


def table_rows(res: dict) -> list[dict]:
    rows: list[dict] = []

    def add(label: str, value: str, key: str | None = None, num=None, note: str = "") -> None:
        target, ok = verdict(key, num) if key else ("", "")
        rows.append(
            {
                "metric": label,
                "value": value,
                "key": key,
                "num": num,
                "target": target,
                "ok": ok,
                "note": note,
            }
        )

    load = "kept (loaded earlier)" if not res.get("loaded") else f"loaded in {res['load_s']:.0f} s"
    add("catalog", f"{res['size']:,} products, {res['db']}", note=load)
    add("rebuild_index", f"{res['rebuild_s']:.1f} s", "rebuild_s", res["rebuild_s"])
    if "start_first_answer_s" in res:
        ready = res.get("start_all_ready_s")
        add(
            "start: launch -> first search answer",
            f"{res['start_first_answer_s']:.2f} s",
            "start_first_answer_s",
            res["start_first_answer_s"],
            note=f"all {res['workers']} workers ready {fmt(ready, 2)} s",
        )
    for label, key, tkey in (
        ("text search, distinct queries", "text", "text"),
        ("text search, repeated queries", "text_repeated", None),
        ("image search (800x800 JPEG)", "image", "image"),
        ("image + text search", "image_text", None),
    ):
        s = res.get(key)
        if not s:
            continue
        note = f"n={s['n']}" + (f", errors {s['errors']}" if s["errors"] else "")
        add(f"{label} p50", f"{fmt(s['p50_ms'])} ms", tkey and f"{tkey}_p50_ms", s["p50_ms"], note)
        if tkey == "text":
            add(f"{label} p99", f"{fmt(s['p99_ms'])} ms", "text_p99_ms", s["p99_ms"])
        else:
            add(f"{label} p99", f"{fmt(s['p99_ms'])} ms")
    for key in ("common", "rare"):
        s = res.get(f"filtered_{key}")
        if not s:
            continue
        note = (
            f"n={s['n']}; wrong-category hits {s['wrong_category_hits']}; empty: "
            f"{s['empty_own_queries']}/{s['own_queries']} own, "
            f"{s['empty_other_queries']}/{s['other_queries']} other queries"
        )
        label = f"filtered text, {key} (category={s['slug']}, {s['products']:,})"
        add(f"{label} p50", f"{fmt(s['p50_ms'])} ms", f"filtered_{key}_p50_ms", s["p50_ms"], note)
        add(f"{label} p99", f"{fmt(s['p99_ms'])} ms")
    t = res.get("throughput")
    if t:
        add(
            f"throughput, {t['clients']} clients (text, distinct)",
            f"{t['rps']:.1f} req/s",
            "throughput_rps",
            t["rps"],
            f"p50 {fmt(t['p50_ms'])} ms, p99 {fmt(t['p99_ms'])} ms, {t['requests']} in "
            f"{t['seconds']:.0f} s, errors {t['errors']}",
        )
    for key, label in (("mem_start", "at start (peak)"), ("mem_steady", "steady")):
        m = res.get(key)
        if not m:
            continue
        per = ", ".join(f"{v / 1024:.0f}" for v in m["per_worker_pss"].values())
        add(
            f"memory {label}: PSS of master + {len(m['per_worker_pss'])} workers",
            f"{m['server_pss'] / 1024:.0f} MB",
            f"mem_server_pss_{key.split('_')[1]}_mb",
            m["server_pss"] / 1024,
            f"workers {m['workers_pss'] / 1024:.0f} MB (each {per}), master "
            f"{m['master_pss'] / 1024:.0f} MB; workers' RSS sum {m['workers_rss'] / 1024:.0f} MB",
        )
    u = res.get("upload")
    if u:
        times = u["times_s"]
        first = times[0] if times else None
        rest = times[1:]
        worst = None if any(x is None for x in rest) or not rest else max(rest)
        add(
            "upload -> found by own photo, first",
            f"{fmt(first, 2)} s",
            "upload_first_s",
            first,
            (f"create {u['create_ms'][0]:.0f} ms; " if u["create_ms"] else "")
            + f"worker answered {fmt(u['worker_ready_s'])} s, idle {fmt(u['worker_settled_s'])} s"
            " after launch",
        )
        add(
            f"upload -> found, next {len(rest)} (max)",
            f"{fmt(worst, 2)} s",
            "upload_next_max_s",
            worst,
            "each " + ", ".join(fmt(x, 2) for x in rest) + " s",
        )
    if res.get("upload_error"):
        add("upload -> found by own photo", "FAILED", "upload_first_s", None, res["upload_error"])
    g = res.get("gunicorn_log")
    if g:
        add(
            "gunicorn log",
            f"{g['booted']} workers booted",
            note=f"worker timeouts {g['worker_timeouts']}, tracebacks {g['tracebacks']}",
        )
    return rows


def print_table(res: dict, rows: list[dict]) -> None:
    print(f"\n### {res['size']:,} products, {res['workers']} gunicorn workers\n")
    print("| metric | value | target (1M) | | notes |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['metric']} | {r['value']} | {r['target']} | {r['ok']} | {r['note']} |")
    print(flush=True)


def git_state() -> dict:
    def run(*cmd: str) -> str:
        try:
            return subprocess.run(
                cmd, cwd=ROOT, capture_output=True, text=True, timeout=20
            ).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""

    dirty = run("git", "status", "--porcelain", "--", "embeddings", "catalog", "searchsite")
    return {"commit": run("git", "rev-parse", "--short", "HEAD"), "dirty": dirty.splitlines()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument(
        "--pg-url", default=os.environ.get("PG_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    )
    parser.add_argument(
        "--redis-url", default="redis://127.0.0.1:6379/7", help="Celery broker (a db of its own)"
    )
    parser.add_argument("--workers", type=int, default=4, help="gunicorn workers")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients (throughput)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--conn-max-age",
        type=int,
        default=60,
        help="DATABASE_CONN_MAX_AGE of the server (the documented production value)",
    )
    parser.add_argument("--reload", action="store_true", help="load the databases again")
    parser.add_argument(
        "--load-only", action="store_true", help="only create/load the databases, measure nothing"
    )
    parser.add_argument("--start-timeout", type=float, default=300.0)
    parser.add_argument("--rebuild-timeout", type=float, default=3600.0)
    parser.add_argument("--upload-timeout", type=float, default=30.0)
    parser.add_argument("--quick", action="store_true", help="20,000 products, fewer requests")
    args = parser.parse_args()
    if args.quick:
        args.sizes = [20_000]
        args.requests = dict(
            text=60, warm_set=10, warm_rounds=6, filtered=40, image=30, image_text=15
        )
        args.throughput_s, args.phase_limit = 8.0, 60.0
    else:
        args.requests = dict(
            text=200, warm_set=20, warm_rounds=10, filtered=100, image=100, image_text=50
        )
        args.throughput_s, args.phase_limit = 15.0, 180.0
    if not (DATASET / "manifest.csv").is_file():
        sys.exit(f"{DATASET}/manifest.csv not found")
    if not STARTER.is_file():
        sys.exit(f"{STARTER} not found: the bench uses the starter model")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    data, data_tag = data_module()
    mid = model_id()
    state = git_state()
    load_start = os.getloadavg()
    say(
        f"bench_e2e: sizes {args.sizes}, {args.workers} workers, commit {state['commit']}"
        + (f" + uncommitted changes in {len(state['dirty'])} files" if state["dirty"] else "")
        + f"; model {mid}; data {data_tag}; load average {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}"
    )
    report = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        **state,
        "model_id": mid,
        "data": data_tag,
        "args": {k: v for k, v in vars(args).items() if k != "pg_url"},
        "loadavg_start": load_start,
        "sizes": [],
    }
    VAR.mkdir(parents=True, exist_ok=True)
    tables = []
    for n in args.sizes:
        say(f"=== {n:,} products ===")
        if args.load_only:
            env, size_dir = server_env(args, n)
            ensure_database(args, n, env, data, data_tag, mid, size_dir / "manage.log")
            continue
        try:
            res = measure_size(args, n, data, data_tag, mid)
        except Exception as exc:  # noqa: BLE001 - report it, go on with the next size
            traceback.print_exc()
            report["sizes"].append({"size": n, "error": f"{type(exc).__name__}: {exc}"})
            tables.append(({"size": n, "workers": args.workers}, None, str(exc)))
            continue
        rows = table_rows(res)
        report["sizes"].append({**res, "rows": rows})
        tables.append((res, rows, None))
        RESULTS.write_text(json.dumps(report, indent=1, default=str))
        if len(args.sizes) > 1:
            print_table(res, rows)  # all of them again at the end
    if args.load_only:
        return
    report["loadavg_end"] = os.getloadavg()
    RESULTS.write_text(json.dumps(report, indent=1, default=str))

    print(
        f"\n## End-to-end bench (gunicorn + PostgreSQL), commit {state['commit']}"
        + (" (with uncommitted changes)" if state["dirty"] else "")
    )
    for res, rows, error in tables:
        if rows is None:
            print(f"\n### {res['size']:,} products: FAILED: {error}\n")
        else:
            print_table(res, rows)
    le = report["loadavg_end"]
    print(f"load average at start: {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}")
    print(f"load average at end:   {le[0]:.2f} {le[1]:.2f} {le[2]:.2f}")
    print(f"rows written to {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
