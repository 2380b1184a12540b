#!/usr/bin/env python
"""Index-only benchmark at catalog scale: the FAISS kinds the engine uses (flat, IVF with an HNSW
coarse quantizer, IVF-PQ), plain HNSW, and the classic approaches (a NumPy scan, Annoy, an exact
scan inside PostgreSQL over real[] arrays, PostgreSQL's `cube` GiST over PCA-reduced vectors,
pgvector when it can be installed) on the same vectors, queries and ground truth.

Data (scripts/bench_data.py): the 39,680 myntra-small catalog photos embedded by the starter
model (256-d), plus noise-perturbed copies (cosine 0.90 to their source: near-duplicate product
photos) up to each size. Queries: the 80 most common "colour type" text queries ("black
tshirts") through the text tower, and 200 image queries (real photos' vectors perturbed to
cosine 0.95: a new photo of a catalog product). Ground truth: exact inner-product top 10.

Each query is timed alone (k=100, as the engine asks; the SQL approaches LIMIT 10) on one
thread (FAISS OpenMP and BLAS limited to 1; PostgreSQL without parallel workers), each query's
fastest of --repeats passes (default 3: the machine may be shared; SQL rows run once). recall@10 is
the overlap of the first 10 results with the exact top 10 (ties within 1e-5 count), averaged
over the distinct queries.
Builds use --build-threads (default 2) and are cached under var/bench/ (the table shows the
original build time; "cached" in the log). bytes/vector is the serialized index (or table plus
index) size over n.

    python scripts/bench_index.py [--sizes 100000 1000000] [--quick] [--skip annoy pg_cube ...]

Writes var/bench/results-index.json (rows + run metadata) for the report.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_data as bd  # noqa: E402

K = 100  # results per query, as the search engine asks FAISS
APPROACHES = (
    "flat",
    "numpy",
    "ivf",
    "ivfpq",
    "hnsw",
    "annoy",
    "pca",
    "pg_exact",
    "pg_cube",
    "pgvector",
)
BENCH_DB = "shopsearch_bench_vectors"
TIE_EPS = 1e-5  # scores this close to the exact 10th count as ties (float32 rounding)
REPEAT_MAX_S = 15.0  # no further timing pass once a pass took this long (the slow scans)


# -- helpers ------------------------------------------------------------------------------------
def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


@contextmanager
def threads(n: int):
    """FAISS OpenMP and every BLAS pool limited to ``n`` threads inside the block."""
    import faiss
    from threadpoolctl import threadpool_limits

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    try:
        with threadpool_limits(n):
            yield
    finally:
        faiss.omp_set_num_threads(before)


def atomic_write(path: Path, write: Callable[[str], None]) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Queries:
    """The query set of one run, in an interleaved order (text, image, text, ...) so that any
    prefix is balanced: approaches too slow to run every query run a prefix."""

    def __init__(self, n_text: int, n_image: int, seed: int) -> None:
        text = bd.text_query_vectors()
        image = bd.image_query_vectors(n_image, seed)
        self.unique = np.ascontiguousarray(np.concatenate([text, image]), dtype=np.float32)
        self.n_text_unique = len(text)
        text_order = [i % len(text) for i in range(n_text)]  # repeats when n_text > 80
        image_order = [len(text) + i for i in range(n_image)]
        order: list[int] = []
        for i in range(max(n_text, n_image)):
            if i < n_text:
                order.append(text_order[i])
            if i < n_image:
                order.append(image_order[i])
        self.order = order  # rows of self.unique, in the order they are run
        self.single = [self.unique[i : i + 1] for i in range(len(self.unique))]

    def is_text(self, row: int) -> bool:
        return row < self.n_text_unique


def measure(
    search: Callable[[int], np.ndarray],
    queries: Queries,
    truth: Truth,
    limit: int | None = None,
    budget_s: float | None = None,
    repeats: int = 1,
) -> dict:
    """Times ``search`` (a row of queries.unique in, ranked ids out) over the query order (or its
    first ``limit`` queries, or as many as ``budget_s`` allows); recall@10 over distinct queries.

    With ``repeats`` > 1 the whole pass runs up to that many times (while a pass takes under
    REPEAT_MAX_S) and each query keeps its fastest time: on a machine shared with other work this
    drops the stalls that are not the index's."""
    order = queries.order[:limit] if limit else queries.order
    times, got = [math.inf] * len(order), {}
    started = time.perf_counter()
    done = len(order)
    for attempt in range(repeats):
        if attempt and time.perf_counter() - started > REPEAT_MAX_S * attempt:
            break
        for pos, row in enumerate(order[:done]):
            t = time.perf_counter()
            ids = search(row)
            times[pos] = min(times[pos], (time.perf_counter() - t) * 1000)
            if attempt == 0:
                got[row] = np.asarray(ids[:10])
                if budget_s and time.perf_counter() - started > budget_s and pos >= 3:
                    done = pos + 1
                    break
    times = times[:done]
    recalls = {True: [], False: []}
    for row, ids in got.items():
        recalls[queries.is_text(row)].append(truth.hits(row, ids) / 10)
    return {
        "p50_ms": float(np.percentile(times, 50)),
        "p99_ms": float(np.percentile(times, 99)),
        "recall_text": float(np.mean(recalls[True])) if recalls[True] else None,
        "recall_image": float(np.mean(recalls[False])) if recalls[False] else None,
        "queries": len(times),
    }


class Truth:
    """Exact top 10 of each query. A result counts as a hit when it is in the exact top 10 or
    scores within TIE_EPS of its 10th score: near-duplicate copies tie to float32 rounding, and
    two exact scans (BLAS, FAISS) may order such ties differently."""

    def __init__(self, x: np.ndarray, queries: Queries) -> None:
        import faiss

        self.x, self.q = x, queries.unique
        scores, self.ids = faiss.knn(self.q, x, 10, metric=faiss.METRIC_INNER_PRODUCT)
        self.kth = scores[:, 9]

    def hits(self, row: int, ids: np.ndarray) -> int:
        ids = np.asarray(ids[:10], dtype=np.int64)
        ids = ids[ids >= 0]
        if not len(ids):
            return 0
        exact = np.isin(ids, self.ids[row])
        tied = self.x[ids] @ self.q[row] >= self.kth[row] - TIE_EPS
        return int(np.count_nonzero(exact | tied))


def faiss_ids(index, queries: Queries, k: int = K) -> Callable[[int], np.ndarray]:
    def search(row: int) -> np.ndarray:
        return index.search(queries.single[row], k)[1][0]

    return search


def cached_faiss(name: str, build: Callable[[], tuple[object, dict]]) -> tuple[object, dict]:
    """The FAISS index cached as var/bench/<name>.faiss (+ .json with its build figures)."""
    import faiss

    path, meta_path = bd.cache_path(name + ".faiss"), bd.cache_path(name + ".json")
    if path.is_file() and meta_path.is_file():
        log(f"  {name}: cached")
        index = faiss.read_index(str(path))
        meta = json.loads(meta_path.read_text())
    else:
        index, meta = build()
        atomic_write(path, lambda tmp: faiss.write_index(index, tmp))
        meta["bytes"] = path.stat().st_size
        atomic_write(meta_path, lambda tmp: Path(tmp).write_text(json.dumps(meta)))
    meta["bytes"] = path.stat().st_size
    return index, meta


def add_in_chunks(index, x: np.ndarray, label: str, ids: bool = True, chunk: int = 50_000) -> None:
    from tqdm import tqdm

    for start in tqdm(range(0, len(x), chunk), desc=label, unit="chunk", file=sys.stdout):
        part = np.ascontiguousarray(x[start : start + chunk])
        if ids:
            index.add_with_ids(part, np.arange(start, start + len(part), dtype=np.int64))
        else:
            index.add(part)


def row(approach: str, params: str, build_s, bytes_per_vector, m: dict | None, note: str = ""):
    r = {
        "approach": approach,
        "params": params,
        "build_s": build_s,
        "bytes_per_vector": bytes_per_vector,
        "p50_ms": None,
        "p99_ms": None,
        "recall_text": None,
        "recall_image": None,
        "queries": 0,
        "note": note,
    }
    if m:
        r.update(m)
    line = " | ".join(str(v) for v in table_cells(r))
    log(f"  -> {line}")
    return r


# -- FAISS --------------------------------------------------------------------------------------
def nlist_for(n: int) -> int:
    """As embeddings/engine/kinds.py choose_params: 4 * sqrt(n), at least ~39 vectors a list."""
    return max(1, min(int(4 * math.sqrt(n)), n // 39))


def train_sample(x: np.ndarray, nlist: int, seed: int = 0) -> np.ndarray:
    """As the engine: 64 vectors a list, drawn without replacement."""
    size = min(len(x), 64 * nlist)
    rows = np.sort(np.random.default_rng(seed).choice(len(x), size, replace=False))
    return np.ascontiguousarray(x[rows], dtype=np.float32)


def build_ivf(x: np.ndarray, nlist: int, build_threads: int, hnsw_m: int = 32):
    """IndexIVFFlat over an HNSW coarse quantizer, trained and filled as the engine does."""
    import faiss

    def build():
        d = x.shape[1]
        quantizer = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.own_fields = True
        quantizer.this.disown()
        sample = train_sample(x, nlist)
        log(f"  ivf: k-means, {nlist} lists on {len(sample):,} vectors ({build_threads} threads)")
        index.verbose = True
        with threads(build_threads):
            t = time.perf_counter()
            index.train(sample)
            train_s = time.perf_counter() - t
            index.verbose = False
            t = time.perf_counter()
            add_in_chunks(index, x, "  ivf add")
            add_s = time.perf_counter() - t
        return index, {"train_s": train_s, "add_s": add_s, "build_s": train_s + add_s}

    return cached_faiss(f"ivf-{len(x)}-{nlist}-hnsw{hnsw_m}-{bd.model_hash()}", build)


def set_probe(index, nprobe: int, quantizer_ef: int | None = None) -> None:
    """nprobe lists, found by the HNSW coarse quantizer with efSearch max(64, 2 * nprobe), as
    embeddings/engine/segments.py asks per search (its SearchParametersIVF.quantizer_params)."""
    import faiss

    index.nprobe = nprobe
    quantizer = faiss.downcast_index(index.quantizer)
    quantizer.hnsw.efSearch = quantizer_ef or max(64, 2 * nprobe)


def build_ivfpq(x: np.ndarray, ivf, ivf_meta: dict, m: int, build_threads: int):
    """IndexIVFPQ (m bytes a vector) on the IVF index's trained coarse quantizer (the same
    k-means the engine would run): only the product quantizer is trained here."""
    import faiss

    def build():
        d, nlist = x.shape[1], ivf.nlist
        quantizer = faiss.clone_index(ivf.quantizer)
        index = faiss.IndexIVFPQ(quantizer, d, nlist, m, 8, faiss.METRIC_INNER_PRODUCT)
        index.own_fields = True
        quantizer.this.disown()
        sample = train_sample(x, nlist)
        with threads(build_threads):
            t = time.perf_counter()
            index.train(sample)  # coarse quantizer already trained: PQ codebooks only
            train_s = time.perf_counter() - t
            t = time.perf_counter()
            add_in_chunks(index, x, f"  ivfpq{m} add")
            add_s = time.perf_counter() - t
        build_s = ivf_meta["train_s"] + train_s + add_s
        return index, {"pq_train_s": train_s, "add_s": add_s, "build_s": build_s}

    return cached_faiss(f"ivfpq{m}-{len(x)}-{ivf.nlist}-{bd.model_hash()}", build)


def build_hnsw(x: np.ndarray, m: int, build_threads: int):
    import faiss

    def build():
        index = faiss.IndexHNSWFlat(x.shape[1], m, faiss.METRIC_INNER_PRODUCT)
        log(f"  hnsw: M={m}, efConstruction={index.hnsw.efConstruction} ({build_threads} threads)")
        with threads(build_threads):
            t = time.perf_counter()
            add_in_chunks(index, x, "  hnsw add", ids=False)
        return index, {"build_s": time.perf_counter() - t}

    return cached_faiss(f"hnsw{m}-{len(x)}-{bd.model_hash()}", build)


# -- Annoy --------------------------------------------------------------------------------------
def build_annoy(x: np.ndarray, n_trees: int, build_threads: int):
    from annoy import AnnoyIndex
    from tqdm import tqdm

    d = x.shape[1]
    name = f"annoy-{len(x)}-{n_trees}-{bd.model_hash()}"
    path, meta_path = bd.cache_path(name + ".ann"), bd.cache_path(name + ".json")
    if not (path.is_file() and meta_path.is_file()):
        t = time.perf_counter()
        index = AnnoyIndex(d, "angular")  # on unit vectors angular distance ranks as cosine
        for start in tqdm(range(0, len(x), 50_000), desc="  annoy add", file=sys.stdout):
            for i, v in enumerate(np.asarray(x[start : start + 50_000]).tolist(), start):
                index.add_item(i, v)
        log(f"  annoy: building {n_trees} trees ({build_threads} threads)")
        index.build(n_trees, n_jobs=build_threads)
        build_s = time.perf_counter() - t
        atomic_write(path, lambda tmp: index.save(tmp))
        index.unload()
        atomic_write(meta_path, lambda tmp: Path(tmp).write_text(json.dumps({"build_s": build_s})))
    else:
        log(f"  {name}: cached")
    index = AnnoyIndex(d, "angular")
    index.load(str(path))  # memory-mapped
    meta = json.loads(meta_path.read_text())
    meta["bytes"] = path.stat().st_size
    return index, meta


# -- PCA ----------------------------------------------------------------------------------------
def pca_basis(x: np.ndarray, dims: int, sample: int = 100_000, seed: int = 0) -> np.ndarray:
    """(d, dims) top right-singular vectors of a sample, without centring: inner products are
    what is ranked, and an uncentred basis keeps q.x ~ (qW).(xW)."""
    rows = np.sort(np.random.default_rng(seed).choice(len(x), min(sample, len(x)), replace=False))
    s = np.asarray(x[rows], dtype=np.float64)
    eigval, eigvec = np.linalg.eigh(s.T @ s)
    return np.ascontiguousarray(eigvec[:, ::-1][:, :dims], dtype=np.float32)


def reduce(x: np.ndarray, basis: np.ndarray) -> np.ndarray:
    out = np.empty((len(x), basis.shape[1]), dtype=np.float32)
    for start in range(0, len(x), 100_000):
        out[start : start + 100_000] = bd._unit_rows(np.asarray(x[start : start + 100_000]) @ basis)
    return out


# -- PostgreSQL ---------------------------------------------------------------------------------
def pg_copy_arrays(conn, table: str, x: np.ndarray, label: str) -> None:
    """COPY (id int, v real[]) rows in PostgreSQL's binary format, built with NumPy."""
    from tqdm import tqdm

    d = x.shape[1]
    dtype = np.dtype(
        [
            ("fields", ">i2"),
            ("id_len", ">i4"),
            ("id", ">i4"),
            ("v_len", ">i4"),
            ("ndim", ">i4"),
            ("has_null", ">i4"),
            ("elem_oid", ">i4"),
            ("dim", ">i4"),
            ("lower", ">i4"),
            ("elems", [("len", ">i4"), ("v", ">f4")], (d,)),
        ]
    )
    with conn.cursor().copy(f"COPY {table} (id, v) FROM STDIN WITH (FORMAT binary)") as copy:
        copy.write(b"PGCOPY\n\xff\r\n\x00" + b"\x00" * 8)
        for start in tqdm(range(0, len(x), 20_000), desc=label, unit="chunk", file=sys.stdout):
            part = np.asarray(x[start : start + 20_000])
            rec = np.zeros(len(part), dtype=dtype)
            rec["fields"], rec["id_len"], rec["v_len"] = 2, 4, 20 + 8 * d
            rec["id"] = np.arange(start, start + len(part))
            rec["ndim"], rec["elem_oid"], rec["dim"], rec["lower"] = 1, 700, d, 1  # 700: float4
            rec["elems"]["len"], rec["elems"]["v"] = 4, part
            copy.write(rec.tobytes())
        copy.write(b"\xff\xff")


def pgvector_status(conn) -> str | None:
    """None when pgvector can be used here, else why not."""
    if conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'").fetchone():
        return None
    server = conn.execute("SHOW server_version_num").fetchone()[0][:2]
    package = f"postgresql-{server}-pgvector"
    candidate = "unknown"
    if shutil.which("apt-cache"):
        out = subprocess.run(
            ["apt-cache", "policy", package], capture_output=True, text=True, timeout=30
        ).stdout
        candidate = next(
            (ln.split(":", 1)[1].strip() for ln in out.splitlines() if "Candidate:" in ln),
            "none",
        )
    return (
        f"not installable on this machine: no 'vector' extension in the server and no {package} "
        f"in its apt sources (candidate: {candidate}; Debian 12 does not package pgvector). It "
        "takes the PGDG apt repository or a source build from GitHub; install it for this row"
    )


class Pg:
    """A throw-away database (created here, dropped at the end)."""

    def __init__(self, url: str) -> None:
        import psycopg

        self.base_url = url
        self.admin = psycopg.connect(url, autocommit=True, connect_timeout=5)
        self.admin.execute(f"DROP DATABASE IF EXISTS {BENCH_DB}")
        self.admin.execute(f"CREATE DATABASE {BENCH_DB}")
        self.conn = psycopg.connect(url.rsplit("/", 1)[0] + "/" + BENCH_DB, autocommit=True)
        # One core per query, as every other row of the table.
        self.conn.execute("SET max_parallel_workers_per_gather = 0")

    def size(self, table: str) -> int:
        return int(self.conn.execute(f"SELECT pg_total_relation_size('{table}')").fetchone()[0])

    def close(self) -> None:
        self.conn.close()
        self.admin.execute(f"DROP DATABASE IF EXISTS {BENCH_DB}")
        self.admin.close()


# -- one size -----------------------------------------------------------------------------------
def run_size(n: int, args) -> list[dict]:
    import faiss

    log(f"== {n:,} vectors ==")
    vectors, src = bd.synthetic(n, args.seed)
    x = np.ascontiguousarray(vectors, dtype=np.float32)  # in RAM, not the memory map
    del vectors
    d = x.shape[1]
    queries = Queries(args.text_queries, args.image_queries, args.seed)
    rows: list[dict] = []
    want = set(args.approaches)

    with threads(1):
        t = time.perf_counter()
        truth = Truth(x, queries)
        log(
            f"ground truth: exact top 10 of {len(queries.unique)} queries in {time.perf_counter() - t:.1f} s"
        )

    flat = None
    if want & {"flat", "ivfpq"}:
        t = time.perf_counter()
        flat = faiss.IndexFlatIP(d)
        flat.add(x)
        build_s = time.perf_counter() - t
        if "flat" in want:
            with threads(1):
                m = measure(faiss_ids(flat, queries), queries, truth, repeats=args.repeats)
            rows.append(row("faiss flat", "IndexFlatIP (exact)", build_s, 4 * d, m))

    if "numpy" in want:

        def numpy_scan(row_i: int) -> np.ndarray:
            scores = x @ queries.unique[row_i]
            top = np.argpartition(-scores, K)[:K]
            return top[np.argsort(-scores[top])]

        with threads(1):
            m = measure(numpy_scan, queries, truth, repeats=args.repeats)
        rows.append(row("numpy scan", "x @ q, argpartition", 0.0, 4 * d, m))

    if want & {"ivf", "ivfpq"}:
        nlist = nlist_for(n)
        ivf, meta = build_ivf(x, nlist, args.build_threads)
        if "ivf" in want:
            for nprobe in args.nprobe:
                set_probe(ivf, nprobe)
                with threads(1):
                    m = measure(faiss_ids(ivf, queries), queries, truth, repeats=args.repeats)
                rows.append(
                    row(
                        "faiss ivf",
                        f"IVFFlat nlist={nlist}, HNSW32 quantizer, nprobe={nprobe}",
                        meta["build_s"],
                        meta["bytes"] / n,
                        m,
                        note=f"train {meta['train_s']:.0f} s + add {meta['add_s']:.0f} s",
                    )
                )
            # Why the engine widens the quantizer's search: FAISS's default efSearch (16)
            # returns the nprobe lists from too small a graph walk.
            nprobe = args.nprobe[-1]
            set_probe(ivf, nprobe, quantizer_ef=16)
            with threads(1):
                m = measure(faiss_ids(ivf, queries), queries, truth, repeats=1)
            rows.append(
                row(
                    "faiss ivf (quantizer efSearch 16)",
                    f"as above, nprobe={nprobe}, but the HNSW quantizer at FAISS's default efSearch 16",
                    meta["build_s"],
                    meta["bytes"] / n,
                    m,
                    note="diagnostic, not the engine's setting",
                )
            )
        if "ivfpq" in want:
            for pq_m in args.pq_m:
                pq, pq_meta = build_ivfpq(x, ivf, meta, pq_m, args.build_threads)
                for nprobe in args.pq_nprobe:
                    set_probe(pq, nprobe)
                    with threads(1):
                        m = measure(faiss_ids(pq, queries), queries, truth, repeats=args.repeats)
                    rows.append(
                        row(
                            "faiss ivfpq",
                            f"IVFPQ m={pq_m}x8 bit, nlist={nlist}, nprobe={nprobe}",
                            pq_meta["build_s"],
                            pq_meta["bytes"] / n,
                            m,
                            note="build includes the IVF k-means",
                        )
                    )
                refine = faiss.IndexRefine(pq, flat)  # exact re-scoring from the full vectors
                for k_factor in args.refine_factor:
                    refine.k_factor = k_factor
                    for nprobe in args.refine_nprobe:
                        set_probe(pq, nprobe)
                        with threads(1):
                            m = measure(
                                faiss_ids(refine, queries), queries, truth, repeats=args.repeats
                            )
                        rows.append(
                            row(
                                "faiss ivfpq+refine",
                                f"IVFPQ m={pq_m} + RefineFlat k_factor={k_factor}, nprobe={nprobe}",
                                pq_meta["build_s"] + build_s,
                                pq_meta["bytes"] / n + 4 * d,
                                m,
                                note="NOT memory saving: keeps the full float32 vectors too",
                            )
                        )
                del refine, pq
        del ivf
    del flat
    gc.collect()

    if "hnsw" in want:
        hnsw, meta = build_hnsw(x, 32, args.build_threads)
        for ef in args.ef_search:
            hnsw.hnsw.efSearch = ef
            with threads(1):
                m = measure(faiss_ids(hnsw, queries), queries, truth, repeats=args.repeats)
            rows.append(
                row(
                    "faiss hnsw",
                    f"HNSWFlat M=32, efConstruction=40, efSearch={ef}",
                    meta["build_s"],
                    meta["bytes"] / n,
                    m,
                )
            )
        del hnsw
        gc.collect()

    if "annoy" in want and importlib.util.find_spec("annoy") is None:
        why = "not installed: pip install -e '.[bench]' (or pip install annoy)"
        rows.append(row("annoy", "-", None, None, None, note=why))
    elif "annoy" in want:
        annoy, meta = build_annoy(x, args.annoy_trees, args.build_threads)
        for search_k in args.annoy_search_k:

            def annoy_search(row_i: int, sk: int = search_k) -> np.ndarray:
                v = queries.unique[row_i].tolist()
                return np.asarray(annoy.get_nns_by_vector(v, K, search_k=sk))

            m = measure(annoy_search, queries, truth, repeats=args.repeats)
            rows.append(
                row(
                    "annoy",
                    f"angular, {args.annoy_trees} trees, search_k={search_k}",
                    meta["build_s"],
                    meta["bytes"] / n,
                    m,
                )
            )
        annoy.unload()
        del annoy

    basis = reduced = None
    if want & {"pca", "pg_cube"}:
        t = time.perf_counter()
        basis = pca_basis(x, args.cube_dims)
        reduced = reduce(x, basis)
        pca_s = time.perf_counter() - t
        q_reduced = bd._unit_rows(queries.unique @ basis)

        def pca_scan(row_i: int) -> np.ndarray:
            scores = reduced @ q_reduced[row_i]
            top = np.argpartition(-scores, K)[:K]
            return top[np.argsort(-scores[top])]

        if "pca" in want:
            with threads(1):
                m = measure(pca_scan, queries, truth, repeats=args.repeats)
            rows.append(
                row(
                    f"PCA-{args.cube_dims} exact",
                    f"numpy scan of unit {args.cube_dims}-d PCA vectors (what PCA alone costs)",
                    pca_s,
                    4 * args.cube_dims,
                    m,
                )
            )

    if want & {"pg_exact", "pg_cube", "pgvector"}:
        pg = Pg(args.pg_url)
        try:
            rows += run_pg(pg, n, x, queries, truth, args, reduced, basis)
        finally:
            pg.close()

    for r in rows:
        r["n"] = n
    return rows


def run_pg(pg: Pg, n: int, x, queries: Queries, truth: Truth, args, reduced, basis) -> list[dict]:
    rows = []
    conn = pg.conn
    big = n > 200_000
    if "pg_exact" in args.approaches or "pgvector" in args.approaches:
        conn.execute("CREATE UNLOGGED TABLE vecs (id int, v real[])")
        t = time.perf_counter()
        pg_copy_arrays(conn, "vecs", x, "  pg copy real[]")
        conn.execute("VACUUM ANALYZE vecs")
        load_s = time.perf_counter() - t
        log(f"  postgres: {n:,} real[256] rows loaded in {load_s:.0f} s")
    if "pg_exact" in args.approaches:
        sql = (
            "SELECT id FROM vecs ORDER BY "
            "(SELECT sum(a * b) FROM unnest(v, %s::real[]) AS t(a, b)) DESC LIMIT 10"
        )
        limit = args.pg_queries_1m if big else args.pg_queries

        def pg_exact(row_i: int) -> np.ndarray:
            v = queries.unique[row_i].tolist()
            return np.array([r[0] for r in conn.execute(sql, (v,)).fetchall()])

        m = measure(pg_exact, queries, truth, limit=limit)
        rows.append(
            row(
                "postgres exact",
                f"real[] table, SQL dot product over unnest, seq scan, LIMIT 10, {m['queries']} queries",
                load_s,
                pg.size("vecs") / n,
                m,
                note="one core (max_parallel_workers_per_gather=0); build = binary COPY",
            )
        )
    if "pg_cube" in args.approaches and reduced is not None:
        dims = reduced.shape[1]
        conn.execute("CREATE EXTENSION IF NOT EXISTS cube")
        conn.execute("CREATE UNLOGGED TABLE pca (id int, v real[])")
        t = time.perf_counter()
        pg_copy_arrays(conn, "pca", reduced, f"  pg copy PCA-{dims}")
        conn.execute("CREATE UNLOGGED TABLE cubes AS SELECT id, cube(v::float8[]) AS c FROM pca")
        conn.execute("DROP TABLE pca")
        load_s = time.perf_counter() - t
        log(f"  cube: {n:,} {dims}-d cubes loaded in {load_s:.0f} s; building the GiST index")
        t = time.perf_counter()
        conn.execute("SET maintenance_work_mem = '1GB'")
        conn.execute("CREATE INDEX cubes_gist ON cubes USING gist (c)")
        conn.execute("VACUUM ANALYZE cubes")
        gist_s = time.perf_counter() - t
        log(f"  cube: GiST built in {gist_s:.0f} s")
        q_reduced = bd._unit_rows(queries.unique @ basis)
        sql = "SELECT id FROM cubes ORDER BY c <-> cube(%s::float8[]) LIMIT 10"

        def pg_cube(row_i: int) -> np.ndarray:
            v = q_reduced[row_i].tolist()
            return np.array([r[0] for r in conn.execute(sql, (v,)).fetchall()])

        m = measure(pg_cube, queries, truth, budget_s=args.pg_budget_s)
        plan = "\n".join(
            r[0]
            for r in conn.execute(
                "EXPLAIN (ANALYZE, BUFFERS) " + sql, (q_reduced[0].tolist(),)
            ).fetchall()
        )
        buffers = next((ln.strip() for ln in plan.splitlines() if "Buffers" in ln), "")
        pages = int(conn.execute("SELECT pg_relation_size('cubes_gist') / 8192").fetchone()[0])
        rows.append(
            row(
                "postgres cube",
                f"GiST over unit PCA-{dims} cubes, ORDER BY <-> LIMIT 10, {m['queries']} queries",
                load_s + gist_s,
                pg.size("cubes") / n,
                m,
                note=f"GiST build {gist_s:.0f} s; one query's {buffers} (index: {pages} pages)",
            )
        )
    if "pgvector" in args.approaches:
        why = pgvector_status(conn)
        if why:
            rows.append(row("pgvector hnsw", "-", None, None, None, note=why))
        else:
            rows += run_pgvector(pg, n, queries, truth, args)
    return rows


def run_pgvector(pg: Pg, n: int, queries: Queries, truth: Truth, args) -> list[dict]:
    """pgvector HNSW (only where the extension is installed; not on the reference machine)."""
    conn = pg.conn
    conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    t = time.perf_counter()
    conn.execute("CREATE TABLE pv AS SELECT id, v::vector(256) AS v FROM vecs")
    conn.execute("SET maintenance_work_mem = '2GB'")
    conn.execute(
        "CREATE INDEX pv_hnsw ON pv USING hnsw (v vector_ip_ops) WITH (m = 16, ef_construction = 64)"
    )
    conn.execute("VACUUM ANALYZE pv")
    build_s = time.perf_counter() - t
    rows = []
    sql = "SELECT id FROM pv ORDER BY v <#> %s::real[]::vector LIMIT 10"
    for ef in args.ef_search:
        conn.execute(f"SET hnsw.ef_search = {int(ef)}")

        def search(row_i: int) -> np.ndarray:
            v = queries.unique[row_i].tolist()
            return np.array([r[0] for r in conn.execute(sql, (v,)).fetchall()])

        m = measure(search, queries, truth, budget_s=args.pg_budget_s)
        rows.append(
            row(
                "pgvector hnsw",
                f"m=16, ef_construction=64, ef_search={ef}, LIMIT 10",
                build_s,
                pg.size("pv") / n,
                m,
            )
        )
    return rows


# -- output -------------------------------------------------------------------------------------
COLUMNS = (
    "approach",
    "params",
    "build s",
    "bytes/vector",
    "p50 ms",
    "p99 ms",
    "recall@10 text",
    "recall@10 image",
)


def fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table_cells(r: dict) -> list[str]:
    params = r["params"] + (f" ({r['note']})" if r.get("note") else "")
    return [
        r["approach"],
        params,
        fmt(r["build_s"], ".1f"),
        fmt(r["bytes_per_vector"], ",.0f"),
        fmt(r["p50_ms"], ".2f"),
        fmt(r["p99_ms"], ".2f"),
        fmt(r["recall_text"], ".3f"),
        fmt(r["recall_image"], ".3f"),
    ]


def markdown(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(table_cells(r)) + " |" for r in rows]
    return "\n".join(lines)


def nprobe_recommendation(rows: list[dict], target: float) -> dict[int, int | None]:
    out: dict[int, int | None] = {}
    for n in sorted({r["n"] for r in rows}):
        ok = [
            int(r["params"].rsplit("nprobe=", 1)[1])
            for r in rows
            if r["n"] == n
            and r["approach"] == "faiss ivf"
            and (r["recall_text"] or 0) >= target
            and (r["recall_image"] or 0) >= target
        ]
        if any(r["n"] == n and r["approach"] == "faiss ivf" for r in rows):
            out[n] = min(ok) if ok else None
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--quick", action="store_true", help="100k only, fewer queries")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--text-queries", type=int, default=200, help="80 distinct, repeated")
    parser.add_argument("--image-queries", type=int, default=200)
    parser.add_argument("--nprobe", type=int, nargs="+", default=[8, 16, 32, 64, 128, 256])
    parser.add_argument("--pq-m", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--pq-nprobe", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--refine-nprobe", type=int, nargs="+", default=[32])
    parser.add_argument("--refine-factor", type=int, nargs="+", default=[2, 8])
    parser.add_argument("--ef-search", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--annoy-trees", type=int, default=50)
    parser.add_argument("--annoy-search-k", type=int, nargs="+", default=[5_000, 20_000, 100_000])
    parser.add_argument("--cube-dims", type=int, default=100, help="PCA dims for cube (max 100)")
    parser.add_argument("--pg-queries", type=int, default=20, help="exact SQL scan queries <=200k")
    parser.add_argument("--pg-queries-1m", type=int, default=4, help="... and above 200k")
    parser.add_argument("--pg-budget-s", type=float, default=60.0, help="per cube/pgvector row")
    parser.add_argument("--build-threads", type=int, default=2)
    parser.add_argument(
        "--repeats", type=int, default=3, help="timing passes, fastest kept per query (not SQL)"
    )
    parser.add_argument(
        "--pg-url", default=os.environ.get("PG_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    )
    parser.add_argument("--skip", nargs="*", default=[], choices=APPROACHES)
    parser.add_argument("--json", type=Path, default=bd.CACHE_DIR / "results-index.json")
    args = parser.parse_args()
    if args.quick:
        args.sizes = [s for s in args.sizes if s <= 100_000] or [100_000]
        args.text_queries, args.image_queries = (
            min(args.text_queries, 80),
            min(args.image_queries, 100),
        )
        args.pg_queries, args.pg_budget_s = min(args.pg_queries, 6), min(args.pg_budget_s, 20.0)
    args.approaches = [a for a in APPROACHES if a not in args.skip]
    args.cube_dims = min(args.cube_dims, 100)  # cube's CUBE_MAX_DIM

    import faiss

    load_start = os.getloadavg()
    started = time.perf_counter()
    log(
        f"FAISS {faiss.__version__}, {os.cpu_count()} CPUs, load average {load_start[0]:.2f} "
        f"{load_start[1]:.2f} {load_start[2]:.2f}; model {bd.encoder().model_id}; "
        f"searches on 1 thread, builds on {args.build_threads}"
    )
    rows: list[dict] = []
    for n in args.sizes:
        rows += run_size(n, args)
        gc.collect()
    load_end = os.getloadavg()
    elapsed = time.perf_counter() - started

    print()
    print(
        "## Index only: one query at a time on one thread, k=100 (SQL rows LIMIT 10); latency = "
        f"each query's fastest of {args.repeats} passes (SQL rows: one pass); recall@10 vs the "
        "exact inner-product top 10"
    )
    print(
        f"Data: {bd.DATASET.name} catalog photos (39,680) embedded by {bd.encoder().model_id}, "
        "plus copies perturbed to cosine 0.90 to their source; queries: 80 'colour type' texts, "
        f"{args.image_queries} photos perturbed to cosine 0.95."
    )
    for n in args.sizes:
        print(f"\n### {n:,} vectors\n")
        print(markdown([r for r in rows if r["n"] == n]))
    rec = nprobe_recommendation(rows, 0.95)
    print()
    for n, nprobe in rec.items():
        print(
            f"IVF: smallest nprobe with recall@10 >= 0.95 for text and image queries at {n:,}: "
            f"{nprobe if nprobe else 'none of ' + str(args.nprobe)}"
        )
    print(
        f"\nLoad average at start {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}, "
        f"at end {load_end[0]:.2f} {load_end[1]:.2f} {load_end[2]:.2f}; took {elapsed / 60:.1f} min"
    )
    meta = {
        "section": "index",
        "faiss": faiss.__version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "model": bd.encoder().model_id,
        "k": K,
        "loadavg_start": load_start,
        "loadavg_end": load_end,
        "elapsed_s": elapsed,
        "nprobe_for_recall_0_95": {str(n): v for n, v in rec.items()},
        "args": {k: v for k, v in vars(args).items() if k != "json"},
    }
    bd.CACHE_DIR.mkdir(parents=True, exist_ok=True)
    atomic_write(
        args.json,
        lambda tmp: Path(tmp).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1)),
    )
    print(f"Rows written to {args.json}")


if __name__ == "__main__":
    main()
