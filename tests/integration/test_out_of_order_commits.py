"""PostgreSQL: change ids are handed out at INSERT time but become visible at COMMIT. A change
whose transaction commits *after* a later-numbered one must still reach every index (the gap
tracking in embeddings/engine/changes.py)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from django.db import connection, transaction

from embeddings.engine.live import LiveIndex
from embeddings.models import ImageEmbedding, IndexChange
from tests.factories import ProductImageFactory

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

DIM = 8
MODEL = "model-late"


def vec(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def write_vector(image, seed: int) -> IndexChange:
    ImageEmbedding.objects.update_or_create(
        image=image,
        model_id=MODEL,
        defaults={"dim": DIM, "vector": ImageEmbedding.pack(vec(seed)), "content_hash": "x"},
    )
    return IndexChange.objects.create(
        image_id=image.id, product_id=image.product_id, model_id=MODEL, op="upsert"
    )


def top(live: LiveIndex, seed: int) -> int | None:
    hits = live.search(vec(seed), k=1)
    return hits[0].image_id if hits else None


def test_a_change_committed_after_a_later_one_is_still_applied(postgres_db, monkeypatch, tmp_path):
    monkeypatch.setattr("embeddings.services.images_enqueue", lambda **kw: 0)  # vectors by hand
    slow, fast = ProductImageFactory(), ProductImageFactory()
    live = LiveIndex(model_id=MODEL, dim=DIM, root=tmp_path, snapshot=None)
    live.sync()

    took_id, may_commit, done = threading.Event(), threading.Event(), threading.Event()
    slow_change: dict[str, int] = {}
    errors: list[BaseException] = []

    def slow_transaction():  # its own thread, so its own database connection
        try:
            with transaction.atomic():
                slow_change["id"] = write_vector(slow, seed=1).id
                took_id.set()
                assert may_commit.wait(30), "test did not release the slow transaction"
        except BaseException as exc:  # surfaced in the test thread
            errors.append(exc)
            took_id.set()
        finally:
            connection.close()
            done.set()

    thread = threading.Thread(target=slow_transaction)
    thread.start()
    try:
        assert took_id.wait(30) and not errors, errors
        fast_change = write_vector(fast, seed=2)  # autocommit: visible at once
        assert fast_change.id > slow_change["id"]

        live.sync()  # sees the later change; the earlier id is a gap, not lost
        assert top(live, 2) == fast.id
        assert slow.id not in live.store.image_ids()
        assert live.seq == fast_change.id
        assert slow_change["id"] in live.cursor.gaps
    finally:
        may_commit.set()
        thread.join(30)
    assert done.is_set() and not errors, errors

    applied = live.sync()
    assert applied == 1, "only the late change is read again"
    assert top(live, 1) == slow.id
    assert slow_change["id"] not in live.cursor.gaps
    assert sorted(live.store.image_ids().tolist()) == sorted([slow.id, fast.id])
