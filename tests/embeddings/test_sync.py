"""The live index stays in step with the database through the change sequence."""

import numpy as np
import pytest

from embeddings import runtime
from embeddings.engine.changes import pruned_through
from embeddings.engine.live import LiveIndex, base_build, snapshot_root
from embeddings.models import ImageEmbedding, IndexChange
from tests.factories import ProductImageFactory

pytestmark = pytest.mark.django_db

DIM = 8
MODEL = "model-a"


def vec(seed):
    v = np.random.default_rng(seed).normal(size=DIM).astype(np.float32)
    return v / np.linalg.norm(v)


@pytest.fixture
def no_auto_embed(monkeypatch):
    # These tests write vectors by hand; keep the signal from queueing real embedding.
    monkeypatch.setattr("embeddings.services.images_enqueue", lambda **kw: 0)


def put(image, seed, model=MODEL, change_id=None):
    ImageEmbedding.objects.update_or_create(
        image=image,
        model_id=model,
        defaults={"dim": DIM, "vector": ImageEmbedding.pack(vec(seed)), "content_hash": "x"},
    )
    kwargs = {"id": change_id} if change_id else {}
    return IndexChange.objects.create(
        image_id=image.id, product_id=image.product_id, model_id=model, op="upsert", **kwargs
    )


@pytest.fixture
def root(tmp_path):
    return tmp_path / "model-a"


def empty_live(root=None):
    """A process that has no base yet: everything it serves comes from the change log."""
    return LiveIndex(model_id=MODEL, dim=DIM, root=root or snapshot_root(MODEL), snapshot=None)


def build(root, dim=DIM):
    """A base written from the database, opened the way a serving process opens it."""
    base_build(model_id=MODEL, dim=dim, root=root)
    return LiveIndex.open(model_id=MODEL, dim=dim, root=root)


def ids(live):
    return sorted(live.store.image_ids().tolist())


def top(live, seed):
    hits = live.search(vec(seed), k=1)
    return hits[0].image_id if hits else None


def test_sync_applies_adds_updates_and_deletes_as_deltas(no_auto_embed):
    live = empty_live()
    a, b = ProductImageFactory(), ProductImageFactory()
    put(a, 1)
    put(b, 2)
    assert live.sync() >= 2
    assert len(live) == 2 and top(live, 2) == b.id
    put(b, 3)  # update: b now looks like seed 3
    assert live.sync() == 1
    assert top(live, 3) == b.id and len(live) == 2
    b_id = b.id
    b.delete()  # signal records the delete
    assert live.sync() == 1
    assert len(live) == 1 and b_id not in ids(live)
    assert live.sync() == 0, "nothing new: no work"


def test_vectors_of_another_model_never_enter_the_index(no_auto_embed):
    live = empty_live()
    a, b = ProductImageFactory(), ProductImageFactory()
    put(a, 1)
    put(b, 2, model="model-b")
    live.sync()
    assert ids(live) == [a.id]
    assert ids(build(snapshot_root(MODEL))) == [a.id]


def test_a_change_committed_late_with_a_lower_id_is_still_applied(no_auto_embed):
    live = empty_live()
    a, b, c = ProductImageFactory(), ProductImageFactory(), ProductImageFactory()
    first = put(a, 1)
    live.sync()
    # b's transaction took id first+1 but commits after c's (id first+2): simulate the order.
    put(c, 3, change_id=first.id + 2)
    live.sync()
    assert first.id + 1 in live.cursor.gaps
    assert b.id not in ids(live)
    put(b, 2, change_id=first.id + 1)
    live.sync()
    # (Ids below `first` are gaps too on PostgreSQL, whose sequences outlive rolled-back tests.)
    assert b.id in ids(live) and first.id + 1 not in live.cursor.gaps
    assert live.seq == first.id + 2


def test_gaps_expire(no_auto_embed, monkeypatch):
    live = empty_live()
    a = ProductImageFactory()
    # PostgreSQL's sequences outlive rolled-back tests: leave a gap above whatever is there.
    written = set(IndexChange.objects.values_list("id", flat=True))  # the product's own change
    change_id = max(written) + 50
    put(a, 1, change_id=change_id)
    live.sync()
    assert set(live.cursor.gaps) == set(range(1, change_id)) - written
    monkeypatch.setattr("embeddings.engine.changes.GAP_TIMEOUT_S", -1.0)
    live.sync()
    assert live.cursor.gaps == {}


def test_upsert_whose_vector_was_deleted_meanwhile_is_removed(no_auto_embed):
    live = empty_live()
    a = ProductImageFactory()
    put(a, 1)
    live.sync()
    put(a, 2)
    ImageEmbedding.objects.filter(image=a).delete()  # e.g. wiped for re-embedding
    live.sync()
    assert len(live) == 0


def test_snapshot_then_delta_restores_the_same_index(no_auto_embed, root):
    images = [ProductImageFactory() for _ in range(5)]
    for i, img in enumerate(images):
        put(img, i)
    live = build(root)
    # After the snapshot: one add, one delete.
    extra = ProductImageFactory()
    put(extra, 99)
    gone = images[0].id
    images[0].delete()
    restored = LiveIndex(
        model_id=MODEL, dim=DIM, root=root, snapshot=open_current(root)
    )  # a new process, before its first sync
    assert restored.seq == live.seq and len(restored) == 5
    assert restored.sync() == 3, "only the changes since the snapshot are read"
    assert ids(restored) == sorted([i.id for i in images[1:]] + [extra.id])
    assert gone not in ids(restored)


def open_current(root, model=MODEL, dim=DIM):
    from embeddings.engine.snapshot import current_base, open_snapshot

    return open_snapshot(current_base(root), model_id=model, dim=dim)


def test_damaged_or_foreign_base_is_set_aside_and_rebuilt(no_auto_embed, root):
    from embeddings.engine.snapshot import SnapshotError, current_base

    a = ProductImageFactory()
    put(a, 1)
    build(root)
    with pytest.raises(SnapshotError, match="holds model"):
        open_current(root, model="model-b")
    with pytest.raises(SnapshotError, match="dimension"):
        open_current(root, dim=DIM + 1)
    damaged = current_base(root)
    data = bytearray((damaged / "index.faiss").read_bytes())
    data[len(data) // 2 : len(data) // 2 + 8] = b"\xff" * 8  # same size, other bytes
    (damaged / "index.faiss").write_bytes(bytes(data))
    with pytest.raises(SnapshotError, match="checksum"):
        open_current(root)
    live = LiveIndex.open(model_id=MODEL, dim=DIM, root=root)  # what a starting process does
    assert ids(live) == [a.id] and top(live, 1) == a.id
    assert live.base_path != damaged and not damaged.exists()
    assert list(root.glob(f"{damaged.name}.damaged-*")), "kept aside for a post-mortem"


def test_truncated_base_is_refused(no_auto_embed, root):
    from embeddings.engine.snapshot import SnapshotError, current_base

    put(ProductImageFactory(), 1)
    build(root)
    path = current_base(root) / "product_id.npy"
    path.write_bytes(path.read_bytes()[:-8])
    with pytest.raises(SnapshotError, match="bytes"):
        open_current(root)


def test_build_rejects_vectors_of_the_wrong_dimension(no_auto_embed, root):
    a = ProductImageFactory()
    put(a, 1)
    with pytest.raises(ValueError, match="reembed"):
        build(root, dim=DIM + 1)


def test_snapshot_folder_is_per_model(settings, tmp_path):
    settings.EMBEDDINGS_INDEX_DIR = tmp_path
    assert snapshot_root("m/a") != snapshot_root("m/b")
    assert snapshot_root("m/a").parent == tmp_path


def test_serving_process_starts_from_snapshot_and_picks_up_new_uploads(
    django_capture_on_commit_callbacks,
):
    with django_capture_on_commit_callbacks(execute=True):
        first = ProductImageFactory()
    from embeddings import services

    services.index_rebuild(progress=False)
    runtime.reset()  # a new process
    live = runtime.get_live_index()
    assert ids(live) == [first.id] and live.base_path is not None
    with django_capture_on_commit_callbacks(execute=True):
        second = ProductImageFactory()
    live = runtime.get_live_index()  # sync interval is 0 in tests
    assert sorted(ids(live)) == sorted([first.id, second.id])


# -- pruning the change log -------------------------------------------------------------------


def age(days):
    """Backdates every change row written so far by ``days``."""
    from datetime import timedelta

    from django.utils import timezone

    IndexChange.objects.update(created_at=timezone.now() - timedelta(days=days))


def test_prune_deletes_only_old_rows_and_records_the_point(no_auto_embed):
    from datetime import timedelta

    from embeddings import services
    from embeddings.models import IndexChangePrune

    old = [ProductImageFactory() for _ in range(3)]
    for i, img in enumerate(old):
        put(img, i)
    age(10)
    fresh = ProductImageFactory()
    newest = put(fresh, 9)
    IndexChange.objects.filter(op="product").delete()  # only the image changes matter here
    vectors_before = ImageEmbedding.objects.count()

    dry = services.index_changes_prune(older_than=timedelta(days=7), dry_run=True)
    assert (dry.deleted, dry.kept) == (3, 1) and IndexChange.objects.count() == 4
    assert pruned_through() == 0, "a dry run leaves no marker"

    done = services.index_changes_prune(older_than=timedelta(days=7))
    assert (done.deleted, done.kept) == (3, 1)
    assert list(IndexChange.objects.values_list("id", flat=True)) == [newest.id]
    assert pruned_through() == done.pruned_through
    assert done.pruned_through < newest.id
    assert IndexChangePrune.objects.get().deleted == 3
    assert ImageEmbedding.objects.count() == vectors_before, "vectors are never pruned"
    # Nothing older than the cutoff is left: a second prune is a no-op without a new marker.
    assert services.index_changes_prune(older_than=timedelta(days=7)).deleted == 0
    assert IndexChangePrune.objects.count() == 1


def test_index_behind_the_pruned_point_rebuilds_and_misses_no_delete(no_auto_embed, root):
    from datetime import timedelta

    from embeddings import services

    a, b, c = ProductImageFactory(), ProductImageFactory(), ProductImageFactory()
    for i, img in enumerate([a, b, c]):
        put(img, i)
    stale = build(root)
    old_base = stale.base_path
    # After the snapshot: b leaves the catalog and d arrives; then those rows are pruned.
    b_id = b.id
    b.delete()
    d = ProductImageFactory()
    put(d, 7)
    age(30)
    services.index_changes_prune(older_than=timedelta(days=7))
    assert IndexChange.objects.filter(op="upsert").count() == 0

    assert ids(stale) == sorted([a.id, b_id, c.id])
    stale.sync()  # the delta is gone: a new base is built from the stored vectors instead
    assert ids(stale) == sorted([a.id, c.id, d.id]) and stale.base_path != old_base
    assert top(stale, 7) == d.id
    # Afterwards it syncs deltas as usual, without rebuilding again.
    base = stale.base_path
    e = ProductImageFactory()
    put(e, 8)
    stale.sync()
    assert stale.base_path == base and top(stale, 8) == e.id


def test_index_built_after_a_prune_emptied_the_log_does_not_rebuild_forever(no_auto_embed, root):
    from datetime import timedelta

    from embeddings import services

    a = ProductImageFactory()
    put(a, 1)
    age(30)
    services.index_changes_prune(older_than=timedelta(days=7))
    live = build(root)
    assert live.seq >= pruned_through() and not live.cursor.gaps
    base = live.base_path
    live.sync()
    assert live.base_path == base and ids(live) == [a.id]


def test_daily_prune_task_follows_the_setting(no_auto_embed, settings):
    from embeddings.tasks import index_changes_prune_task

    put(ProductImageFactory(), 1)
    IndexChange.objects.filter(op="product").delete()
    age(10)
    settings.EMBEDDINGS_CHANGE_LOG_DAYS = 0  # pruning switched off
    assert index_changes_prune_task() == 0 and IndexChange.objects.count() == 1
    settings.EMBEDDINGS_CHANGE_LOG_DAYS = 14
    assert index_changes_prune_task() == 0 and IndexChange.objects.count() == 1
    settings.EMBEDDINGS_CHANGE_LOG_DAYS = 7
    assert index_changes_prune_task() == 1 and IndexChange.objects.count() == 0
    assert "index-change-prune" in settings.CELERY_BEAT_SCHEDULE


def overwrite_middle(path, n=64, byte=b"\x7f"):
    """Same size, other bytes, written in place: what a bad disk or a stray copy does to a file
    a serving process already maps."""
    size = path.stat().st_size
    with open(path, "r+b") as fh:
        fh.seek(size // 2)
        fh.write(byte * n)


def test_base_damaged_while_served_is_refused_then_rebuilt_from_the_database(no_auto_embed, root):
    from embeddings.engine.live import IndexDamagedError
    from embeddings.engine.snapshot import current_base

    images = [ProductImageFactory() for _ in range(40)]
    for seed, image in enumerate(images):
        put(image, seed)
    live = build(root)
    damaged = current_base(root)
    assert top(live, 7) == images[7].id
    # 0x47474747 is ~5.1e4 as a float32, at any alignment: rows whose scores no pair of unit
    # vectors can have (the issue saw ~1e37).
    overwrite_middle(damaged / "index.faiss", n=DIM * 4 * 10, byte=b"\x47")
    with pytest.raises(IndexDamagedError, match="being rebuilt"):
        for seed in range(40):  # whichever query meets the overwritten rows
            live.search(vec(seed), k=40)
    assert not damaged.exists() and list(root.glob(f"{damaged.name}.damaged-*"))
    with pytest.raises(IndexDamagedError):
        top(live, 7)  # refused, not answered wrongly, until the base is replaced
    live.sync()
    assert live.base_path != damaged and live.damaged is None
    for seed in (0, 7, 39):
        hits = live.search(vec(seed), k=40)
        assert hits[0].image_id == images[seed].id
        assert all(-1.0 <= h.score <= 1.0 for h in hits)
    assert ids(live) == sorted(i.id for i in images)


def test_periodic_check_finds_a_damaged_column_and_rebuilds(no_auto_embed, root, settings):
    from embeddings.engine.snapshot import current_base

    images = [ProductImageFactory() for _ in range(5)]
    for seed, image in enumerate(images):
        put(image, seed)
    live = build(root)
    served = current_base(root)
    settings.EMBEDDINGS_VERIFY_INTERVAL = 0.001
    overwrite_middle(served / "price.npy", n=8, byte=b"\x00")
    live.last_verified -= 1
    live.sync()
    assert live.base_path != served and list(root.glob(f"{served.name}.damaged-*"))
    assert ids(live) == sorted(i.id for i in images) and top(live, 3) == images[3].id


def test_unnormalised_vector_scores_are_clipped_not_refused(no_auto_embed, root):
    image = ProductImageFactory()
    ImageEmbedding.objects.create(
        image=image,
        model_id=MODEL,
        dim=DIM,
        vector=ImageEmbedding.pack(vec(1) * 3.0),
        content_hash="x",
    )
    IndexChange.objects.create(
        image_id=image.id, product_id=image.product_id, model_id=MODEL, op="upsert"
    )
    live = build(root)
    hits = live.search(vec(1), k=1)
    assert hits[0].image_id == image.id and hits[0].score == 1.0
    assert live.damaged is None
