"""The reconcile: which images it queues again (and which it leaves), bounded batches, a second
run queuing nothing new, the operators' command and what index_status says about the lag."""

from __future__ import annotations

import json
from datetime import timedelta
from io import StringIO

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.utils import timezone

from catalog import services as catalog_services
from catalog.models import ProductImage
from embeddings import reconcile, runtime, services
from embeddings.models import ImageEmbedding
from tests.conftest import distinct_image
from tests.factories import ProductFactory

pytestmark = pytest.mark.django_db

OLD = timedelta(hours=1)


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


@pytest.fixture
def model_id() -> str:
    return runtime.get_encoder().model_id


@pytest.fixture
def images(django_capture_on_commit_callbacks):
    """One image in each state the reconcile must tell apart, all embedded first."""
    names = [
        "stuck",  # pending, queued an hour ago: its task was lost
        "queued_now",  # pending, just queued: its task is probably still in the queue
        "legacy_stuck",  # pending from before queued_at existed, created an hour ago
        "failed",  # an unreadable file: staff must replace it, never retried by itself
        "fine",  # indexed, vector of the serving model for its content
        "no_vector",  # marked indexed, but its vector is gone
        "other_model",  # only a vector of another model
        "outdated",  # its vector was computed from other bytes
    ]
    with django_capture_on_commit_callbacks(execute=True):
        rows = {
            name: catalog_services.product_image_add(
                product=ProductFactory(),
                file=SimpleUploadedFile(f"{name}.png", distinct_image(n)),
            )
            for n, name in enumerate(names)
        }
    assert set(ProductImage.objects.values_list("index_status", flat=True)) == {"indexed"}
    ids = {name: img.id for name, img in rows.items()}
    hour_ago = timezone.now() - OLD
    ProductImage.objects.filter(
        id__in=[ids["stuck"], ids["queued_now"], ids["legacy_stuck"]]
    ).update(index_status="pending")
    ProductImage.objects.filter(id=ids["stuck"]).update(queued_at=hour_ago)
    ProductImage.objects.filter(id=ids["queued_now"]).update(queued_at=timezone.now())
    ProductImage.objects.filter(id=ids["legacy_stuck"]).update(queued_at=None, created_at=hour_ago)
    ProductImage.objects.filter(id=ids["failed"]).update(
        index_status="failed", index_error="not a readable image", queued_at=hour_ago
    )
    ImageEmbedding.objects.filter(image_id=ids["failed"]).delete()
    ImageEmbedding.objects.filter(image_id=ids["no_vector"]).delete()
    ImageEmbedding.objects.filter(image_id=ids["other_model"]).update(model_id="another-model")
    ImageEmbedding.objects.filter(image_id=ids["outdated"]).update(content_hash="0" * 64)
    return ids


def test_selection_finds_lost_and_stale_embeddings_and_leaves_the_rest(images, model_id):
    found = reconcile.images_needing_embedding(model_id=model_id, grace=timedelta(minutes=5))
    by_reason = {reason: set(rows.values_list("id", flat=True)) for reason, rows in found.items()}
    assert by_reason == {
        "stuck_pending": {images["stuck"], images["legacy_stuck"]},
        "missing_vector": {images["no_vector"], images["other_model"]},
        "outdated_vector": {images["outdated"]},
    }


def test_reconcile_queues_a_bounded_batch_and_a_second_run_queues_nothing_new(
    images, model_id, django_capture_on_commit_callbacks
):
    grace = timedelta(minutes=5)
    with django_capture_on_commit_callbacks(execute=False) as published:
        first = reconcile.images_reconcile(model_id=model_id, grace=grace, limit=3)
    assert (first.stuck_pending, first.missing_vector, first.outdated_vector) == (2, 2, 1)
    assert (first.queued, first.left) == (3, 2)
    assert len(published) == 3  # published after the commit
    # Stuck ones first, then missing vectors, each oldest id first; all now pending, queued now.
    batch = ProductImage.objects.filter(
        id__in=[images["stuck"], images["legacy_stuck"], images["no_vector"]]
    )
    recently = timezone.now() - timedelta(minutes=1)
    assert {(i.index_status, i.queued_at > recently) for i in batch} == {("pending", True)}
    assert ProductImage.objects.get(id=images["other_model"]).index_status == "indexed"
    with django_capture_on_commit_callbacks(execute=False):
        second = reconcile.images_reconcile(model_id=model_id, grace=grace, limit=3)
    assert (second.queued, second.left) == (2, 0)  # the rest; the first batch is not due again
    with django_capture_on_commit_callbacks(execute=False) as published:
        third = reconcile.images_reconcile(model_id=model_id, grace=grace, limit=3)
    assert (third.queued, third.left, len(published)) == (0, 0, 0)


def test_reconciled_images_end_indexed_once_and_failed_ones_stay_failed(
    images, model_id, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):  # eager: the tasks run now
        outcome = reconcile.images_reconcile(model_id=model_id, grace=timedelta(minutes=5))
    assert outcome.queued == 5
    statuses = dict(ProductImage.objects.values_list("id", "index_status"))
    assert statuses.pop(images["failed"]) == "failed"
    assert statuses.pop(images["queued_now"]) == "pending"  # still within its grace period
    assert set(statuses.values()) == {"indexed"}
    for image_id in statuses:
        emb = ImageEmbedding.objects.get(image_id=image_id, model_id=model_id)
        assert emb.content_hash == ProductImage.objects.get(id=image_id).content_hash
    assert not reconcile.images_needing_embedding(model_id=model_id, grace=timedelta(0))[
        "missing_vector"
    ].exists()


def test_reconcile_task_uses_the_serving_model_and_the_settings(
    images, settings, django_capture_on_commit_callbacks
):
    from embeddings import tasks

    settings.EMBEDDINGS_RECONCILE_GRACE = 300.0
    settings.EMBEDDINGS_RECONCILE_BATCH = 2
    with django_capture_on_commit_callbacks(execute=False):
        result = tasks.index_reconcile_task.apply().get()
    assert result["queued"] == 2 and result["left"] == 3
    assert "index-reconcile" in settings.CELERY_BEAT_SCHEDULE
    assert (
        settings.CELERY_BEAT_SCHEDULE["index-reconcile"]["task"]
        == "embeddings.tasks.index_reconcile_task"
    )


def test_reconcile_index_command_reports_and_queues(images, django_capture_on_commit_callbacks):
    out = run("reconcile_index", "--dry-run", "--grace", "300")
    assert "Would queue 5: 2 pending longer than 300 s, 2 without a vector, 1 with an" in out
    assert ProductImage.objects.filter(index_status="pending").count() == 3
    with django_capture_on_commit_callbacks(execute=False):
        out = run("reconcile_index", "--grace", "300", "--limit", "2", "--all")
    assert out.count("Queued 2:") == 2 and "Queued 5 image(s)" in out
    with django_capture_on_commit_callbacks(execute=False):
        body = json.loads(run("reconcile_index", "--json"))
    assert body["queued"] == 0 and body["left"] == 0
    with pytest.raises(CommandError, match="--limit must be at least 1"):
        run("reconcile_index", "--limit", "0")


def test_index_status_shows_the_oldest_pending_image_and_the_drift_bound(images, settings):
    settings.EMBEDDINGS_RECONCILE_INTERVAL = 60.0
    settings.EMBEDDINGS_RECONCILE_GRACE = 300.0
    settings.CELERY_BROKER_VISIBILITY_TIMEOUT = 300.0
    fresh = json.loads(run("index_status", "--json"))["freshness"]
    assert fresh["pending"] == 3 and fresh["pending_beyond_grace"] == 2
    assert 3500 < fresh["oldest_pending_age_s"] < 3700
    assert fresh["drift_bound_s"] == 660.0
    out = run("index_status")
    assert "2 pending longer than the 300 s grace period" in out
    assert "within 660 s" in out
    ProductImage.objects.update(index_status="indexed")
    assert "nothing pending" in run("index_status")
    assert reconcile.index_freshness().oldest_pending_age_s is None


def test_enqueue_records_when_each_image_was_queued(django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        image = catalog_services.product_image_add(
            product=ProductFactory(), file=SimpleUploadedFile("a.png", distinct_image(1))
        )
    image.refresh_from_db()
    first = image.queued_at
    assert image.index_status == "pending" and first is not None
    with django_capture_on_commit_callbacks(execute=False):
        services.images_enqueue(image_ids=[image.id])
    image.refresh_from_db()
    assert image.queued_at > first
