"""The FAISS wrapper on its own: no database, no Django models."""

import threading

import numpy as np
import pytest

from embeddings.index import IndexError_, IndexParams, SearchHit, VectorIndex


def unit(rng, n, d=16):
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture
def rng():
    return np.random.default_rng(7)


@pytest.fixture(params=["flat", "ivf"])
def index_and_data(request, rng):
    data = unit(rng, 400)
    index = VectorIndex(16, IndexParams(kind=request.param, nlist=4, nprobe=4))
    if request.param == "ivf":
        index.train(data)
    return index, data


def test_search_returns_nearest_ids_with_cosine_scores(index_and_data):
    index, data = index_and_data
    index.add(np.arange(100, 500), data)
    hits = index.search(data[3], k=5)[0]
    assert hits[0] == SearchHit(id=103, score=pytest.approx(1.0, abs=1e-5))
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
    assert len(index) == 400


def test_add_is_an_upsert_replacing_the_old_vector(index_and_data):
    index, data = index_and_data
    index.add([1, 2], data[:2])
    index.add([1], data[10:11])
    assert len(index) == 2
    assert index.search(data[10], k=1)[0][0].id == 1
    assert all(h.id != 1 for h in index.search(data[0], k=2)[0] if h.score > 0.999)


def test_remove_drops_ids_and_ignores_unknown_ones(index_and_data):
    index, data = index_and_data
    index.add([5, 6, 7], data[:3])
    index.remove([6, 999])
    assert len(index) == 2
    assert sorted(index.ids().tolist()) == [5, 7]
    assert 6 not in [h.id for h in index.search(data[1], k=3)[0]]


def test_search_never_returns_faiss_padding(index_and_data):
    index, data = index_and_data
    index.add([42], data[:1])
    hits = index.search(data[:2], k=10)
    assert [[h.id for h in row] for row in hits] == [[42], [42]]


def test_empty_index_and_zero_k_return_empty_lists(rng):
    index = VectorIndex(16)
    q = unit(rng, 3)
    assert index.search(q, 5) == [[], [], []]
    index.add([1], q[:1])
    assert index.search(q, 0) == [[], [], []]


def test_repeated_id_in_one_call_keeps_the_last_vector(rng):
    index = VectorIndex(16)
    data = unit(rng, 3)
    index.add([9, 9, 8], data)
    assert len(index) == 2
    assert index.search(data[1], 1)[0][0].id == 9


def test_wrong_dimension_or_negative_ids_are_rejected(rng):
    index = VectorIndex(16)
    with pytest.raises(IndexError_, match=r"\(n, 16\)"):
        index.add([1], unit(rng, 1, d=8))
    with pytest.raises(IndexError_, match="non-negative"):
        index.add([-1], unit(rng, 1))
    with pytest.raises(IndexError_, match="2 ids but 1 vectors"):
        index.add([1, 2], unit(rng, 1))


def test_untrained_ivf_refuses_adds_and_small_training_sets(rng):
    index = VectorIndex(16, IndexParams(kind="ivf", nlist=64))
    with pytest.raises(IndexError_, match="not trained"):
        index.add([1], unit(rng, 1))
    with pytest.raises(IndexError_, match="at least"):
        index.train(unit(rng, 10))


def test_snapshot_round_trip_keeps_vectors_params_and_meta(index_and_data, tmp_path):
    index, data = index_and_data
    index.add(np.arange(400), data)
    index.remove([0, 1])
    path = tmp_path / "snap.index"
    index.save(path, {"seq": 17, "model_id": "m"})
    loaded, meta = VectorIndex.load(path)
    assert meta == {"seq": 17, "model_id": "m"}
    assert loaded.params == index.params and len(loaded) == 398
    for q in data[5:10]:
        assert loaded.search(q, 5) == index.search(q, 5)
    assert not list(tmp_path.glob("*.tmp")), "atomic save leaves no temporary file"


def test_save_is_atomic_when_writing_fails(tmp_path, rng, monkeypatch):
    index = VectorIndex(16)
    index.add([1], unit(rng, 1))
    path = tmp_path / "snap.index"
    index.save(path, {"seq": 1})
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("embeddings.index.os.replace", boom)
    index.add([2], unit(rng, 1))
    with pytest.raises(OSError):
        index.save(path, {"seq": 2})
    assert path.read_bytes() == before
    assert not list(tmp_path.glob("*.tmp"))


def test_load_rejects_a_file_that_is_not_a_snapshot(tmp_path):
    bad = tmp_path / "bad.index"
    bad.write_bytes(b"not an index")
    with pytest.raises(IndexError_, match="not an index snapshot"):
        VectorIndex.load(bad)


def test_concurrent_adds_and_searches_do_not_corrupt(rng):
    index = VectorIndex(16)
    data = unit(rng, 2000)
    errors = []

    def writer(offset):
        try:
            for i in range(offset, 2000, 4):
                index.add([i], data[i : i + 1])
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def reader():
        try:
            for i in range(200):
                index.search(data[i], 3)
        except Exception as exc:  # pragma: no cover
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(o,)) for o in range(4)] + [
        threading.Thread(target=reader)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(index) == 2000


def test_ivf_recall_against_exact_search_is_high(rng):
    data = unit(rng, 3000, d=32)
    flat = VectorIndex(32)
    ivf = VectorIndex(32, IndexParams(kind="ivf", nlist=16, nprobe=8))
    ivf.train(data)
    ids = np.arange(3000)
    flat.add(ids, data)
    ivf.add(ids, data)
    queries = unit(rng, 50, d=32)
    recall = np.mean(
        [
            len({h.id for h in a} & {h.id for h in b}) / 10
            for a, b in zip(flat.search(queries, 10), ivf.search(queries, 10), strict=True)
        ]
    )
    assert recall > 0.8
