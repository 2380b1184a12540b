"""Thumbnails of product images: made once per image content, read by pages without any I/O.

Each image gets a WebP file per width in settings.THUMBNAIL_WIDTHS (capped at the original's
width, never upscaled), stored beside the original as
``products/<product id>/thumbs/<image id>-<hash8>-<width>.webp``, where ``hash8`` starts the
sha256 of the original's bytes. The product id in the path lets the media view check the owner
exactly as it does for originals; the hash makes a replaced file get new names (no stale cache
entry can show the old picture), and the old ones are removed once the new ones are recorded.

What exists is recorded on the ProductImage row (``thumbnail_hash``, ``thumbnail_widths``,
``width``, ``height``), so rendering a grid reads the rows it already loaded: no storage access
and no extra query. The embedding worker calls :func:`image_thumbnails_make` with the bytes it
has already read; ``manage.py make_thumbnails`` covers images from before (or a changed
setting). Nothing is ever generated in a request.
"""

from __future__ import annotations

import hashlib
import io
import logging
import mimetypes
import posixpath
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from PIL import Image, ImageOps, UnidentifiedImageError

from .models import ProductImage

log = logging.getLogger(__name__)
# The media view sends a file's type by its name; not every system's mime.types knows WebP.
mimetypes.add_type("image/webp", ".webp")

THUMBS_DIR = "thumbs"
EXTENSION = "webp"
# At most this many colours counts as a flat graphic (see _encode).
FLAT_COLOURS = 256
# EXIF orientations that turn the picture by 90 degrees (width and height swap).
_TRANSPOSED = {5, 6, 7, 8}
# What the media view accepts as a thumbnail path (see catalog.views._image_visibility).
THUMBNAIL_PATH = re.compile(
    rf"products/(?P<product_id>\d+)/{THUMBS_DIR}/"
    rf"(?P<image_id>\d+)-(?P<hash8>[0-9a-f]{{8}})-(?P<width>\d+)\.{EXTENSION}"
)


@dataclass(frozen=True)
class Thumbnail:
    width: int
    height: int
    name: str  # the storage name

    @property
    def url(self) -> str:
        return default_storage.url(self.name)


def thumbnail_dir(*, product_id: int) -> str:
    return f"products/{product_id}/{THUMBS_DIR}"


def thumbnail_name(*, product_id: int, image_id: int, content_hash: str, width: int) -> str:
    return (
        f"{thumbnail_dir(product_id=product_id)}/{image_id}-{content_hash[:8]}-{width}.{EXTENSION}"
    )


def thumbnail_sizes(*, width: int, height: int, widths: Iterable[int] | None = None):
    """The (width, height) of each thumbnail of a ``width`` x ``height`` original, smallest first:
    one per configured width, capped at the original's width (so a small original gets one at its
    own size rather than upscaled copies). Heights keep the aspect ratio, rounded, at least 1."""
    widths = settings.THUMBNAIL_WIDTHS if widths is None else widths
    capped = sorted({min(int(w), width) for w in widths})
    return [(w, max(1, round(w * height / width))) for w in capped]


def _recorded_widths(image: ProductImage) -> list[int]:
    return [int(w) for w in image.thumbnail_widths.split(",") if w]


def image_thumbnails(image: ProductImage) -> list[Thumbnail]:
    """The thumbnails recorded for ``image``, smallest first; empty when none are made yet (the
    page then shows the original). Reads the row's fields only."""
    if not (image.thumbnail_hash and image.thumbnail_widths and image.width and image.height):
        return []
    return [
        Thumbnail(
            width=w,
            height=h,
            name=thumbnail_name(
                product_id=image.product_id,
                image_id=image.id,
                content_hash=image.thumbnail_hash,
                width=w,
            ),
        )
        for w, h in thumbnail_sizes(
            width=image.width, height=image.height, widths=_recorded_widths(image)
        )
    ]


def thumbnails_missing(image: ProductImage, *, content_hash: str | None = None) -> bool:
    """True when the row records no thumbnails, or ones of other widths than the setting asks
    for, or of other content than ``content_hash`` (default: the hash the row records for its
    file, when it has one). Reads the row's fields only."""
    if not image.thumbnail_hash or not image.width or not image.height:
        return True
    content_hash = content_hash or image.content_hash
    if content_hash and content_hash != image.thumbnail_hash:
        return True
    wanted = [w for w, _ in thumbnail_sizes(width=image.width, height=image.height)]
    return _recorded_widths(image) != wanted


@dataclass(frozen=True)
class ThumbnailOutcome:
    image_id: int
    # "made"; "unchanged" (already made for this content and widths); "failed" (not an image
    # Pillow can read: the embedding records why); "missing" (row or file gone, or the row got
    # another file while this ran: that file's own run makes its thumbnails)
    status: str
    error: str = ""


def _upright_size(img: Image.Image) -> tuple[int, int]:
    width, height = img.size
    orientation = img.getexif().get(0x0112)
    return (height, width) if orientation in _TRANSPOSED else (width, height)


def _encode(img: Image.Image, size: tuple[int, int]) -> bytes:
    # reducing_gap: a fast integer pre-shrink then LANCZOS; visually the same as a plain LANCZOS.
    resized = img if img.size == size else img.resize(size, Image.Resampling.LANCZOS, None, 3.0)
    buffer = io.BytesIO()
    resized.save(buffer, format="WEBP", quality=settings.THUMBNAIL_QUALITY, method=4)
    lossy = buffer.getvalue()
    # A flat graphic (a drawing, a logo, a product cut out on plain colour) compresses far better
    # losslessly, and lossy WebP blurs its edges: with few colours, try that and keep the smaller.
    # Photos have thousands of colours after resizing; they skip the (slower) lossless encode.
    if resized.getcolors(maxcolors=FLAT_COLOURS) is None:
        return lossy
    buffer = io.BytesIO()
    resized.save(buffer, format="WEBP", lossless=True, quality=80, method=4)
    return min(lossy, buffer.getvalue(), key=len)


def _render(data: bytes, sizes_for) -> tuple[tuple[int, int], dict[int, tuple[int, bytes]]]:
    """Decodes ``data`` once and encodes every thumbnail: ((width, height) of the upright
    original, {width: (height, webp bytes)})."""
    with Image.open(io.BytesIO(data)) as img:
        width, height = _upright_size(img)
        if width * height > settings.MAX_IMAGE_PIXELS:
            raise Image.DecompressionBombError(
                f"{width} x {height} pixels is more than MAX_IMAGE_PIXELS"
            )
        sizes = sizes_for(width, height)
        largest = max(w for w, _ in sizes)
        # A JPEG decodes at 1/2, 1/4 or 1/8 scale when that is still at least the largest
        # thumbnail (in both directions, so the EXIF rotation below cannot undercut it).
        img.draft("RGB", (largest, largest))
        upright = ImageOps.exif_transpose(img)
        has_alpha = upright.mode in {"RGBA", "LA"} or (
            upright.mode == "P" and "transparency" in upright.info
        )
        upright = upright.convert("RGBA" if has_alpha else "RGB")
        return (width, height), {w: (h, _encode(upright, (w, h))) for w, h in sizes}


def _remove_others(storage, *, product_id: int, image_id: int, keep: set[str]) -> int:
    """Deletes this image's thumbnail files not in ``keep`` (those of an earlier file, or of
    widths no longer configured). Returns how many were removed."""
    folder = thumbnail_dir(product_id=product_id)
    try:
        _, files = storage.listdir(folder)
    except FileNotFoundError:
        return 0
    removed = 0
    for filename in files:
        name = posixpath.join(folder, filename)
        if filename.startswith(f"{image_id}-") and name not in keep:
            storage.delete(name)
            removed += 1
    return removed


def image_thumbnails_make(
    *, image: ProductImage, data: bytes | None = None, force: bool = False
) -> ThumbnailOutcome:
    """Makes and records the thumbnails of ``image``'s current file. ``data`` is the file's bytes
    when the caller has read them already (the embedding worker), else they are read here.

    Safe to run twice and concurrently: an image whose row already records thumbnails of this
    content at the configured widths, with the files present, is left alone unless ``force``.
    The row is updated only while it still names the file that was read; afterwards this image's
    other thumbnail files (an earlier content's) are deleted. A file Pillow cannot read is
    "failed" (logged, not raised); storage errors propagate so a task retries.
    """
    storage = image.image.storage
    source = image.image.name
    if data is None:
        try:
            with image.image.open("rb") as fh:
                data = fh.read()
        except FileNotFoundError:
            return ThumbnailOutcome(image.id, "missing")
    digest = hashlib.sha256(data).hexdigest()

    def name(width: int) -> str:
        return thumbnail_name(
            product_id=image.product_id, image_id=image.id, content_hash=digest, width=width
        )

    if (
        not force
        and not thumbnails_missing(image, content_hash=digest)
        and all(storage.exists(t.name) for t in image_thumbnails(image))
    ):
        return ThumbnailOutcome(image.id, "unchanged")
    try:
        (width, height), rendered = _render(data, lambda w, h: thumbnail_sizes(width=w, height=h))
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as exc:
        # A corrupt or hostile file: the embedding marks the image failed with its own reason.
        log.warning("No thumbnails for image %s (%s): %s", image.id, source, exc)
        return ThumbnailOutcome(image.id, "failed", str(exc))
    written: list[str] = []
    for w, (_, webp) in rendered.items():
        target = name(w)
        if storage.exists(target):
            if not force:  # same content hash and width: the same picture
                continue
            storage.delete(target)
        saved = storage.save(target, ContentFile(webp))
        if saved != target:  # another run wrote it meanwhile: keep theirs
            storage.delete(saved)
        else:
            written.append(saved)
    updated = ProductImage.objects.filter(id=image.id, image=source).update(
        width=width,
        height=height,
        thumbnail_hash=digest,
        thumbnail_widths=",".join(str(w) for w in sorted(rendered)),
    )
    if not updated:
        # Deleted, or given another file while we worked: what we wrote belongs to nothing.
        for target in written:
            storage.delete(target)
        return ThumbnailOutcome(image.id, "missing")
    _remove_others(
        storage,
        product_id=image.product_id,
        image_id=image.id,
        keep={name(w) for w in rendered},
    )
    image.width, image.height, image.thumbnail_hash = width, height, digest
    image.thumbnail_widths = ",".join(str(w) for w in sorted(rendered))
    return ThumbnailOutcome(image.id, "made")


def image_thumbnails_delete(*, product_id: int, image_id: int) -> int:
    """Deletes every thumbnail file of an image (after its row is deleted)."""
    return _remove_others(default_storage, product_id=product_id, image_id=image_id, keep=set())


def images_thumbnails_make(
    *, image_ids: Iterable[int] | None = None, missing_only: bool = False, force: bool = False
) -> Iterator[ThumbnailOutcome]:
    """Makes thumbnails for the given images (default: all), one at a time, yielding each
    outcome (for progress). ``missing_only`` skips rows that already record current ones
    without reading their files."""
    rows = ProductImage.objects.order_by("id")
    if image_ids is not None:
        rows = rows.filter(id__in=list(image_ids))
    for image in rows.iterator(chunk_size=500):
        if missing_only and not force and not thumbnails_missing(image):
            yield ThumbnailOutcome(image.id, "unchanged")
            continue
        yield image_thumbnails_make(image=image, force=force)
