"""The admin's index health page: its figures (shared with manage.py index_status), who may see
it and press its buttons, and that it still renders when the model or the index is broken."""

from __future__ import annotations

import json
import shutil
from datetime import timedelta
from io import StringIO

import pytest
from django.contrib.auth.models import Permission
from django.contrib.messages import get_messages
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from catalog import services as catalog_services
from catalog.models import ProductImage
from embeddings import runtime
from embeddings.health import describe_age, index_health, model_card_figures
from tests.conftest import distinct_image
from tests.factories import ProductFactory

pytestmark = pytest.mark.django_db

URL = reverse("admin:embeddings_index_health")


def add_images(n: int, *, start: int = 0) -> list[ProductImage]:
    return [
        catalog_services.product_image_add(
            product=ProductFactory(), file=SimpleUploadedFile(f"i{i}.png", distinct_image(i))
        )
        for i in range(start, start + n)
    ]


@pytest.fixture
def catalog(django_capture_on_commit_callbacks) -> dict[str, ProductImage]:
    """Five embedded images, then one made to look failed and one stuck pending for an hour."""
    with django_capture_on_commit_callbacks(execute=True):
        images = add_images(5)
    failed, stuck = images[0], images[1]
    ProductImage.objects.filter(id=failed.id).update(
        index_status="failed", index_error="not a readable image"
    )
    ProductImage.objects.filter(id=stuck.id).update(
        index_status="pending", queued_at=timezone.now() - timedelta(hours=1)
    )
    return {"failed": failed, "stuck": stuck}


def staff(django_user_model, *perms: str) -> Client:
    user = django_user_model.objects.create_user("clerk", password="pw-clerk-123", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=perms))
    client = Client()
    client.force_login(user)
    return client


def figure(html: str, name: str) -> str:
    start = html.index(f'data-figure="{name}">') + len(f'data-figure="{name}">')
    return html[start : html.index("</td>", start)].strip()


def messages_of(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


# --- what the page shows ----------------------------------------------------------------------


def test_page_shows_counts_lag_model_index_and_snapshot(admin_client, catalog, settings):
    settings.EMBEDDINGS_RECONCILE_GRACE = 300.0
    call_command("snapshot_index", "--force", stdout=StringIO())
    response = admin_client.get(URL)
    assert response.status_code == 200
    html = response.content.decode()
    assert (figure(html, "indexed"), figure(html, "pending"), figure(html, "failed")) == (
        "3",
        "1",
        "1",
    )
    assert figure(html, "beyond-grace") == "1"
    assert figure(html, "oldest-pending") in {"1 h ago", "1 h 1 min ago"}
    model_id = runtime.get_encoder().model_id
    assert figure(html, "model-id") == model_id
    live = runtime.get_live_index()
    assert figure(html, "index-size") == str(len(live)) == "5"
    assert figure(html, "index-kind") == live.params.kind
    assert figure(html, "seq") == f"{live.seq} / {live.seq}" and figure(html, "lag") == "0"
    assert live.base_path.name in figure(html, "snapshot")
    assert "this web process, pid" in html and "drift" in html.lower()
    assert "Re-index failed images" in html and "Re-queue pending images" in html
    assert "model-error" not in html


def test_page_and_command_show_the_same_figures(admin_client, catalog):
    page = admin_client.get(URL).context["health"]
    out = StringIO()
    call_command("index_status", "--json", stdout=out)
    command = json.loads(out.getvalue())
    for key in ("images", "model_id", "dim", "index_size", "index_kind", "index_seq", "db_seq"):
        assert page[key] == command[key], key


def test_figures_take_the_same_few_queries_however_many_images(
    catalog, django_capture_on_commit_callbacks
):
    index_health()  # opens the index once, as the first search of a process would
    with CaptureQueriesContext(connection) as few:
        small = index_health()
    with django_capture_on_commit_callbacks(execute=True):
        add_images(6, start=10)
    ProductImage.objects.filter(
        id__in=ProductImage.objects.order_by("-id")[:3].values("id")
    ).update(index_status="failed")
    runtime.get_live_index()  # catch up with the new images outside the measured call
    with CaptureQueriesContext(connection) as many:
        large = index_health()
    assert large["images"]["failed"] == small["images"]["failed"] + 3
    assert len(many) == len(few) <= 10


def test_model_card_figures_are_shown_with_their_targets(
    admin_client, tiny_checkpoint, tmp_path, settings
):
    checkpoint = tmp_path / "carded.pt"
    shutil.copy(tiny_checkpoint, checkpoint)
    shutil.copy(str(tiny_checkpoint) + ".json", str(checkpoint) + ".json")
    card = {
        "model_name": "carded",
        "parameters": 123456,
        "embedding_dim": 32,
        "validation_metrics": {"img2img_type_p@10": 0.11, "items": 50.0},
        "evaluation": {
            "products": 50,
            "metrics": {
                "model": {"img2img_type_p@10": 0.7761, "text2img_p@10": 0.476, "items": 50}
            },
        },
        "targets": {
            "img2img_type_p@10": {"target": 0.75, "measured": 0.7761, "met": True},
            "text2img_p@10": {"target": 0.5, "measured": 0.476, "met": False},
        },
    }
    checkpoint.with_suffix(".card.json").write_text(json.dumps(card))
    settings.EMBEDDINGS_PRETRAINED = str(checkpoint)
    runtime.reset()
    html = admin_client.get(URL).content.decode()
    assert "123456" in html and "Card: parameters" in html
    table = html[html.index('id="model-card-metrics"') :]
    assert "50 held-out products (evaluation)" in table
    assert "0.7761" in table and "0.75 (met)" in table and "0.5 (not met)" in table
    assert "0.11" not in table  # the evaluation wins over the in-training figures
    assert "items" not in table.split("</table>")[0]


def test_model_card_figures_fall_back_to_validation_metrics():
    figures = model_card_figures(
        {"embedding_dim": 8, "validation_metrics": {"title_recall@10": 0.891, "items": 1000.0}}
    )
    assert figures["source"] == "validation" and figures["held_out_products"] == 1000.0
    assert figures["metrics"] == [
        {"name": "title_recall@10", "value": 0.891, "target": None, "met": None}
    ]
    assert figures["facts"] == [{"key": "embedding_dim", "label": "embedding size", "value": 8}]
    assert model_card_figures({}) == {
        "facts": [],
        "metrics": [],
        "source": "validation",
        "held_out_products": None,
    }


def test_page_renders_the_error_when_the_model_cannot_load(
    admin_client, catalog, settings, tmp_path
):
    settings.EMBEDDINGS_PRETRAINED = str(tmp_path / "gone.pt")
    runtime.reset()
    response = admin_client.get(URL)
    assert response.status_code == 200
    html = response.content.decode()
    assert "The model could not be loaded" in html and "gone.pt" in html
    assert figure(html, "failed") == "1" and figure(html, "index-size") == "-"
    with pytest.raises(CommandError, match="Fix the model settings"):
        call_command("index_status", stdout=StringIO())
    # The re-queue button needs the model: it says so instead of failing.
    response = admin_client.post(URL, {"action": "requeue_pending"}, follow=True)
    assert response.status_code == 200
    assert any("Nothing queued" in m and "gone.pt" in m for m in messages_of(response))


def test_page_renders_the_error_when_the_index_cannot_open(
    admin_client, catalog, settings, tmp_path
):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the index folder should be")
    settings.EMBEDDINGS_INDEX_DIR = blocker
    runtime.reset()
    response = admin_client.get(URL)
    assert response.status_code == 200
    html = response.content.decode()
    assert "Index problem:" in html and "not-a-folder" in html
    assert figure(html, "indexed") == "3" and figure(html, "index-size") == "-"
    assert figure(html, "model-id") == runtime.get_encoder().model_id


def test_admin_index_links_to_the_page(admin_client):
    html = admin_client.get(reverse("admin:index")).content.decode()
    assert f'href="{URL}"' in html and "Index health" in html


# --- who may see and press ----------------------------------------------------------------------


def test_non_staff_are_sent_to_the_admin_login(client, django_user_model):
    user = django_user_model.objects.create_user("shopper", password="pw-shopper-123")
    client.force_login(user)
    for response in (client.get(URL), client.post(URL, {"action": "reindex_failed"})):
        assert response.status_code == 302
        assert reverse("admin:login") in response["Location"]


def test_staff_without_image_permissions_get_403(django_user_model):
    client = staff(django_user_model)
    assert client.get(URL).status_code == 403
    assert f'href="{URL}"' not in client.get(reverse("admin:index")).content.decode()


def test_view_only_staff_see_figures_but_no_buttons_and_cannot_post(
    django_user_model, catalog, django_capture_on_commit_callbacks
):
    client = staff(django_user_model, "view_productimage")
    response = client.get(URL)
    assert response.status_code == 200
    html = response.content.decode()
    assert figure(html, "failed") == "1"
    assert "Re-index failed images" not in html and 'name="action"' not in html
    assert f'href="{URL}"' in client.get(reverse("admin:index")).content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        assert client.post(URL, {"action": "reindex_failed"}).status_code == 403
    assert ProductImage.objects.get(id=catalog["failed"].id).index_status == "failed"


def test_a_post_without_the_csrf_token_is_refused(django_user_model, catalog):
    user = django_user_model.objects.create_superuser("boss", password="pw-boss-123")
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    assert client.post(URL, {"action": "reindex_failed"}).status_code == 403
    assert ProductImage.objects.get(id=catalog["failed"].id).index_status == "failed"


def test_an_unknown_action_is_a_clear_400(admin_client):
    response = admin_client.post(URL, {"action": "drop_everything"})
    assert response.status_code == 400
    assert "Unknown action 'drop_everything'" in response.content.decode()


# --- the buttons --------------------------------------------------------------------------------


def test_reindex_failed_queues_them_and_the_worker_clears_what_it_can_read(
    django_user_model, catalog, django_capture_on_commit_callbacks
):
    # A second failed image whose file really is unreadable: it fails again.
    with django_capture_on_commit_callbacks(execute=True):
        (broken,) = add_images(1, start=40)
    with open(broken.image.path, "wb") as fh:
        fh.write(b"not an image at all")
    ProductImage.objects.filter(id=broken.id).update(index_status="failed", index_error="x")
    client = staff(django_user_model, "view_productimage", "change_productimage")
    with django_capture_on_commit_callbacks(execute=True) as published:
        response = client.post(URL, {"action": "reindex_failed"})
    assert response.status_code == 302 and response["Location"] == URL
    assert len(published) == 2
    assert ProductImage.objects.get(id=catalog["failed"].id).index_status == "indexed"
    broken.refresh_from_db()
    assert broken.index_status == "failed" and broken.index_error
    page = client.get(URL)
    assert messages_of(page) == ["Queued 2 images that had failed for re-indexing."]
    assert figure(page.content.decode(), "failed") == "1"


def test_reindex_failed_works_in_batches_and_says_what_is_left(
    admin_client, catalog, settings, django_capture_on_commit_callbacks
):
    settings.EMBEDDINGS_RECONCILE_BATCH = 1
    ProductImage.objects.filter(id=catalog["stuck"].id).update(index_status="failed")
    with django_capture_on_commit_callbacks(execute=False) as published:
        response = admin_client.post(URL, {"action": "reindex_failed"}, follow=True)
    assert len(published) == 1
    assert messages_of(response) == [
        "Queued 1 image that had failed for re-indexing. 1 more failed: press the button again."
    ]
    ProductImage.objects.update(index_status="indexed")
    response = admin_client.post(URL, {"action": "reindex_failed"}, follow=True)
    assert messages_of(response) == ["No failed images to re-index."]


def test_requeue_pending_runs_the_reconcile_without_grace(
    admin_client, catalog, settings, django_capture_on_commit_callbacks
):
    settings.EMBEDDINGS_RECONCILE_GRACE = 86400.0  # the periodic run would not touch it yet
    just_queued = ProductImage.objects.filter(index_status="indexed").first()
    ProductImage.objects.filter(id=just_queued.id).update(
        index_status="pending", queued_at=timezone.now()
    )
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(URL, {"action": "requeue_pending"})
    response = admin_client.get(URL)
    assert messages_of(response) == [
        "Re-queued 2 images for embedding (2 pending, 0 without a vector, 0 with an "
        "out-of-date vector)."
    ]
    statuses = dict(ProductImage.objects.values_list("id", "index_status"))
    assert statuses[catalog["stuck"].id] == statuses[just_queued.id] == "indexed"
    assert statuses[catalog["failed"].id] == "failed"  # failed images are the other button's
    html = response.content.decode()
    assert figure(html, "pending") == "0" and figure(html, "oldest-pending") == "nothing pending"
    response = admin_client.post(URL, {"action": "requeue_pending"}, follow=True)
    assert messages_of(response)[0].startswith("Nothing to re-queue")


def test_describe_age_reads_like_a_person_writes():
    assert [describe_age(s) for s in (None, 4.4, 95, 3600, 3725, 200000)] == [
        "-",
        "4 s",
        "1 min 35 s",
        "1 h",
        "1 h 2 min",
        "2 d 7 h",
    ]
