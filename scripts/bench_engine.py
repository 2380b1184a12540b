#!/usr/bin/env python
"""The search engine itself (embeddings/engine): latency and *filtered* recall of a top-10
product search against exact filtered search, per index kind, at 100k and 1M products.

Same data as the other benchmarks (scripts/bench_data.py: real starter-model vectors of the
shared catalog photos plus perturbed copies; one image a product), with each product's real
articleType as its category and a deterministic price. A base is built the way the product
builds one (embeddings.engine.kinds: flat, or IVF with an HNSW coarse quantizer storing
float16), written as a snapshot, memory-mapped back, and searched through VectorStore, i.e.
with the filters inside the FAISS scan and the query planner choosing how far to probe.

Filters: none; the most common category (t-shirts, ~16% of products); a rare one (~0.1%);
a price band (~10%). Ground truth: every vector of the filter scored exactly (NumPy).

    python scripts/bench_engine.py [--sizes 100000 1000000] [--nprobe 16 32 64] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_data as bd  # noqa: E402

from embeddings.engine.columns import Filter  # noqa: E402
from embeddings.engine.kinds import build_index, choose_params, trained_empty  # noqa: E402
from embeddings.engine.segments import BaseSegment  # noqa: E402
from embeddings.engine.snapshot import current_base, open_snapshot, write_snapshot  # noqa: E402
from embeddings.engine.store import VectorStore  # noqa: E402


def build(n: int, kind: str, vectors, columns, *, nprobe: int) -> tuple[VectorStore, dict]:
    params = choose_params(n, kind=kind, nprobe=nprobe, ivf_threshold=0)
    root = bd.CACHE_DIR / f"engine-{n}-{params.kind}-{params.nlist}-{bd.model_hash()}"
    info = {"build_s": None}
    if current_base(root) is None:
        shutil.rmtree(root, ignore_errors=True)
        t0 = time.perf_counter()
        print(f"  building {params.kind} over {n:,} vectors (nlist {params.nlist}) ...", flush=True)
        trained = trained_empty(vectors, params)
        index = build_index(vectors, trained)
        meta = {"model_id": "bench", "dim": vectors.shape[1], "params": params.to_dict()}
        write_snapshot(
            root, index=index, trained=trained, columns=columns, meta={**meta, "seq": 0, "gaps": []}
        )
        info["build_s"] = time.perf_counter() - t0
        del index, trained
    t0 = time.perf_counter()
    snap = open_snapshot(current_base(root), model_id="bench", dim=vectors.shape[1])
    info["open_s"] = time.perf_counter() - t0  # checksums of every file + memory-mapping
    info["bytes_per_vector"] = (current_base(root) / "index.faiss").stat().st_size / n
    params = snap.params
    if params.kind != "flat":
        params = type(params)(**{**params.to_dict(), "nprobe": nprobe})
    return VectorStore(vectors.shape[1], BaseSegment(snap.index, snap.columns, params)), info


def exact_top(vectors, mask_rows, q, k=10) -> list[int]:
    scores = vectors[mask_rows] @ q
    top = np.argpartition(-scores, min(k, len(scores) - 1))[:k]
    return mask_rows[top[np.argsort(-scores[top])]].tolist()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--nprobe", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--queries", type=int, default=100, help="text and image queries each")
    parser.add_argument("--quick", action="store_true", help="100k only, 40 queries")
    parser.add_argument("--json", type=Path, default=bd.CACHE_DIR / "results-engine.json")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.queries = [100_000], 40
    import faiss

    faiss.omp_set_num_threads(1)
    load0 = os.getloadavg()
    texts = bd.text_query_vectors()
    text_q = texts[np.arange(args.queries) % len(texts)]
    image_q = bd.image_query_vectors(args.queries, seed=1)
    rows_out = []
    for n in args.sizes:
        print(f"== {n:,} products", flush=True)
        vectors, src = bd.synthetic(n)
        vectors = np.ascontiguousarray(vectors)
        category = bd.category_of(src)
        names, cat_ids = np.unique(category, return_inverse=True)
        price = bd.price_of(src).astype(float)
        ids = np.arange(1, n + 1)
        columns = {
            "image_id": ids.astype(np.int64),
            "product_id": ids.astype(np.int64),
            "category_id": cat_ids.astype(np.int32),
            "price": price,
            "active": np.ones(n, bool),
        }
        counts = np.bincount(cat_ids)
        common = int(np.argmax(counts))
        share = counts / n
        rare = int(np.argmin(np.where(share >= 0.001, share, 1.0)))
        lo, hi = np.percentile(price, [45, 55])
        filters = {
            "none": Filter(),
            f"category {names[common]} ({share[common]:.1%})": Filter(category_ids=(common,)),
            f"category {names[rare]} ({share[rare]:.2%})": Filter(category_ids=(rare,)),
            "price band (10%)": Filter(price_min=float(lo), price_max=float(hi)),
        }
        kinds = ["flat", "ivf"]
        for kind in kinds:
            probes = [0] if kind == "flat" else args.nprobe
            for nprobe in probes:
                store, info = build(n, kind, vectors, columns, nprobe=max(nprobe, 1))
                for fname, flt in filters.items():
                    mask_rows = np.flatnonzero(flt.mask(columns))
                    for qname, queries in (("text", text_q), ("image", image_q)):
                        lat, rec = [], []
                        for q in queries:
                            t0 = time.perf_counter()
                            hits = store.search(q, k=10, flt=flt)
                            lat.append(time.perf_counter() - t0)
                            truth = exact_top(vectors, mask_rows, q)
                            got = {h.product_id - 1 for h in hits}
                            rec.append(len(got & set(truth)) / len(truth))
                        lat_ms = np.array(lat) * 1000
                        row = {
                            "n": n,
                            "kind": kind,
                            "nprobe": nprobe or None,
                            "filter": fname,
                            "members": int(len(mask_rows)),
                            "queries": qname,
                            "p50_ms": float(np.percentile(lat_ms, 50)),
                            "p99_ms": float(np.percentile(lat_ms, 99)),
                            "recall_at_10": float(np.mean(rec)),
                            **info,
                        }
                        rows_out.append(row)
                        print(
                            f"  {kind:4s} nprobe {nprobe or '-':>3} | {fname:32s} | {qname:5s} | "
                            f"p50 {row['p50_ms']:6.2f} ms p99 {row['p99_ms']:6.2f} ms | "
                            f"recall@10 {row['recall_at_10']:.3f}",
                            flush=True,
                        )
                del store
        del vectors
    load1 = os.getloadavg()
    print(f"load average: start {load0[0]:.2f}, end {load1[0]:.2f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    # Other sizes measured earlier stay in the file (the report shows 100k and 1M side by side).
    if args.json.is_file():
        kept = [r for r in json.loads(args.json.read_text())["rows"] if r["n"] not in args.sizes]
        rows_out = kept + rows_out
    args.json.write_text(
        json.dumps(
            {"meta": {"loadavg_start": load0, "loadavg_end": load1}, "rows": rows_out}, indent=1
        )
    )


if __name__ == "__main__":
    main()
