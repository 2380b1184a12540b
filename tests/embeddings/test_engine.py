"""The search engine without Django: filters inside the index, base + delta, snapshots."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from embeddings.engine.columns import Attrs, Filter, columns_from
from embeddings.engine.kinds import EngineError, build_index, choose_params, trained_empty
from embeddings.engine.segments import BaseSegment
from embeddings.engine.snapshot import (
    SnapshotError,
    current_base,
    open_snapshot,
    write_snapshot,
)
from embeddings.engine.store import VectorStore

DIM = 16
N = 6000


def unit(x):
    x = np.asarray(x, dtype=np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@pytest.fixture(scope="module")
def catalog():
    """Clustered vectors (like a catalog's: many similar products), two images a product,
    10 categories (category 9 rare), prices 0..99 with some missing, some inactive."""
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((40, DIM))
    label = rng.integers(0, 40, N)
    vectors = unit(centres[label] + 0.6 * rng.standard_normal((N, DIM)))
    image_ids = np.arange(1, N + 1) * 7
    category = np.where(np.arange(N) % 50 == 0, 9, label % 9)
    attrs = [
        Attrs(
            product_id=int(i // 2) + 1,
            active=bool(i % 13),
            category_id=int(category[i]) if i % 11 else None,
            price=float(i % 100) if i % 17 else None,
        )
        for i in range(N)
    ]
    return vectors, columns_from(image_ids.tolist(), attrs), rng


def make_store(vectors, columns, kind, tmp_path, *, nprobe=4):
    params = choose_params(len(vectors), kind=kind, nprobe=nprobe, pq_m=8)
    trained = trained_empty(vectors, params)
    index = build_index(vectors, trained)
    meta = {"model_id": "m", "dim": DIM, "params": params.to_dict(), "seq": 0, "gaps": []}
    write_snapshot(tmp_path, index=index, trained=trained, columns=columns, meta=meta)
    snap = open_snapshot(current_base(tmp_path), model_id="m", dim=DIM)
    return VectorStore(DIM, BaseSegment(snap.index, snap.columns, snap.params))


def exact_scores(vectors, columns, query, flt, k=None):
    """The true best products under ``flt`` -> their best score: every vector scored."""
    keep = flt.mask(columns)
    scores = np.where(keep, vectors @ query, -np.inf)
    best: dict[int, float] = {}
    for row in np.argsort(-scores, kind="stable"):
        if not np.isfinite(scores[row]):
            break
        best.setdefault(int(columns["product_id"][row]), float(scores[row]))
        if len(best) == k:
            break
    return best


def exact(vectors, columns, query, flt, k):
    return list(exact_scores(vectors, columns, query, flt, k))


def assert_same_ranking(hits, vectors, columns, query, flt, k, tol=0.0):
    """``hits`` are the true best ``k`` products in order; with ``tol`` (float16 storage), a
    product may stand in for another whose true score is within ``tol`` of its own."""
    truth = exact_scores(vectors, columns, query, flt)
    expected = list(truth)[:k]
    got = [h.product_id for h in hits]
    if not tol:
        assert got == expected
        return
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        assert abs(truth[g] - truth[e]) <= tol


FILTERS = {
    "none": Filter(),
    "common category": Filter(category_ids=(3,)),
    "rare category": Filter(category_ids=(9,)),
    "price band": Filter(price_min=10, price_max=14),
    "categories and price": Filter(category_ids=(1, 2), price_max=50),
    "these products": Filter(product_ids=frozenset(range(100, 2000, 7))),
    "not these products": Filter(exclude_product_ids=frozenset(range(1, 3000, 2))),
}


def queries(vectors, rng, n=25):
    return unit(vectors[rng.integers(0, len(vectors), n)] + 0.2 * rng.standard_normal((n, DIM)))


@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_filtered_search_returns_the_true_best_products_of_the_filter(catalog, kind, tmp_path):
    vectors, columns, rng = catalog
    # nprobe = every list: the approximate kinds become exact, so any difference is a filter bug
    # (ivf stores float16: products whose scores differ by less than that may swap places).
    store = make_store(vectors, columns, kind, tmp_path, nprobe=10_000)
    tol = 0.0 if kind == "flat" else 2e-3
    for flt in FILTERS.values():
        for q in queries(vectors, rng, 10):
            assert_same_ranking(store.search(q, k=10, flt=flt), vectors, columns, q, flt, 10, tol)


def test_approximate_index_plans_filters_by_selectivity(catalog, tmp_path):
    """At a small nprobe, a rare filter is still answered exactly (every list probed, only its
    rows scored) and a loose one keeps recall by probing wider."""
    vectors, columns, rng = catalog
    store = make_store(vectors, columns, "ivf", tmp_path, nprobe=2)
    recall = {}
    for name, flt in FILTERS.items():
        found = []
        for q in queries(vectors, rng):
            got = {h.product_id for h in store.search(q, k=10, flt=flt)}
            truth = exact(vectors, columns, q, flt, 10)
            found.append(len(got & set(truth)) / len(truth))
            if name == "rare category":  # answered exactly
                hits = store.search(q, k=10, flt=flt)
                assert_same_ranking(hits, vectors, columns, q, flt, 10, tol=2e-3)
        recall[name] = float(np.mean(found))
    # Filtering costs no recall: each filter does about as well as no filter at all.
    assert all(r >= recall["none"] - 0.05 for r in recall.values()), recall


def test_compressed_index_keeps_recall_and_returns_cosine_range_scores(catalog, tmp_path):
    vectors, columns, rng = catalog
    store = make_store(vectors, columns, "ivfpq", tmp_path, nprobe=16)
    found = []
    for q in queries(vectors, rng):
        hits = store.search(q, k=10, flt=Filter(category_ids=(3,)))
        assert all(-1.0 <= h.score <= 1.0 for h in hits)
        truth = exact(vectors, columns, q, Filter(category_ids=(3,)), 10)
        found.append(len({h.product_id for h in hits} & set(truth)) / 10)
    assert np.mean(found) >= 0.6


def test_filters_never_return_inactive_or_unmatched_products(catalog, tmp_path):
    vectors, columns, rng = catalog
    store = make_store(vectors, columns, "flat", tmp_path)
    by_product = {int(p): i for i, p in enumerate(columns["product_id"])}
    hits = store.search(queries(vectors, rng, 1)[0], k=200, flt=Filter(price_min=20, price_max=30))
    assert hits
    for h in hits:
        row = by_product[h.product_id]
        price = columns["price"][row - 1 : row + 1]
        assert np.any((price >= 20) & (price <= 30))
    inactive = set(columns["product_id"][~columns["active"]].tolist())
    all_hits = store.search(queries(vectors, rng, 1)[0], k=N, flt=Filter())
    assert not ({h.product_id for h in all_hits} - set(columns["product_id"][columns["active"]]))
    assert len(all_hits) == len(set(columns["product_id"][columns["active"]].tolist()))
    assert inactive  # the catalog has some


def test_deeper_rankings_start_with_the_shallower_ones(catalog, tmp_path):
    vectors, columns, rng = catalog
    store = make_store(vectors, columns, "ivf", tmp_path)
    q = queries(vectors, rng, 1)[0]
    deep = [h.product_id for h in store.search(q, k=300)]
    for k in (1, 10, 48, 120):
        assert [h.product_id for h in store.search(q, k=k)] == deep[:k]
    assert len(set(deep)) == 300, "one result per product"


@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_base_plus_delta_answers_like_a_fresh_rebuild(catalog, kind, tmp_path):
    vectors, columns, rng = catalog
    store = make_store(vectors, columns, kind, tmp_path / "a", nprobe=10_000)
    vectors, columns = vectors.copy(), {c: a.copy() for c, a in columns.items()}
    # Updates (new vector and new price/category), adds (a new product), deletes.
    upd = rng.choice(N, 300, replace=False)
    vectors[upd] = unit(rng.standard_normal((300, DIM)))
    columns["price"][upd] = 5.0
    columns["category_id"][upd] = 9
    store.upsert(vectors[upd], {c: a[upd] for c, a in columns.items()})
    new_vectors = unit(rng.standard_normal((50, DIM)))
    new_cols = columns_from(
        range(10**6, 10**6 + 50), [Attrs(10**5 + i, True, 9, 5.0) for i in range(50)]
    )
    store.upsert(new_vectors, new_cols)
    gone = rng.choice(N, 200, replace=False)
    store.delete(columns["image_id"][gone])
    store.delete(new_cols["image_id"][:10])
    keep = np.ones(N, bool)
    keep[gone] = False
    all_vectors = np.concatenate([vectors[keep], new_vectors[10:]])
    all_cols = {c: np.concatenate([columns[c][keep], new_cols[c][10:]]) for c in columns}
    order = np.argsort(all_cols["image_id"])
    all_vectors = all_vectors[order]
    all_cols = {c: a[order] for c, a in all_cols.items()}
    fresh = make_store(all_vectors, all_cols, kind, tmp_path / "b", nprobe=10_000)
    assert np.array_equal(store.image_ids(), fresh.image_ids())
    for flt in [Filter(), Filter(category_ids=(9,)), Filter(price_max=5)]:
        for q in queries(vectors, rng, 8):
            a = store.search(q, k=20, flt=flt)
            b = fresh.search(q, k=20, flt=flt)
            if kind == "flat":
                assert [(h.product_id, h.image_id) for h in a] == [
                    (h.product_id, h.image_id) for h in b
                ]
            else:  # the delta holds float32, a base float16: near-ties may swap
                assert len(a) == len(b)
                assert np.allclose([h.score for h in a], [h.score for h in b], atol=2e-3)
                assert len({h.product_id for h in a} ^ {h.product_id for h in b}) <= 2
            assert store.count_products(flt, cap=10**6) == fresh.count_products(flt, cap=10**6)


def test_snapshot_write_is_atomic(catalog, tmp_path, monkeypatch):
    vectors, columns, _ = catalog
    make_store(vectors, columns, "flat", tmp_path)
    before = current_base(tmp_path)

    def boom(*a, **kw):
        raise OSError("disk full")

    monkeypatch.setattr("embeddings.engine.snapshot.np.save", boom)
    with pytest.raises(OSError):
        make_store(vectors, columns, "flat", tmp_path)
    assert current_base(tmp_path) == before
    assert not list(tmp_path.glob(".*.tmp")), "the half-written folder is removed"


def test_snapshot_refuses_damage_other_versions_and_mismatched_files(catalog, tmp_path):
    vectors, columns, _ = catalog
    make_store(vectors, columns, "ivf", tmp_path)
    base = current_base(tmp_path)
    manifest = json.loads((base / "manifest.json").read_text())
    (base / "manifest.json").write_text(json.dumps({**manifest, "version": 99}))
    with pytest.raises(SnapshotError, match="version"):
        open_snapshot(base, model_id="m", dim=DIM)
    (base / "manifest.json").write_text(json.dumps(manifest))
    raw = bytearray((base / "price.npy").read_bytes())
    raw[-8:] = b"\x00" * 8
    (base / "price.npy").write_bytes(bytes(raw))
    with pytest.raises(SnapshotError, match="checksum"):
        open_snapshot(base, model_id="m", dim=DIM)


def test_choose_params_follows_the_catalog_size():
    assert choose_params(500, kind="auto").kind == "flat"
    assert choose_params(199_999, kind="auto", ivf_threshold=200_000).kind == "flat"
    big = choose_params(1_000_000, kind="auto", ivf_threshold=200_000, nprobe=32)
    assert (big.kind, big.nlist, big.nprobe) == ("ivf", 4000, 32)
    assert choose_params(1_000_000, kind="auto", pq_m=32).kind == "ivfpq"
    with pytest.raises(EngineError, match="unknown index kind"):
        choose_params(10, kind="hnsw")


def test_wrong_query_dimension_is_a_clear_error(catalog, tmp_path):
    vectors, columns, _ = catalog
    store = make_store(vectors, columns, "flat", tmp_path)
    with pytest.raises(EngineError, match="dimension"):
        store.search(np.ones(DIM + 1, np.float32), k=5)


SHARED = """
import json, sys
import numpy as np
from embeddings.engine.segments import BaseSegment
from embeddings.engine.snapshot import current_base, open_snapshot
from embeddings.engine.store import VectorStore
from pathlib import Path
root, query = Path(sys.argv[1]), np.array(json.loads(sys.argv[2]), dtype=np.float32)
snap = open_snapshot(current_base(root), model_id="m", dim=len(query))
store = VectorStore(len(query), BaseSegment(snap.index, snap.columns, snap.params))
hits = [h.product_id for h in store.search(query, k=10)]
maps = open("/proc/self/maps").read()
mapped = sorted({line.split()[-1].split("/")[-1] for line in maps.splitlines()
                 if str(snap.path) in line})
print(json.dumps({"hits": hits, "mapped": mapped}))
"""


@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_two_processes_serve_one_memory_mapped_snapshot(catalog, kind, tmp_path):
    vectors, columns, rng = catalog
    store = make_store(vectors, columns, kind, tmp_path)
    q = queries(vectors, rng, 1)[0]
    mine = [h.product_id for h in store.search(q, k=10)]
    out = []
    for _ in range(2):
        proc = subprocess.run(
            [sys.executable, "-c", SHARED, str(tmp_path), json.dumps(q.tolist())],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        out.append(json.loads(proc.stdout))
    for other in out:
        assert other["hits"] == mine
        # The vectors and columns are mapped from the shared files, not copied into the process.
        assert "index.faiss" in other["mapped"] and "image_id.npy" in other["mapped"]


@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_particular_images_are_scored_from_their_stored_vectors(catalog, kind, tmp_path):
    vectors, columns, rng = catalog
    store = make_store(vectors, columns, kind, tmp_path)
    q = queries(vectors, rng, 1)[0]
    rows = np.array([1, 5, 26, 131, 4001])  # row 26 is an inactive product's (26 % 13 == 0)
    ids = columns["image_id"][rows]
    store.delete([ids[1]])
    moved = unit(rng.standard_normal(DIM))
    store.upsert(moved[None], {c: a[rows[4:5]] for c, a in columns.items()})
    scores = store.score_images(q, ids.tolist() + [999_999_999])
    assert set(scores) == {int(ids[0]), int(ids[3]), int(ids[4])}, "deleted, inactive, unknown"
    tol = 1e-5 if kind == "flat" else 2e-3
    assert scores[int(ids[0])] == pytest.approx(float(vectors[rows[0]] @ q), abs=tol)
    assert scores[int(ids[4])] == pytest.approx(float(moved @ q), abs=1e-5), "the delta's vector"
