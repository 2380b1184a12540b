"""Faults and races on the way from an upload to its vector, against real PostgreSQL, a real
Redis (a throwaway redis-server on a port of its own, started and stopped by the test) and real
`celery worker` / `celery beat` processes. Each test checks the end state: every image indexed
exactly once (one vector of the serving model, matching its file), no 5xx, search correct.

Interleavings are forced, not hoped for: a row lock held from the test's own PostgreSQL
connection parks a worker just before it stores a vector (services._store takes that lock), and
an image file that is a named pipe parks a worker while it reads the file.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import psycopg
import pytest
import redis
from django.contrib.auth import get_user_model
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from catalog import services as catalog_services
from catalog.models import Product, ProductImage
from embeddings import runtime
from embeddings.bulk_import import per_image_embedding_paused
from embeddings.encoder import load_image
from embeddings.models import ImageEmbedding, IndexChange
from searchsite.celery import app as celery_app
from tests.conftest import distinct_image
from tests.factories import ProductFactory

from .conftest import REPO_ROOT, child_env, database_url, free_port, stop

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

WAIT_S = 90


def wait_until(
    check: Callable[[], object], what: str, timeout: float = WAIT_S, logs=(), poll: float = 0.1
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(poll)
    tails = "\n".join(f"--- {p.name} ---\n{p.read_text(errors='replace')[-4000:]}" for p in logs)
    pytest.fail(f"not within {timeout:.0f} s: {what}\n{tails}")


class ThrowawayRedis:
    """A redis-server of this test's own (no persistence), on a free port: stop() and start()
    model a broker outage without touching the machine's shared Redis."""

    def __init__(self, tmp_path: Path):
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.dir = tmp_path
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
            + ["--appendonly", "no", "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=1)
        wait_until(lambda: self._ping(client), f"redis-server on port {self.port} answers", 10)

    @staticmethod
    def _ping(client) -> bool:
        try:
            return bool(client.ping())
        except redis.exceptions.ConnectionError:
            return False

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port)

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None


class Celery:
    """Worker and beat processes sharing this test's database, media and broker."""

    def __init__(self, settings, tmp_path: Path, broker_url: str, **env: str):
        self.env = child_env(
            settings, CELERY_BROKER_URL=broker_url, CELERY_TASK_ALWAYS_EAGER="false", **env
        )
        self.tmp_path = tmp_path
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, Path] = {}
        self.starts = 0

    def worker(self, name: str = "w1", wait_ready: bool = True) -> subprocess.Popen:
        self.starts += 1
        log = self.tmp_path / f"{name}-{self.starts}.log"
        cmd = ["worker", "--pool=solo", "-n", f"{name}@%h", "-Q", "celery", "--loglevel=INFO"]
        cmd += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
        proc = self._spawn(name, log, cmd)
        if wait_ready:
            wait_until(
                lambda: "ready." in log.read_text(errors="replace") or proc.poll() is not None,
                f"worker {name} ready",
                logs=[log],
            )
            assert proc.poll() is None, log.read_text(errors="replace")[-4000:]
        return proc

    def beat(self) -> subprocess.Popen:
        log = self.tmp_path / "beat.log"
        schedule = self.tmp_path / "beat-schedule"
        return self._spawn("beat", log, ["beat", "--schedule", str(schedule), "--loglevel=INFO"])

    def _spawn(self, name: str, log: Path, args: list[str]) -> subprocess.Popen:
        with log.open("wb") as fh:
            proc = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "searchsite", *args],
                cwd=REPO_ROOT,
                env=self.env,
                stdout=fh,
                stderr=subprocess.STDOUT,
            )
        self.procs[name], self.logs[name] = proc, log
        return proc

    def kill9(self, name: str) -> None:
        proc = self.procs[name]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def log_text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.tmp_path.glob("*.log"))

    def stop_all(self) -> None:
        for proc in self.procs.values():
            stop(proc)


@pytest.fixture
def broker(postgres_db, tmp_path):
    server = ThrowawayRedis(tmp_path)
    server.start()
    conf = celery_app.conf
    saved = (conf.broker_url, conf.task_always_eager)
    conf.broker_url, conf.task_always_eager = server.url, False
    celery_app._pool = None  # cached connections to the previous broker
    celery_app.amqp._producer_pool = None
    from embeddings import services

    services._publish_paused_until = 0.0
    yield server
    conf.broker_url, conf.task_always_eager = saved
    celery_app._pool = None
    celery_app.amqp._producer_pool = None
    services._publish_paused_until = 0.0
    server.stop()


@pytest.fixture
def celery_procs(broker, settings, tmp_path):
    procs: list[Celery] = []

    def make(**env: str) -> Celery:
        procs.append(Celery(settings, tmp_path, broker.url, **env))
        return procs[-1]

    yield make
    for c in procs:
        c.stop_all()


@pytest.fixture
def staff_client(db):
    user = get_user_model().objects.create_user("staff", password="pw-staff-123", is_staff=True)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


@pytest.fixture
def pg(postgres_db):
    """A connection of the test's own, to hold row locks while workers wait on them."""
    conn = psycopg.connect(database_url(postgres_db), autocommit=False)
    yield conn
    conn.rollback()
    conn.close()


def lock_image(conn, image_id: int) -> None:
    conn.execute("SELECT id FROM catalog_productimage WHERE id = %s FOR UPDATE", [image_id])


def lock_waiters() -> int:
    """Sessions of the test database waiting on a row lock."""
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock'"
        )
        return cur.fetchone()[0]


def upload(client, title: str, pictures: list[bytes]) -> dict:
    files = [
        SimpleUploadedFile(f"{title}-{n}.png", data, content_type="image/png")
        for n, data in enumerate(pictures)
    ]
    response = client.post(
        "/api/v1/products/", {"title": title, "images": files}, format="multipart"
    )
    assert response.status_code == 201, response.content
    return response.json()


def fresh_image(data: bytes) -> ProductImage:
    """A committed, pending image whose task was not published (as if it were lost)."""
    with per_image_embedding_paused():
        return catalog_services.product_image_add(
            product=ProductFactory(), file=ContentFile(data, name="fresh.png")
        )


def assert_indexed_exactly_once(image_ids, model_id: str) -> None:
    images = ProductImage.objects.filter(id__in=list(image_ids))
    assert images.count() == len(set(image_ids))
    for image in images:
        rows = list(ImageEmbedding.objects.filter(image=image, model_id=model_id))
        assert len(rows) == 1, f"image {image.id}: {len(rows)} vectors"
        assert image.index_status == "indexed", (image.id, image.index_status, image.index_error)
        assert rows[0].content_hash == image.content_hash == image.compute_content_hash()


def all_indexed(image_ids) -> bool:
    statuses = set(
        ProductImage.objects.filter(id__in=list(image_ids)).values_list("index_status", flat=True)
    )
    return statuses == {"indexed"}


def test_a_save_while_the_broker_is_down_succeeds_and_beat_embeds_it_once_it_is_back(
    broker, celery_procs, staff_client
):
    model_id = runtime.get_encoder().model_id
    celery = celery_procs(EMBEDDINGS_RECONCILE_INTERVAL="2", EMBEDDINGS_RECONCILE_GRACE="3")
    celery.worker()
    celery.beat()
    before = upload(staff_client, "Before the outage", [distinct_image(0)])

    broker.stop()
    pictures = [distinct_image(n) for n in range(1, 5)]
    started = time.monotonic()
    during = upload(staff_client, "During the outage", pictures[:3])
    second = upload(staff_client, "Also during the outage", pictures[3:])
    elapsed = time.monotonic() - started
    assert elapsed < 4.0, f"two saves with the broker down took {elapsed:.1f} s"
    assert Product.objects.filter(title="During the outage").count() == 1
    down_ids = [img["id"] for body in (during, second) for img in body["images"]]
    assert set(
        ProductImage.objects.filter(id__in=down_ids).values_list("index_status", flat=True)
    ) == {"pending"}

    time.sleep(1)
    broker.start()  # empty: a Redis restart without persistence loses whatever was queued
    ids = down_ids + [img["id"] for img in before["images"]]
    wait_until(lambda: all_indexed(ids), "every image indexed", logs=list(celery.logs.values()))
    assert_indexed_exactly_once(ids, model_id)
    # Nobody ran a command: beat's reconcile queued them again.
    assert "index-reconcile" in celery.logs["beat"].read_text(errors="replace")
    assert "reconcile queued" in celery.logs["w1"].read_text(errors="replace")

    response = staff_client.post(
        "/api/v1/search/",
        {"image": SimpleUploadedFile("q.png", pictures[1], content_type="image/png")},
        format="multipart",
    )
    assert response.status_code == 200, response.content
    top = response.json()["results"][0]
    assert top["product"]["id"] == during["id"] and top["score"] > 0.99


def test_a_worker_killed_mid_batch_is_redelivered_and_every_image_indexed_once(
    broker, celery_procs, staff_client, pg
):
    model_id = runtime.get_encoder().model_id
    # Redelivery alone (no beat): a killed worker's message comes back after 5 s.
    celery = celery_procs(CELERY_BROKER_VISIBILITY_TIMEOUT="5")
    pictures = [distinct_image(n) for n in range(16)]
    body = upload(staff_client, "Batch", pictures)  # queued in order, before any worker runs
    ids = [img["id"] for img in body["images"]]
    # The kill lands while the worker is inside the fourth task: it waits on this row lock.
    lock_image(pg, ids[3])
    celery.worker("w1")
    wait_until(
        lambda: lock_waiters() >= 1,
        "the worker is inside the fourth task",
        logs=list(celery.logs.values()),
    )
    celery.kill9("w1")
    pg.commit()
    indexed = ProductImage.objects.filter(id__in=ids, index_status="indexed").count()
    assert indexed == 3, f"{indexed} indexed when the worker was killed"
    assert broker.client().hlen("unacked") == 1, "the killed task's message is not held unacked"

    celery.worker("w1")
    wait_until(
        lambda: all_indexed(ids),
        "every image indexed after the restart",
        logs=list(celery.logs.values()),
    )
    assert_indexed_exactly_once(ids, model_id)
    wait_until(lambda: broker.client().hlen("unacked") == 0, "no message left unacknowledged", 30)


def test_deleting_an_image_or_product_while_a_worker_stores_its_vector_is_never_a_500(
    broker, celery_procs, staff_client, pg
):
    from embeddings.tasks import image_embed_task

    staff_client.raise_request_exception = False  # a 500 is an answer to assert on
    celery = celery_procs()
    celery.worker()
    for target in ("image", "product"):
        image = fresh_image(distinct_image(20 if target == "image" else 21))
        lock_image(pg, image.id)  # the worker will compute, then wait for this to store
        image_embed_task.delay(image.id)
        wait_until(lambda: lock_waiters() >= 1, "the worker waits to store the vector")
        url = (
            f"/api/v1/products/{image.product_id}/images/{image.id}/"
            if target == "image"
            else f"/api/v1/products/{image.product_id}/"
        )
        answers = []

        def delete(url=url, answers=answers):
            answers.append(staff_client.delete(url))
            from django.db import connection

            connection.close()

        thread = threading.Thread(target=delete)
        thread.start()
        wait_until(lambda: lock_waiters() >= 2, "the delete waits behind the worker")
        pg.commit()  # the worker stores first, then the delete goes on
        thread.join(60)
        assert answers and answers[0].status_code == 204, answers and answers[0].content
        assert not ProductImage.objects.filter(id=image.id).exists()
        assert not ImageEmbedding.objects.filter(image_id=image.id).exists()
        last = IndexChange.objects.filter(image_id=image.id).order_by("-id").first()
        assert last is not None and last.op == "delete"
    log = celery.logs["w1"].read_text(errors="replace")
    assert "Traceback" not in log and log.count("succeeded") == 2, log[-4000:]

    # And unforced, as the tester did it: upload, then delete at once, while the worker embeds.
    created = []
    for n in range(12):
        body = upload(staff_client, f"Short-lived {n}", [distinct_image(30 + n)])
        time.sleep(0.02 * (n % 4))
        image_id = body["images"][0]["id"]
        url = (
            f"/api/v1/products/{body['id']}/images/{image_id}/"
            if n % 2
            else f"/api/v1/products/{body['id']}/"
        )
        response = staff_client.delete(url)
        assert response.status_code == 204, (n, response.status_code, response.content)
        created.append(image_id)
    wait_until(
        lambda: celery.logs["w1"].read_text(errors="replace").count("succeeded") >= 14,
        "the worker ran every task",
        logs=[celery.logs["w1"]],
    )
    assert not ImageEmbedding.objects.filter(image_id__in=created).exists()
    assert "Traceback" not in celery.logs["w1"].read_text(errors="replace")


def test_a_product_deleted_while_its_task_is_queued_ends_with_nothing_to_embed(
    broker, celery_procs, staff_client, pg
):
    from embeddings.tasks import image_embed_task

    celery = celery_procs()
    celery.worker()
    busy = fresh_image(distinct_image(22))
    lock_image(pg, busy.id)  # the only worker is parked on this one
    image_embed_task.delay(busy.id)
    wait_until(lambda: lock_waiters() >= 1, "the worker is busy")
    body = upload(staff_client, "Deleted while queued", [distinct_image(23)])
    gone = body["images"][0]["id"]
    assert staff_client.delete(f"/api/v1/products/{body['id']}/").status_code == 204
    pg.commit()
    log = celery.logs["w1"]
    wait_until(
        lambda: "'missing'" in log.read_text(errors="replace"), "the queued task ran", logs=[log]
    )
    assert not ImageEmbedding.objects.filter(image_id=gone).exists()
    assert_indexed_exactly_once([busy.id], runtime.get_encoder().model_id)


def test_an_edit_while_embedding_and_two_workers_on_one_image_end_consistent(
    broker, celery_procs, pg, settings
):
    from embeddings.tasks import image_embed_task

    model_id = runtime.get_encoder().model_id
    encoder = runtime.get_encoder()
    celery = celery_procs()
    celery.worker("w1")
    celery.worker("w2")

    # Two workers given the same new image at once: both compute, both wait on the row lock.
    image = fresh_image(distinct_image(24))
    lock_image(pg, image.id)
    image_embed_task.delay(image.id)
    image_embed_task.delay(image.id)
    wait_until(
        lambda: lock_waiters() >= 2,
        "both workers wait to store the vector",
        logs=list(celery.logs.values()),
    )
    pg.commit()
    wait_until(lambda: celery.log_text().count("succeeded") >= 2, "both tasks ran")
    assert_indexed_exactly_once([image.id], model_id)
    assert IndexChange.objects.filter(image_id=image.id, op="upsert").count() == 1
    assert "Traceback" not in celery.log_text()

    # Edit during embedding: the first task reads the old file (a pipe: it waits there), staff
    # upload a new file, the other worker embeds that; then the first task gets its bytes.
    old, new = distinct_image(25), distinct_image(26)
    edited = fresh_image(old)
    pipe = Path(settings.MEDIA_ROOT) / "products" / "old-file-pipe.png"
    os.mkfifo(pipe)
    writer = os.open(pipe, os.O_RDWR)  # a writer exists: a reader opens at once, reads wait
    try:
        ProductImage.objects.filter(id=edited.id).update(image="products/old-file-pipe.png")
        image_embed_task.delay(edited.id)
        workers = [p.pid for name, p in celery.procs.items() if name.startswith("w")]
        wait_until(lambda: _has_open(workers, pipe), "a worker reads the old file")
        edited.refresh_from_db()
        edited.image.save("new-file.png", ContentFile(new))  # queues the new file's task
        wait_until(lambda: all_indexed([edited.id]), "the new file embedded by the other worker")
        os.write(writer, old)  # the first task now gets the old bytes and goes on
    finally:
        os.close(writer)
    wait_until(lambda: celery.log_text().count("succeeded") >= 4, "the old-file task ran")
    assert_indexed_exactly_once([edited.id], model_id)
    vector = ImageEmbedding.objects.get(image_id=edited.id, model_id=model_id).array
    side = encoder.decode_side
    expected = encoder.encode_images([load_image(new, max_pixels=10**8, min_side=side)])[0]
    stale = encoder.encode_images([load_image(old, max_pixels=10**8, min_side=side)])[0]
    assert np.allclose(vector, expected, atol=1e-4) and not np.allclose(vector, stale, atol=1e-2)
    assert "Traceback" not in celery.log_text()


def _has_open(pids: list[int], path: Path) -> bool:
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                if os.readlink(fd) == str(path):
                    return True
            except OSError:
                continue
    return False
