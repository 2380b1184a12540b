"""A product created through the REST API is embedded by a real Celery worker process reading
from real Redis, and is then found first by a search with its own image."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from searchsite.celery import app as celery_app
from tests.conftest import make_image

from .conftest import REPO_ROOT, child_env, stop

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

EMBED_TIMEOUT_S = 60


@pytest.fixture
def staff_client(db):
    user = get_user_model().objects.create_user("staff", password="pw-staff-123", is_staff=True)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


@pytest.fixture
def celery_to_redis(redis_url):
    """Makes this process publish tasks to Redis instead of running them eagerly."""
    conf = celery_app.conf
    saved = (conf.broker_url, conf.task_always_eager)
    conf.broker_url, conf.task_always_eager = redis_url, False
    # The app caches its broker connection pools; drop them so the new broker URL is used.
    celery_app._pool = None
    celery_app.amqp._producer_pool = None
    yield redis_url
    conf.broker_url, conf.task_always_eager = saved
    celery_app._pool = None
    celery_app.amqp._producer_pool = None


@pytest.fixture
def worker(celery_to_redis, postgres_db, settings, tmp_path):
    log_path = tmp_path / "worker.log"
    env = child_env(settings, CELERY_BROKER_URL=celery_to_redis, CELERY_TASK_ALWAYS_EAGER="false")
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "searchsite",
                "worker",
                "--pool=solo",
                "--concurrency=1",
                "-Q",
                "celery",
                "--loglevel=INFO",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            yield proc, log_path
        finally:
            stop(proc)


def _worker_log(log_path) -> str:
    return log_path.read_text(errors="replace")[-6000:] if log_path.exists() else "(no log)"


def test_api_upload_is_embedded_by_a_celery_worker_and_found_by_its_image(staff_client, worker):
    proc, log_path = worker
    picture = make_image((30, 160, 60), size=(96, 96), shape="stripes", accent=(250, 250, 250))
    other = make_image((200, 30, 30), size=(96, 96), shape="circle")
    created = {}
    for title, data in [("Green striped tee", picture), ("Red dot tee", other)]:
        response = staff_client.post(
            "/api/v1/products/",
            {
                "title": title,
                "price": "19.99",
                "category": "T-shirts",
                "images": [SimpleUploadedFile(f"{title}.png", data, content_type="image/png")],
            },
            format="multipart",
        )
        assert response.status_code == 201, response.content
        body = response.json()
        assert body["images"], body
        created[title] = body

    # The request returned before any embedding: the worker does it, from Redis.
    deadline = time.monotonic() + EMBED_TIMEOUT_S
    statuses: dict[str, str] = {}
    while time.monotonic() < deadline:
        statuses = {
            title: staff_client.get(f"/api/v1/products/{body['id']}/").json()["images"][0][
                "index_status"
            ]
            for title, body in created.items()
        }
        if set(statuses.values()) <= {"indexed", "failed"} or proc.poll() is not None:
            break
        time.sleep(0.5)
    assert set(statuses.values()) == {"indexed"}, (
        f"images not indexed within {EMBED_TIMEOUT_S}s: {statuses}; worker exit code {proc.poll()}\n"
        f"--- worker log ---\n{_worker_log(log_path)}"
    )

    log = _worker_log(log_path)
    assert "image_embed_task" in log and "succeeded" in log, (
        f"the worker did not run the tasks:\n{log}"
    )

    response = staff_client.post(
        "/api/v1/search/",
        {"image": SimpleUploadedFile("q.png", picture, content_type="image/png")},
        format="multipart",
    )
    assert response.status_code == 200, response.content
    results = response.json()["results"]
    assert results, f"no search results\n--- worker log ---\n{_worker_log(log_path)}"
    assert results[0]["product"]["id"] == created["Green striped tee"]["id"]
    assert results[0]["score"] > 0.99
