"""Thumbnails: made once per image content (by the embedding worker or make_thumbnails), served
with the originals' privacy rules, rendered into grids with srcset and sizes, never generated in a
request."""

from __future__ import annotations

import io
import re
from decimal import Decimal

import pytest
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.db import connection
from django.template import Context, Template
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from PIL import Image

from catalog import services
from catalog.models import ProductImage
from catalog.thumbnails import (
    THUMBNAIL_PATH,
    image_thumbnails,
    image_thumbnails_make,
    thumbnail_sizes,
)
from embeddings import services as embedding_services
from tests.conftest import distinct_image, make_image

pytestmark = pytest.mark.django_db


def product_with_image(*, active: bool = True, data: bytes | None = None, name="shirt.png"):
    upload = SimpleUploadedFile(name, data or make_image(size=(800, 600)))
    product = services.product_create(title="Shirt", is_active=active, images=[upload])
    return product.images.get()


def stored(image: ProductImage) -> list[str]:
    """This image's thumbnail files in storage, sorted."""
    storage = image.image.storage
    folder = f"products/{image.product_id}/thumbs"
    if not storage.exists(folder):
        return []
    return sorted(
        f"{folder}/{f}" for f in storage.listdir(folder)[1] if f.startswith(f"{image.id}-")
    )


@pytest.fixture
def staff_client(client, django_user_model):
    client.force_login(
        django_user_model.objects.create_user("staff", "s@x.io", "pw", is_staff=True)
    )
    return client


# --- sizes and naming ---------------------------------------------------------------------------


def test_sizes_keep_the_aspect_ratio_and_never_upscale():
    assert thumbnail_sizes(width=800, height=600, widths=(160, 320, 640)) == [
        (160, 120),
        (320, 240),
        (640, 480),
    ]
    # A 224 px original: one copy at 160 and one at its own width, no 320/640 upscales.
    assert thumbnail_sizes(width=224, height=224, widths=(160, 320, 640)) == [
        (160, 160),
        (224, 224),
    ]
    assert thumbnail_sizes(width=100, height=3000, widths=(160,)) == [(100, 3000)]


# --- making them --------------------------------------------------------------------------------


def test_make_writes_one_webp_per_width_and_records_them_on_the_row():
    image = product_with_image()
    outcome = image_thumbnails_make(image=image)
    assert outcome.status == "made"
    image.refresh_from_db()
    assert (image.width, image.height) == (800, 600)
    assert image.thumbnail_widths == "160,320,640"
    assert image.thumbnail_hash == image.compute_content_hash()
    thumbs = image_thumbnails(image)
    assert [(t.width, t.height) for t in thumbs] == [(160, 120), (320, 240), (640, 480)]
    assert stored(image) == sorted(t.name for t in thumbs)
    for thumb in thumbs:
        assert THUMBNAIL_PATH.fullmatch(thumb.name)
        assert f"-{image.thumbnail_hash[:8]}-{thumb.width}.webp" in thumb.name
        with image.image.storage.open(thumb.name) as fh:
            pic = Image.open(fh)
            assert pic.format == "WEBP" and pic.size == (thumb.width, thumb.height)
        # Small: a 640 px WebP of a flat picture is a fraction of the PNG upload.
        assert image.image.storage.size(thumb.name) < image.image.size


def test_a_second_run_writes_nothing():
    image = product_with_image()
    image_thumbnails_make(image=image)
    storage = image.image.storage
    times = {name: storage.get_modified_time(name) for name in stored(image)}
    image.refresh_from_db()
    assert image_thumbnails_make(image=image).status == "unchanged"
    assert {name: storage.get_modified_time(name) for name in stored(image)} == times


def test_a_deleted_thumbnail_file_is_made_again():
    image = product_with_image()
    image_thumbnails_make(image=image)
    image.refresh_from_db()
    lost = image_thumbnails(image)[0].name
    image.image.storage.delete(lost)
    assert image_thumbnails_make(image=image).status == "made"
    assert image.image.storage.exists(lost)


def test_exif_rotated_photo_is_recorded_and_thumbnailed_upright():
    # A camera JPEG stored 400 x 200 with orientation 6 (turn 90 degrees): upright it is 200 x 400.
    pic = Image.new("RGB", (400, 200), (200, 30, 30))
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    pic.save(buffer, format="JPEG", exif=exif)
    image = product_with_image(data=buffer.getvalue(), name="camera.jpg")
    image_thumbnails_make(image=image)
    image.refresh_from_db()
    assert (image.width, image.height) == (200, 400)
    smallest = image_thumbnails(image)[0]
    with image.image.storage.open(smallest.name) as fh:
        assert Image.open(fh).size == (160, 320) == (smallest.width, smallest.height)


def test_transparency_is_kept():
    # A cut-out product on a transparent background (common for PNG product shots).
    pic = Image.new("RGBA", (300, 300), (0, 0, 0, 0))
    pic.paste((200, 30, 30, 255), (100, 100, 200, 200))
    buffer = io.BytesIO()
    pic.save(buffer, format="PNG")
    image = product_with_image(data=buffer.getvalue())
    image_thumbnails_make(image=image)
    image.refresh_from_db()
    with image.image.storage.open(image_thumbnails(image)[0].name) as fh:
        thumb = Image.open(fh)
        assert thumb.mode == "RGBA"
        assert thumb.getpixel((0, 0))[3] == 0 and thumb.getpixel((80, 80))[3] == 255


def test_a_replaced_file_gets_new_thumbnails_and_the_old_ones_are_removed():
    image = product_with_image(data=distinct_image(1))
    image_thumbnails_make(image=image)
    image.refresh_from_db()
    old = stored(image)
    image.image.save("other.png", ContentFile(make_image((10, 200, 10), size=(500, 500))))
    image.refresh_from_db()
    assert image_thumbnails_make(image=image).status == "made"
    image.refresh_from_db()
    new = stored(image)
    assert new == sorted(t.name for t in image_thumbnails(image))
    assert not set(old) & set(new)  # different content, different names; the old are gone
    assert image.width == 500


def test_a_file_pillow_cannot_read_is_failed_and_writes_nothing():
    image = product_with_image()
    image.image.storage.delete(image.image.name)
    image.image.storage.save(image.image.name, ContentFile(b"not an image at all"))
    outcome = image_thumbnails_make(image=image)
    assert outcome.status == "failed" and outcome.error
    image.refresh_from_db()
    assert image.thumbnail_hash == "" and stored(image) == []


def test_a_file_replaced_while_thumbnailing_leaves_no_files_behind():
    image = product_with_image()
    stale = ProductImage.objects.get(id=image.id)  # the worker's copy, read before the change
    ProductImage.objects.filter(id=image.id).update(image="products/elsewhere.png")
    assert image_thumbnails_make(image=stale).status == "missing"
    assert stored(image) == []


def test_the_embedding_worker_makes_the_thumbnails():
    image = product_with_image(data=make_image(size=(224, 224)))
    assert embedding_services.image_embed(image_id=image.id).status == "indexed"
    image.refresh_from_db()
    assert image.thumbnail_widths == "160,224"
    assert len(stored(image)) == 2
    # Re-running the embedding (a redelivered task) leaves them alone.
    times = [image.image.storage.get_modified_time(n) for n in stored(image)]
    assert embedding_services.image_embed(image_id=image.id).status == "skipped"
    assert [image.image.storage.get_modified_time(n) for n in stored(image)] == times


def test_deleting_an_image_removes_its_thumbnails(django_capture_on_commit_callbacks):
    image = product_with_image()
    image_thumbnails_make(image=image)
    assert stored(image)
    with django_capture_on_commit_callbacks(execute=True):
        services.product_image_delete(image=image)
    assert stored(image) == []


# --- the command --------------------------------------------------------------------------------


def test_make_thumbnails_missing_fills_in_and_a_second_run_makes_none(settings):
    images = [product_with_image(data=distinct_image(n)) for n in range(3)]
    out = io.StringIO()
    call_command("make_thumbnails", "--missing", stdout=out, verbosity=0)
    assert "3 made, 0 unchanged" in out.getvalue()
    # 64 px pictures: one thumbnail each, at their own width (never upscaled).
    assert all([n.rsplit("-", 1)[1] for n in stored(img)] == ["64.webp"] for img in images)
    out = io.StringIO()
    call_command("make_thumbnails", "--missing", stdout=out, verbosity=0)
    assert "0 made, 3 unchanged" in out.getvalue()


def test_changing_the_widths_remakes_them_and_drops_the_old_widths(settings):
    image = product_with_image()
    call_command("make_thumbnails", stdout=io.StringIO(), verbosity=0)
    settings.THUMBNAIL_WIDTHS = (200, 400)
    out = io.StringIO()
    call_command("make_thumbnails", "--missing", stdout=out, verbosity=0)
    assert "1 made" in out.getvalue()
    image.refresh_from_db()
    assert image.thumbnail_widths == "200,400"
    assert [n.rsplit("-", 1)[1] for n in stored(image)] == ["200.webp", "400.webp"]


# --- serving ------------------------------------------------------------------------------------


def made(image: ProductImage) -> ProductImage:
    image_thumbnails_make(image=image)
    image.refresh_from_db()
    return image


def test_an_active_products_thumbnail_is_public_webp(client):
    thumb = image_thumbnails(made(product_with_image()))[0]
    response = client.get(thumb.url)
    assert response.status_code == 200
    assert response["Content-Type"] == "image/webp"
    assert response["Cache-Control"].startswith("public")
    assert Image.open(io.BytesIO(b"".join(response.streaming_content))).size == (160, 120)


def test_an_inactive_products_thumbnail_is_404_to_shoppers_and_200_to_staff(
    client, django_user_model
):
    thumb = image_thumbnails(made(product_with_image(active=False)))[0]
    response = client.get(thumb.url)
    assert response.status_code == 404 and response["Cache-Control"] == "no-store"
    client.force_login(django_user_model.objects.create_user("staff", is_staff=True))
    response = client.get(thumb.url)
    assert response.status_code == 200 and response["Cache-Control"] == "private, no-store"


def test_deactivating_a_product_hides_its_thumbnails(client):
    image = made(product_with_image())
    url = image_thumbnails(image)[0].url
    assert client.get(url).status_code == 200
    services.product_update(product=image.product, is_active=False)
    assert client.get(url).status_code == 404


def test_a_thumbnail_under_another_product_or_of_old_content_is_404(staff_client):
    image = made(product_with_image())
    other = product_with_image()
    name = image_thumbnails(image)[0].name
    storage = image.image.storage
    # The same file copied under another product's folder: the row is not that product's.
    moved = name.replace(f"products/{image.product_id}/", f"products/{other.product_id}/")
    storage.save(moved, storage.open(name))
    assert staff_client.get(storage.url(moved)).status_code == 404
    # A leftover of an earlier content (the hash no longer recorded on the row).
    stale = re.sub(r"-[0-9a-f]{8}-", "-00000000-", name)
    storage.save(stale, storage.open(name))
    assert staff_client.get(storage.url(stale)).status_code == 404


# --- pages --------------------------------------------------------------------------------------


def render(source: str, **context) -> str:
    return Template("{% load catalog_tags %}" + source).render(Context(context))


def test_img_tag_gives_srcset_sizes_and_the_size_of_its_src():
    image = made(product_with_image())
    html = render("{% product_img image alt=title %}", image=image, title='Red "<shirt>"')
    thumbs = image_thumbnails(image)
    srcset = ", ".join(f"{t.url} {t.width}w" for t in thumbs)
    assert f'srcset="{srcset}"' in html
    assert f'src="{thumbs[-1].url}"' in html
    assert 'width="640" height="480"' in html
    assert 'sizes="(max-width: 760px) 50vw, 240px"' in html
    assert 'loading="lazy"' in html and 'decoding="async"' in html
    assert 'alt="Red &quot;&lt;shirt&gt;&quot;"' in html
    assert image.image.url not in html


def test_img_tag_falls_back_to_the_original_until_thumbnails_exist():
    image = product_with_image()
    html = render("{% product_img image %}", image=image)
    assert f'src="{image.image.url}"' in html
    assert "srcset" not in html and "sizes" not in html


def test_img_tag_max_width_limits_the_set():
    image = made(product_with_image())
    html = render('{% product_img image max_width=160 sizes="72px" %}', image=image)
    assert "320w" not in html and "160w" in html and 'width="160"' in html


def test_result_grid_shows_thumbnails_with_no_extra_query(client):
    images = [
        product_with_image(data=make_image(color, size=(400, 400)))
        for color in [(200, 0, 0), (0, 200, 0), (0, 0, 200)]
    ]
    client.get("/?q=shirt")  # the first search of a process loads the index
    with CaptureQueriesContext(connection) as before:
        html = client.get("/?q=shirt").content.decode()
    for image in images:
        assert image.image.url in html  # no thumbnails yet: the originals
        made(image)
    with CaptureQueriesContext(connection) as after:
        html = client.get("/?q=shirt").content.decode()
    assert len(after.captured_queries) == len(before.captured_queries)
    for image in images:
        assert image.image.url not in html
        assert f"{image_thumbnails(image)[0].url} 160w" in html


def test_product_page_gallery_uses_the_medium_thumbnails(client):
    upload = [
        SimpleUploadedFile(f"p{n}.png", make_image(size=(1200, 1200), accent=(n * 40, 0, 0)))
        for n in range(2)
    ]
    product = services.product_create(title="Tee", price=Decimal("9"), images=upload)
    images = [made(image) for image in product.images.all()]
    html = client.get(reverse("catalog:product-detail", args=[product.pk])).content.decode()
    main = re.search(r"<img [^>]*data-gallery-main[^>]*>", html).group(0)
    assert f'src="{image_thumbnails(images[0])[-1].url}"' in main  # 640, not the 1200 upload
    assert 'loading="eager"' in main and 'width="640"' in main
    for image in images:
        # The strip shows the 160 px thumbnails; the link keeps the full photo for no-JS users
        # and names the medium ones for the script.
        assert f'src="{image_thumbnails(image)[0].url}"' in html
        assert f'data-main-src="{image_thumbnails(image)[-1].url}"' in html
        assert f'href="{image.image.url}"' in html
        assert f'<img src="{image.image.url}"' not in html


# --- API ----------------------------------------------------------------------------------------


def test_api_image_json_lists_thumbnails_by_width(client):
    image = product_with_image()
    body = client.get(f"/api/v1/products/{image.product_id}/").json()
    assert body["images"][0]["thumbnails"] == {}
    assert body["images"][0]["width"] is None
    made(image)
    (data,) = client.get(f"/api/v1/products/{image.product_id}/").json()["images"]
    assert (data["width"], data["height"]) == (800, 600)
    assert data["thumbnails"] == {
        str(t.width): f"http://testserver{t.url}" for t in image_thumbnails(image)
    }
    assert set(data["thumbnails"]) == {"160", "320", "640"}


def test_load_demo_catalog_gives_new_and_earlier_images_thumbnails(settings, tmp_path):
    settings.DATA_DIR = tmp_path / "data"
    earlier = product_with_image()  # from before thumbnails: none recorded
    call_command("load_demo_catalog", "--count", "2", stdout=io.StringIO(), verbosity=0)
    assert ProductImage.objects.count() == 3
    for image in ProductImage.objects.all():
        assert image.thumbnail_hash and image.thumbnail_hash == image.compute_content_hash()
        assert stored(image) == sorted(t.name for t in image_thumbnails(image))
    assert stored(earlier)


def test_flat_graphics_are_stored_lossless_when_that_is_smaller_and_photos_lossy():
    # Four flat colours at the thumbnail's own size: lossless WebP is exact and smaller.
    flat = product_with_image(data=make_image(size=(160, 160), shape="stripes"))
    made(flat)
    with flat.image.storage.open(image_thumbnails(flat)[0].name) as fh:
        thumb = Image.open(fh)
        thumb.load()
    original = Image.open(io.BytesIO(make_image(size=(160, 160), shape="stripes")))
    assert thumb.convert("RGB").tobytes() == original.convert("RGB").tobytes()
    # Noise (like a photo, thousands of colours): lossy, so not pixel-exact.
    noise = Image.effect_noise((160, 160), 60).convert("RGB")
    buffer = io.BytesIO()
    noise.save(buffer, format="PNG")
    photo = made(product_with_image(data=buffer.getvalue()))
    with photo.image.storage.open(image_thumbnails(photo)[0].name) as fh:
        thumb = Image.open(fh)
        thumb.load()
    assert thumb.convert("RGB").tobytes() != noise.tobytes()
