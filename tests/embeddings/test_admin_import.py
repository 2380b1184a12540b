"""Bulk import from the admin: upload (CSV + ZIP) and its checks, the column mapping, the import
run by the (eager) Celery task with its counts, row errors and CSV download, re-runs that never
duplicate, a crash that ends in a failed job, and import files that are never served."""

from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from catalog.models import Product, ProductImage
from embeddings import import_jobs
from embeddings.models import CatalogImport
from tests.conftest import distinct_image

pytestmark = pytest.mark.django_db

ADD_URL = reverse("admin:embeddings_catalogimport_add")


def make_csv(rows: list[list[str]], header=("product_id", "name", "image", "price", "type")):
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue().encode()


def make_zip(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


GOOD_ROWS = [
    ["A-1", "Red tee", "tees/red.png", "19.90", "T-shirt"],
    ["A-2", "Blue tee", "tees/blue.png", "21", "T-shirt"],
    ["A-3", "Green bag", "green.png", "", "Bag"],
]
BAD_ROWS = [
    ["A-4", "Lost shoe", "nowhere.png", "30", "Shoe"],  # line 5: no such image
    ["A-5", "Sneaky", "../../etc/passwd.png", "5", "Shoe"],  # line 6: escapes the ZIP root
    ["A-6", "Cheap", "green.png", "free", "Bag"],  # line 7: price not a number
]


def catalog_files() -> tuple[bytes, bytes]:
    images = {
        "tees/red.png": distinct_image(0),
        "tees/blue.png": distinct_image(1),
        "green.png": distinct_image(2),
        "README.txt": b"not an image: passed over",
    }
    return make_csv(GOOD_ROWS + BAD_ROWS), make_zip(images)


def upload(client: Client, csv_bytes: bytes, zip_bytes: bytes | None = None, name="cat.csv"):
    data = {"csv_file": SimpleUploadedFile(name, csv_bytes, content_type="text/csv")}
    if zip_bytes is not None:
        data["zip_file"] = SimpleUploadedFile("img.zip", zip_bytes, content_type="application/zip")
    return client.post(ADD_URL, data)


MAPPING = {
    "sku": "product_id",
    "title": "name",
    "path": "image",
    "price": "price",
    "category": "type",
}


def start(client: Client, job: CatalogImport, captured, mapping=MAPPING):
    with captured(execute=True):
        return client.post(reverse("admin:embeddings_catalogimport_map", args=[job.pk]), mapping)


def run_import(client, captured, csv_bytes, zip_bytes) -> CatalogImport:
    response = upload(client, csv_bytes, zip_bytes)
    assert response.status_code == 302, response.content.decode()[:2000]
    job = CatalogImport.objects.latest("id")
    response = start(client, job, captured)
    assert response.status_code == 302
    job.refresh_from_db()
    return job


# -- step 1: upload ---------------------------------------------------------------------------


def test_upload_stores_files_and_the_mapping_page_guesses_columns(admin_client):
    csv_bytes, zip_bytes = catalog_files()
    response = upload(admin_client, csv_bytes, zip_bytes)
    job = CatalogImport.objects.get()
    assert response["Location"] == reverse("admin:embeddings_catalogimport_map", args=[job.pk])
    assert job.status == "new" and job.header == ["product_id", "name", "image", "price", "type"]
    assert job.csv_file.name.startswith("imports/jobs/")
    page = admin_client.get(response["Location"]).content.decode()
    assert "<code>product_id</code>, <code>name</code>, <code>image</code>" in page
    # Defaults guessed by name: product_id -> SKU, name -> title, image -> path, type -> category.
    assert '<option value="product_id" selected>' in page
    assert '<option value="name" selected>' in page
    assert '<option value="image" selected>' in page
    assert '<option value="type" selected>' in page


def test_columns_guess_leaves_unknown_fields_unmapped():
    assert import_jobs.columns_guess(["SKU", "Product Name", "Photo", "colour"]) == {
        "sku": "SKU",
        "title": "Product Name",
        "path": "Photo",
        "price": "",
        "category": "",
        "description": [],
    }


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("photo.png", distinct_image(0), "is not a CSV file"),
        ("sneaky.csv", distinct_image(0), "not a CSV file: it holds binary data"),
        ("latin.csv", "sku,title\n1,Caf\xe9 cr\xe8me\n".encode("latin-1"), "not UTF-8"),
        ("empty.csv", b"", "submitted file is empty"),
        ("header.csv", b"sku,title,path\n", "no rows to import"),
        ("twice.csv", b"sku,title,sku\n1,a,b\n", "names a column twice: sku"),
    ],
)
def test_upload_refuses_what_is_not_a_usable_csv(admin_client, name, data, message):
    response = upload(admin_client, data, name=name)
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not CatalogImport.objects.exists()


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ({"ok.png": b"x", "../evil.png": b"x"}, "points outside the ZIP"),
        ({"a/../../evil.png": b"x"}, "points outside the ZIP"),
        ({"/etc/evil.png": b"x"}, "points outside the ZIP"),
        ({"notes.txt": b"x"}, "holds no image files"),
    ],
)
def test_upload_refuses_a_zip_with_entries_escaping_its_root(admin_client, entries, message):
    csv_bytes, _ = catalog_files()
    response = upload(admin_client, csv_bytes, make_zip(entries))
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not CatalogImport.objects.exists()


def test_upload_refuses_a_zip_that_is_not_one_or_too_big(admin_client, settings):
    csv_bytes, zip_bytes = catalog_files()
    response = upload(admin_client, csv_bytes, b"PK\x03\x04 not really")
    assert "This is not a ZIP file" in response.content.decode()
    settings.IMPORT_ZIP_MAX_FILES = 3  # the ZIP has 4 entries
    response = upload(admin_client, csv_bytes, zip_bytes)
    assert "The ZIP holds 4 entries; at most 3" in response.content.decode()
    settings.IMPORT_ZIP_MAX_FILES = 100
    settings.IMPORT_ZIP_MAX_BYTES = len(distinct_image(0)) + 10
    response = upload(admin_client, csv_bytes, zip_bytes)
    assert "unpack to more than" in response.content.decode()
    assert not CatalogImport.objects.exists()


def test_zip_extract_enforces_sizes_while_writing(tmp_path, settings):
    """A ZIP whose directory understates a member's size is stopped while unpacking."""
    data = distinct_image(3)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("a.png", data)
    raw = bytearray(buf.getvalue())
    # Patch the central directory's uncompressed size (offset 24 in the entry) to 10 bytes.
    cd = raw.rfind(b"PK\x01\x02")
    raw[cd + 24 : cd + 28] = (10).to_bytes(4, "little")
    (tmp_path / "z.zip").write_bytes(bytes(raw))
    settings.MAX_UPLOAD_BYTES = 100
    with pytest.raises(Exception) as info:
        import_jobs.zip_extract(zip_path=tmp_path / "z.zip", dest=tmp_path / "out")
    assert "unpacks to more bytes" in str(info.value) or "Bad" in type(info.value).__name__


def test_staff_who_may_not_add_products_cannot_import(django_user_model):
    user = django_user_model.objects.create_user("clerk", password="pw", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=["add_catalogimport"]))
    client = Client()
    client.force_login(user)
    assert client.get(ADD_URL).status_code == 403
    user.user_permissions.add(
        *Permission.objects.filter(codename__in=["add_product", "change_product"])
    )
    client.force_login(django_user_model.objects.get(pk=user.pk))
    assert client.get(ADD_URL).status_code == 200


# -- step 2: mapping ----------------------------------------------------------------------------


def test_mapping_requires_sku_title_and_image_columns(
    admin_client, django_capture_on_commit_callbacks
):
    csv_bytes, zip_bytes = catalog_files()
    upload(admin_client, csv_bytes, zip_bytes)
    job = CatalogImport.objects.get()
    response = start(
        admin_client, job, django_capture_on_commit_callbacks, {**MAPPING, "sku": "", "path": ""}
    )
    assert response.status_code == 200
    assert response.content.decode().count("Choose the column that holds this field.") == 2
    response = start(
        admin_client, job, django_capture_on_commit_callbacks, {**MAPPING, "title": "product_id"}
    )
    assert "cannot both come from the column &#x27;product_id&#x27;" in response.content.decode()
    response = start(
        admin_client, job, django_capture_on_commit_callbacks, {**MAPPING, "sku": "nope"}
    )
    assert "Select a valid choice" in response.content.decode()
    job.refresh_from_db()
    assert job.status == "new" and not Product.objects.exists()


# -- the import ---------------------------------------------------------------------------------


def test_full_import_creates_products_indexes_images_and_lists_row_errors(
    admin_client, django_capture_on_commit_callbacks
):
    job = run_import(admin_client, django_capture_on_commit_callbacks, *catalog_files())
    assert job.status == "done", job.error
    assert (job.rows_total, job.rows_done) == (6, 6)
    assert (job.created, job.updated, job.unchanged, job.skipped) == (3, 0, 0, 3)
    lines = {line: reason for line, reason in job.errors}
    assert set(lines) == {5, 6, 7}
    assert "not found" in lines[5]
    assert "outside the import folder" in lines[6]
    assert "'free' is not a number" in lines[7]

    products = {p.sku: p for p in Product.objects.select_related("category")}
    assert set(products) == {"A-1", "A-2", "A-3"}
    assert products["A-1"].title == "Red tee" and str(products["A-1"].price) == "19.90"
    assert products["A-3"].price is None and products["A-3"].category.name == "Bag"
    images = ProductImage.objects.filter(product__sku__in=products)
    assert images.count() == 3
    assert set(images.values_list("index_status", flat=True)) == {"indexed"}
    assert sorted(job.image_ids) == sorted(images.values_list("id", flat=True))
    assert job.embedded["indexed"] == 3 and job.embedded_at is not None

    page = admin_client.get(reverse("admin:embeddings_catalogimport_change", args=[job.pk]))
    html = page.content.decode()
    assert 'data-status="done"' in html
    assert 'data-figure="created">3<' in html and 'data-figure="indexed">3<' in html
    assert '<td class="num">6</td>' in html and "outside the import folder" in html
    assert 'http-equiv="refresh"' not in html  # finished: the page stops reloading
    assert reverse("admin:embeddings_index_health") in html

    download = admin_client.get(reverse("admin:embeddings_catalogimport_errors", args=[job.pk]))
    assert download["Content-Type"].startswith("text/csv")
    assert "attachment" in download["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(download.content.decode())))
    assert rows[0] == ["line", "error"]
    assert [r[0] for r in rows[1:]] == ["5", "6", "7"]


def test_running_the_same_files_again_updates_and_never_duplicates(
    admin_client, django_capture_on_commit_callbacks
):
    csv_bytes, zip_bytes = catalog_files()
    first = run_import(admin_client, django_capture_on_commit_callbacks, csv_bytes, zip_bytes)
    image_ids = set(ProductImage.objects.values_list("id", flat=True))

    second = run_import(admin_client, django_capture_on_commit_callbacks, csv_bytes, zip_bytes)
    assert second.status == "done"
    assert (second.created, second.updated, second.unchanged, second.skipped) == (0, 0, 3, 3)
    assert Product.objects.count() == 3
    assert set(ProductImage.objects.values_list("id", flat=True)) == image_ids

    # A changed title and image: updated in place, the product keeps its id.
    rows = [list(r) for r in GOOD_ROWS]
    rows[0][1] = "Red tee, new cut"
    images = {"tees/red.png": distinct_image(9), "tees/blue.png": distinct_image(1)}
    images["green.png"] = distinct_image(2)
    third = run_import(
        admin_client, django_capture_on_commit_callbacks, make_csv(rows), make_zip(images)
    )
    assert (third.created, third.updated, third.unchanged, third.skipped) == (0, 1, 2, 0)
    assert Product.objects.count() == 3
    red = Product.objects.get(sku="A-1")
    assert red.title == "Red tee, new cut" and red.images.count() == 1
    assert red.images.get().index_status == "indexed"

    # The "run again" button of the first job: same files, nothing new.
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            reverse("admin:embeddings_catalogimport_restart", args=[first.pk])
        )
    assert response.status_code == 302
    first.refresh_from_db()
    assert first.status == "done"
    assert (first.created, first.skipped) == (0, 3)
    assert Product.objects.count() == 3


def test_a_crash_mid_way_marks_the_job_failed_and_a_rerun_finishes_it(
    admin_client, django_capture_on_commit_callbacks, settings, monkeypatch
):
    from embeddings import bulk_import

    settings.IMPORT_BATCH_SIZE = 2
    real_create = bulk_import.catalog_services.product_create
    calls = {"n": 0}

    def create_then_crash(**kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("database went away")
        return real_create(**kwargs)

    monkeypatch.setattr(bulk_import.catalog_services, "product_create", create_then_crash)
    job = run_import(admin_client, django_capture_on_commit_callbacks, *catalog_files())
    assert job.status == "failed"
    assert "Stopped after 2 row(s): RuntimeError: database went away" in job.error
    assert (job.rows_done, job.created) == (2, 2)
    # The first batch committed (product and image each); nothing of the third row exists.
    assert set(Product.objects.values_list("sku", flat=True)) == {"A-1", "A-2"}
    assert ProductImage.objects.count() == 2
    html = admin_client.get(
        reverse("admin:embeddings_catalogimport_change", args=[job.pk])
    ).content.decode()
    assert "database went away" in html and "Run this import again" in html

    monkeypatch.setattr(bulk_import.catalog_services, "product_create", real_create)
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(reverse("admin:embeddings_catalogimport_restart", args=[job.pk]))
    job.refresh_from_db()
    assert job.status == "done" and job.error == ""
    assert (job.created, job.unchanged, job.skipped) == (1, 2, 3)
    assert Product.objects.count() == 3 and ProductImage.objects.count() == 3


def test_a_model_that_cannot_load_leaves_images_pending_with_a_note(
    admin_client, django_capture_on_commit_callbacks, settings
):
    from embeddings import runtime

    settings.EMBEDDINGS_PRETRAINED = "/nonexistent/model.pt"
    runtime.reset()
    job = run_import(admin_client, django_capture_on_commit_callbacks, *catalog_files())
    assert job.status == "done" and job.created == 3
    assert "were not embedded" in job.embed_error
    assert set(ProductImage.objects.values_list("index_status", flat=True)) == {"pending"}


def test_a_csv_without_zip_reads_images_under_the_import_root(
    admin_client, django_capture_on_commit_callbacks, settings, tmp_path
):
    root = tmp_path / "drop"
    (root / "tees").mkdir(parents=True)
    (root / "tees" / "red.png").write_bytes(distinct_image(0))
    (tmp_path / "outside.png").write_bytes(distinct_image(1))
    settings.IMPORT_ROOT = str(root)
    rows = [
        ["B-1", "Red tee", "tees/red.png", "10", "T-shirt"],
        ["B-2", "Outside", str(tmp_path / "outside.png"), "10", "T-shirt"],
        ["B-3", "Outside too", "../outside.png", "10", "T-shirt"],
    ]
    job = run_import(admin_client, django_capture_on_commit_callbacks, make_csv(rows), None)
    assert job.status == "done"
    assert job.created == 1 and [line for line, _ in job.errors] == [3, 4]
    assert all("outside the import folder" in reason for _, reason in job.errors)
    assert list(Product.objects.values_list("sku", flat=True)) == ["B-1"]


def test_import_root_defaults_to_media_imports(settings):
    settings.IMPORT_ROOT = ""
    assert import_jobs.import_root() == (Path(settings.MEDIA_ROOT) / "imports").resolve()


def test_import_files_are_never_served_at_the_media_url(
    admin_client, client, django_capture_on_commit_callbacks, settings
):
    job = run_import(admin_client, django_capture_on_commit_callbacks, *catalog_files())
    unpacked = f"{job.folder}/images/tees/red.png"
    assert (Path(settings.MEDIA_ROOT) / unpacked).is_file()
    for name in (job.csv_file.name, job.zip_file.name, unpacked):
        url = settings.MEDIA_URL + name
        assert client.get(url).status_code == 404
        assert admin_client.get(url).status_code == 404
    # The product's own copy of that image is served as usual.
    image = ProductImage.objects.get(product__sku="A-1")
    assert client.get(image.image.url).status_code == 200


def test_deleting_a_job_removes_its_files(
    admin_client, django_capture_on_commit_callbacks, settings
):
    job = run_import(admin_client, django_capture_on_commit_callbacks, *catalog_files())
    folder = Path(settings.MEDIA_ROOT) / job.folder
    assert folder.is_dir()
    response = admin_client.post(
        reverse("admin:embeddings_catalogimport_delete", args=[job.pk]), {"post": "yes"}
    )
    assert response.status_code == 302
    assert not folder.exists() and not CatalogImport.objects.exists()
    assert Product.objects.count() == 3  # the products stay


def test_a_running_job_page_reloads_and_shows_progress(admin_client):
    job = CatalogImport.objects.create(
        csv_name="c.csv", header=["a"], status="running", rows_total=200, rows_done=64
    )
    html = admin_client.get(
        reverse("admin:embeddings_catalogimport_change", args=[job.pk])
    ).content.decode()
    assert 'http-equiv="refresh"' in html
    assert "64 of 200 rows (32%)" in html
    assert "Run this import again" not in html  # not stale yet
    assert (
        admin_client.post(
            reverse("admin:embeddings_catalogimport_restart", args=[job.pk])
        ).status_code
        == 302
    )
    job.refresh_from_db()
    assert job.status == "running"


def test_admin_index_links_to_the_import(admin_client):
    html = admin_client.get(reverse("admin:index")).content.decode()
    assert f'href="{ADD_URL}"' in html
