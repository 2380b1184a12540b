"""Management commands: bulk import, demo catalog, re-embedding and index maintenance."""

from __future__ import annotations

import csv
import json
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from catalog.models import Product, ProductImage
from embeddings import runtime
from embeddings.engine.live import snapshot_root
from embeddings.engine.snapshot import current_base
from embeddings.models import ImageEmbedding
from tests.conftest import make_image

pytestmark = pytest.mark.django_db(transaction=True)


def write_catalog(folder: Path, rows: list[dict], images: dict[str, bytes]) -> Path:
    (folder / "images").mkdir(parents=True, exist_ok=True)
    for name, data in images.items():
        (folder / "images" / name).write_bytes(data)
    path = folder / "manifest.csv"
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(
            fh, fieldnames=["path", "product_id", "title", "articleType", "price", "baseColour"]
        )
        writer.writeheader()
        writer.writerows(rows)
    return path


def row(sku, title, image, price="9.99", category="Tshirts", colour="Red"):
    return {
        "path": f"images/{image}",
        "product_id": sku,
        "title": title,
        "articleType": category,
        "price": price,
        "baseColour": colour,
    }


def run(*args) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command(*args, stdout=out, stderr=err, verbosity=0)
    return out.getvalue(), err.getvalue()


@pytest.fixture
def catalog(tmp_path):
    images = {
        "a.png": make_image((200, 20, 20)),
        "b.png": make_image((20, 20, 200), shape="square"),
    }
    rows = [row("A1", "Red tee", "a.png"), row("B2", "Blue tee", "b.png", category="Shirts")]
    return write_catalog(tmp_path / "cat", rows, images)


def test_import_catalog_creates_products_and_embeds_them_in_batches(catalog):
    out, _ = run("import_catalog", "--csv", str(catalog), "--description-columns", "baseColour")
    assert "2 created" in out
    assert Product.objects.count() == 2
    red = Product.objects.get(sku="A1")
    assert red.title == "Red tee" and str(red.price) == "9.99" and red.category.name == "Tshirts"
    assert red.description == "Red"
    assert set(ProductImage.objects.values_list("index_status", flat=True)) == {"indexed"}
    assert ImageEmbedding.objects.count() == 2


def test_import_catalog_twice_updates_and_never_duplicates(catalog):
    run("import_catalog", "--csv", str(catalog))
    first_images = set(ProductImage.objects.values_list("id", flat=True))
    out, _ = run("import_catalog", "--csv", str(catalog))
    assert "0 created, 0 updated, 2 unchanged" in out
    assert Product.objects.count() == 2
    assert set(ProductImage.objects.values_list("id", flat=True)) == first_images

    rows = [
        row("A1", "Red tee, new title", "a.png", price="12.00"),
        row("B2", "Blue tee", "b2.png", category="Shirts"),
    ]
    write_catalog(catalog.parent, rows, {"b2.png": make_image((20, 200, 20), shape="stripes")})
    out, _ = run("import_catalog", "--csv", str(catalog))
    assert "0 created, 2 updated" in out
    assert Product.objects.get(sku="A1").title == "Red tee, new title"
    blue = Product.objects.get(sku="B2")
    assert blue.images.count() == 1, "a changed image replaces the imported one"
    assert blue.images.get().id not in first_images
    assert blue.images.get().index_status == "indexed"


def test_bad_rows_are_reported_with_line_numbers_and_skipped(tmp_path):
    images = {"ok.png": make_image(), "broken.png": b"not an image"}
    rows = [
        row("OK1", "Fine tee", "ok.png"),
        row("NOFILE", "Missing file", "missing.png"),
        row("BADPRICE", "Bad price", "ok.png", price="cheap"),
        row("", "No sku", "ok.png"),
        row("BROKEN", "Broken image", "broken.png"),
        row("OK2", "Also fine", "ok.png"),
    ]
    path = write_catalog(tmp_path / "cat", rows, images)
    out, err = run("import_catalog", "--csv", str(path))
    assert "2 created" in out and "4 skipped" in out
    assert "line 3:" in err and "not found" in err
    assert "line 4:" in err and "price" in err
    assert "line 5:" in err and "SKU" in err
    assert "line 6:" in err and "not a readable image" in err
    assert set(Product.objects.values_list("sku", flat=True)) == {"OK1", "OK2"}


def test_import_limit_and_missing_csv(catalog):
    run("import_catalog", "--csv", str(catalog), "--limit", "1")
    assert Product.objects.count() == 1
    with pytest.raises(CommandError, match="not found"):
        run("import_catalog", "--csv", str(catalog.parent / "nope.csv"))
    with pytest.raises(CommandError, match="--title-column"):
        run("import_catalog", "--csv", str(catalog), "--title-column", "name")


def test_import_without_embedding_leaves_pending_until_reembed_only_missing(catalog):
    out, _ = run("import_catalog", "--csv", str(catalog), "--no-embed")
    assert "pending" in out
    assert set(ProductImage.objects.values_list("index_status", flat=True)) == {"pending"}
    assert ImageEmbedding.objects.count() == 0
    out, _ = run("reembed", "--only-missing")
    assert "2 indexed" in out and "Index rebuilt: 2 vectors" in out
    assert set(ProductImage.objects.values_list("index_status", flat=True)) == {"indexed"}
    out, _ = run("reembed", "--only-missing")
    assert "0 indexed" in out


def test_reembed_recomputes_every_vector(catalog):
    run("import_catalog", "--csv", str(catalog))
    out, _ = run("reembed")
    assert "2 indexed" in out
    assert len(runtime.get_live_index()) == 2


def test_rebuild_snapshot_and_status(catalog):
    run("import_catalog", "--csv", str(catalog))
    out, _ = run("rebuild_index", "--kind", "flat")
    model_id = runtime.get_encoder().model_id
    first = current_base(snapshot_root(model_id))
    assert "2 vectors" in out and str(first) in out
    out, _ = run("snapshot_index")
    assert "nothing written" in out and current_base(snapshot_root(model_id)) == first
    out, _ = run("snapshot_index", "--force")
    assert current_base(snapshot_root(model_id)) != first and "2 vectors" in out
    out, _ = run("index_status", "--json")
    status = json.loads(out)
    assert status["images"] == {"pending": 0, "indexed": 2, "failed": 0}
    assert status["index_size"] == 2 and status["model_id"] == model_id
    assert status["snapshot"] == str(current_base(snapshot_root(model_id)))
    out, _ = run("index_status")
    assert "2 indexed" in out


def test_prune_index_changes_keeps_search_whole(catalog):
    from datetime import timedelta

    from django.utils import timezone

    from embeddings.models import IndexChange

    run("import_catalog", "--csv", str(catalog))
    run("rebuild_index", "--kind", "flat")
    out, _ = run("prune_index_changes")
    assert "nothing to prune" in out
    IndexChange.objects.update(created_at=timezone.now() - timedelta(days=30))
    logged = IndexChange.objects.count()  # two images and their two products
    out, _ = run("prune_index_changes", "--days", "7", "--dry-run")
    assert f"Would delete {logged} change-log rows" in out
    assert IndexChange.objects.count() == logged == 4
    out, _ = run("prune_index_changes", "--days", "7")
    assert f"Deleted {logged} change-log rows" in out and "snapshot_index" in out
    assert IndexChange.objects.count() == 0
    runtime.reset()  # a new process: starts from the snapshot, which covers the pruned rows
    status = json.loads(run("index_status", "--json")[0])
    assert status["index_size"] == 2 and status["change_log_pruned_through"] >= 2
    assert status["index_seq"] == status["db_seq"]
    with pytest.raises(CommandError, match="--days must be 0 or more"):
        run("prune_index_changes", "--days", "-1")


def test_load_demo_catalog_generates_and_imports_idempotently(settings, tmp_path):
    settings.DATA_DIR = tmp_path / "data"
    out, _ = run("load_demo_catalog", "--count", "8")
    assert "8 created" in out
    assert Product.objects.count() == 8
    assert (tmp_path / "data" / "demo-catalog" / "manifest.csv").is_file()
    titles = list(Product.objects.values_list("title", flat=True))
    assert all(("t-shirt" in t or "hoodie" in t or "tote bag" in t) for t in titles), titles
    assert set(ProductImage.objects.values_list("index_status", flat=True)) == {"indexed"}
    out, _ = run("load_demo_catalog", "--count", "8")
    assert "0 created, 0 updated, 8 unchanged" in out
    assert Product.objects.count() == 8


def test_load_demo_catalog_from_a_source_folder(catalog):
    out, _ = run("load_demo_catalog", "--source", str(catalog.parent))
    assert "2 created" in out
    with pytest.raises(CommandError, match="manifest.csv"):
        run("load_demo_catalog", "--source", str(catalog.parent / "images"))
