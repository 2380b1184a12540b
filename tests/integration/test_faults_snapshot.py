"""A damaged index base never gives a wrong answer: gunicorn (the project's config, preloading
the base in the master) over real PostgreSQL is started on a base that was truncated,
overwritten in the middle, swapped for another model's, or given a wrong dimension; and a base
is overwritten while it is being served. Every search answers the right products with cosine
scores, or an honest 503 while the base is rebuilt from the database; never a 5xx else."""

from __future__ import annotations

import json
import shutil
import time
import urllib.error
import urllib.request
import uuid
from decimal import Decimal

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from catalog import services as catalog_services
from catalog.models import ProductImage
from embeddings import runtime, services
from embeddings.engine.live import base_build, snapshot_root
from embeddings.engine.snapshot import current_base
from embeddings.models import ImageEmbedding
from tests.conftest import distinct_image

from .conftest import child_env, free_port, start_gunicorn, stop

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

N_PRODUCTS = 6
START_TIMEOUT_S = 90


@pytest.fixture
def catalog(postgres_db):
    """Products with distinct pictures, embedded (eagerly) and in a base on disk."""
    products = [
        catalog_services.product_create(
            title=f"Damage test {i}",
            price=Decimal("10.00"),
            images=[SimpleUploadedFile(f"d{i}.png", distinct_image(i))],
        )
        for i in range(N_PRODUCTS)
    ]
    assert ProductImage.objects.filter(index_status="indexed").count() == N_PRODUCTS
    services.index_rebuild(progress=False)
    encoder = runtime.get_encoder()
    root = snapshot_root(encoder.model_id)
    return products, root, encoder


@pytest.fixture
def serve(settings, tmp_path):
    """Starts gunicorn with the project's config; returns its base URL once it answers."""
    procs = []

    def start() -> str:
        port = free_port()
        log = (tmp_path / f"gunicorn-{port}.log").open("wb")
        env = child_env(
            settings,
            GUNICORN_BIND=f"127.0.0.1:{port}",
            GUNICORN_WORKERS="1",
            GUNICORN_THREADS="2",
        )
        proc = start_gunicorn(env, log)
        procs.append((proc, log))
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / f"gunicorn-{port}.log").read_text()[-3000:]
            try:
                urllib.request.urlopen(f"{url}/api/v1/categories/", timeout=5).close()
                return url
            except urllib.error.HTTPError:
                return url  # answering (e.g. 403 for an anonymous list): up
            except OSError:
                time.sleep(0.5)
        raise AssertionError("gunicorn did not answer in time")

    yield start
    for proc, log in procs:
        stop(proc)
        log.close()


def image_search(url: str, n: int) -> tuple[int, dict]:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="q.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + distinct_image(n)
        + f"\r\n--{boundary}--\r\n".encode()
    )
    request = urllib.request.Request(
        f"{url}/api/v1/search/",
        data=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def assert_correct(url: str, products) -> None:
    for n, product in enumerate(products):
        status, body = image_search(url, n)
        assert status == 200, body
        results = body["results"]
        assert results[0]["product"]["id"] == product.id, f"query {n}: {results[0]}"
        assert all(-1.0 <= r["score"] <= 1.0 for r in results), results


def overwrite_middle(path, n: int = 256) -> None:
    size = path.stat().st_size
    with open(path, "r+b") as fh:
        fh.seek(size // 2)
        fh.write(b"\x47" * min(n, size - size // 2))


def foreign_base(root, dim: int, tmp_path):
    """A real base of another model (its own vectors for the same images)."""
    other = "another-model/weights"
    rng = np.random.default_rng(0)
    for image in ProductImage.objects.all():
        v = rng.normal(size=dim).astype(np.float32)
        ImageEmbedding.objects.create(
            image=image,
            model_id=other,
            dim=dim,
            vector=ImageEmbedding.pack(v / np.linalg.norm(v)),
            content_hash="x",
        )
    return base_build(model_id=other, dim=dim, root=tmp_path / "other")


def damage(how: str, base, root, dim: int, tmp_path) -> None:
    if how == "truncated":
        path = base / "index.faiss"
        path.write_bytes(path.read_bytes()[:-100])
    elif how == "overwritten":
        overwrite_middle(base / "index.faiss")
    elif how == "other-model":
        other = foreign_base(root, dim, tmp_path)
        shutil.rmtree(base)
        shutil.copytree(other, base)
    elif how == "wrong-dimension":
        manifest = json.loads((base / "manifest.json").read_text())
        (base / "manifest.json").write_text(json.dumps({**manifest, "dim": dim * 2}))


@pytest.mark.parametrize("how", ["truncated", "overwritten", "other-model", "wrong-dimension"])
def test_a_damaged_base_is_set_aside_and_rebuilt_at_start(catalog, serve, how, tmp_path):
    products, root, encoder = catalog
    base = current_base(root)
    damage(how, base, root, encoder.dim, tmp_path)
    url = serve()
    assert_correct(url, products)
    assert list(root.glob(f"{base.name}.damaged-*")), f"the {how} base is kept aside"
    rebuilt = current_base(root)
    assert rebuilt is not None and rebuilt.exists() and rebuilt != base
    manifest = json.loads((rebuilt / "manifest.json").read_text())
    assert (manifest["model_id"], manifest["dim"]) == (encoder.model_id, encoder.dim)
    assert manifest["count"] == N_PRODUCTS


def test_a_base_overwritten_while_served_answers_503_then_right_again(catalog, serve):
    products, root, _ = catalog
    url = serve()
    assert_correct(url, products)
    served = current_base(root)
    overwrite_middle(served / "index.faiss")
    statuses = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status, body = image_search(url, 0)
        statuses.append(status)
        if status == 503:
            assert body["error"]["code"] == "service_unavailable", body
            assert "rebuilt" in body["error"]["message"]
        else:
            assert status == 200, body
            # Either the damage was caught (and the base replaced) or this query met no
            # overwritten row; a wrong top product would be a wrong answer.
            assert body["results"][0]["product"]["id"] == products[0].id
            if list(root.glob(f"{served.name}.damaged-*")):
                break
        time.sleep(0.2)
    assert list(root.glob(f"{served.name}.damaged-*")), statuses
    assert 503 in statuses, "the damage was seen by a search and refused, not answered"
    assert_correct(url, products)
