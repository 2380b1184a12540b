"""Bulk import of a catalog (a CSV + a folder of images) and batched embedding.

Why this lives in ``embeddings`` and not in ``catalog``: saving a ProductImage normally queues
one embed task per image (``embeddings.signals``). For thousands of rows that means thousands of
single-image model calls. The importer instead creates the rows with that per-image hook turned
off (in this process only), then embeds them in model batches through
``services.images_embed`` - the same service the task calls, so the stored vectors, statuses and
index changes are exactly what the task would have written. The catalog app stays unaware of
embeddings (dependencies point one way); the rows themselves are written by catalog services.

Idempotent by SKU: a second run updates changed fields and replaces an image whose bytes changed;
unchanged rows are left alone (no new image, no re-embedding). Bad rows are reported with their
CSV line number and skipped; they never abort the import.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path

from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.db import transaction
from django.db.models.signals import post_save
from PIL import Image, UnidentifiedImageError

from catalog import services as catalog_services
from catalog.attributes import attributes_normalise
from catalog.models import Category, Product, ProductImage

from . import services, signals
from .models import ImageEmbedding

_hook_lock = threading.Lock()


@contextlib.contextmanager
def per_image_embedding_paused() -> Iterator[None]:
    """Stops ProductImage saves from queueing one embed task each, for the ``with`` block.

    Deletes still record their index removal. The caller must embed the rows it created (or
    leave them ``pending`` for ``manage.py reembed --only-missing``).
    """
    with _hook_lock:
        post_save.disconnect(sender=ProductImage, dispatch_uid="embeddings.image_saved")
        try:
            yield
        finally:
            post_save.connect(
                signals.image_saved, sender=ProductImage, dispatch_uid="embeddings.image_saved"
            )


@dataclass(frozen=True)
class ImportColumns:
    path: str = "path"
    sku: str = "product_id"
    title: str = "title"
    category: str = "articleType"
    price: str = "price"
    description: tuple[str, ...] = ()
    # (attribute name, CSV column): e.g. (("colour", "baseColour"), ("type", "articleType")).
    # A column named ``gender`` becomes the gender attribute unless mapped otherwise.
    attributes: tuple[tuple[str, str], ...] = ()

    def attribute_columns(self, header: list[str]) -> tuple[tuple[str, str], ...]:
        """The mapping applied to a CSV with this ``header``."""
        mapped = tuple(self.attributes)
        if "gender" in header and all(name != "gender" for name, _ in mapped):
            mapped += (("gender", "gender"),)
        return mapped


@dataclass
class ImportReport:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)  # (CSV line, reason)
    image_ids: list[int] = field(default_factory=list)  # images created or replaced
    embedded: dict[str, int] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return self.created + self.updated + self.unchanged + self.skipped


class RowError(ValueError):
    """A CSV row that cannot be imported; the message says what is wrong with it."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_rows(csv_path: Path, limit: int | None) -> Iterator[tuple[int, dict[str, str]]]:
    with csv_path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        n = 0
        for row in reader:
            if limit is not None and n >= limit:
                return
            n += 1
            yield reader.line_num, row


def _check_columns(csv_path: Path, columns: ImportColumns) -> list[str]:
    with csv_path.open(newline="", encoding="utf-8-sig") as fh:
        header = next(csv.reader(fh), [])
    required = [columns.path, columns.sku, columns.title]
    missing = [c for c in required if c not in header]
    if missing:
        raise ValueError(
            f"{csv_path} has no column(s) {missing}; its columns are {header}. "
            "Name the right ones with --path-column / --sku-column / --title-column."
        )
    missing = [column for _, column in columns.attributes if column not in header]
    if missing:
        raise ValueError(
            f"{csv_path} has no attribute column(s) {missing}; its columns are {header}. "
            "Fix --attribute-columns (name=column)."
        )
    return header


def _parse_price(raw: str) -> Decimal | None:
    raw = (raw or "").strip().replace(",", ".").lstrip("$€£")
    if not raw:
        return None
    try:
        price = Decimal(raw)
    except InvalidOperation:
        raise RowError(f"price {raw!r} is not a number") from None
    if price < 0 or not price.is_finite():
        raise RowError(f"price {raw!r} must be zero or more")
    return price.quantize(Decimal("0.01"))


def _check_image(data: bytes, name: str) -> None:
    import io

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise RowError(f"image {name!r} is not a readable image ({exc})") from None


def _import_row(
    row: dict[str, str],
    *,
    images_root: Path,
    columns: ImportColumns,
    categories: dict[str, Category],
    report: ImportReport,
    confine_images: bool = False,
    attribute_columns: tuple[tuple[str, str], ...] = (),
) -> bool:
    """Creates or updates one product; True when anything changed."""
    sku = (row.get(columns.sku) or "").strip()
    title = (row.get(columns.title) or "").strip()
    rel = (row.get(columns.path) or "").strip()
    if not sku:
        raise RowError(f"empty SKU (column {columns.sku!r})")
    if not title:
        raise RowError(f"empty title (column {columns.title!r})")
    if not rel:
        raise RowError(f"empty image path (column {columns.path!r})")
    image_path = (images_root / rel).resolve()
    if confine_images and not image_path.is_relative_to(images_root.resolve()):
        raise RowError(f"image path {rel!r} points outside the import folder")
    if not image_path.is_file():
        raise RowError(f"image file {str(image_path)!r} not found")
    data = image_path.read_bytes()
    _check_image(data, rel)
    digest = _sha256(data)
    price = _parse_price(row.get(columns.price, "")) if columns.price in row else None
    values = [(name, (row.get(name) or "").strip()) for name in columns.description]
    if len(values) == 1:
        description = values[0][1]
    else:  # several columns: one "column: value" line each
        description = "\n".join(f"{name}: {value}" for name, value in values if value)
    category_name = (row.get(columns.category) or "").strip()
    category = None
    if category_name:
        key = category_name.lower()
        if key not in categories:
            categories[key] = catalog_services.category_get_or_create(name=category_name)
        category = categories[key]

    # The import owns the attributes it maps (an empty cell removes one); others (set by staff)
    # are kept.
    mapped = {name: (row.get(column) or "") for name, column in attribute_columns}
    product = Product.objects.filter(sku=sku).first()
    attributes = dict(product.attributes) if product is not None else {}
    attributes.update(mapped)
    fields = {
        "title": title,
        "description": description,
        "price": price,
        "category": category,
        "attributes": attributes_normalise(attributes),
    }
    if product is None:
        product = catalog_services.product_create(sku=sku, **fields)
        report.created += 1
        changed = True
    else:
        changed = any(getattr(product, k) != v for k, v in fields.items())
        if changed:
            catalog_services.product_update(product=product, **fields)

    # The importer owns the product's first image (position 0); staff-added images stay.
    current = product.images.filter(position=0).first()
    if current is None or current.content_hash != digest:
        if current is not None:
            catalog_services.product_image_delete(image=current)
        image = catalog_services.product_image_add(
            product=product,
            file=ContentFile(data, name=image_path.name),
            position=0,
            alt_text=title[:255],
        )
        # The hash of what we stored, so a re-run recognises the same file even before embedding.
        ProductImage.objects.filter(id=image.id).update(content_hash=digest)
        report.image_ids.append(image.id)
        changed = True
    return changed


def catalog_import(
    *,
    csv_path: Path,
    images_root: Path | None = None,
    columns: ImportColumns = ImportColumns(),
    limit: int | None = None,
    embed: bool = True,
    batch_size: int = 64,
    progress: bool = True,
    on_error: Callable[[int, str], None] | None = None,
    on_batch: Callable[[int, ImportReport], None] | None = None,
    confine_images: bool = False,
) -> ImportReport:
    """Imports products from ``csv_path`` (images relative to ``images_root``, default: the CSV's
    folder) and, with ``embed``, embeds the new or changed images in batches of ``batch_size``.

    Each row commits on its own savepoint: a bad row is recorded in ``report.errors`` as
    ``(line, reason)`` and skipped. With ``embed=False`` the images stay ``pending``.

    ``on_batch(rows_done, report)`` is called after each batch of rows has committed (progress
    of an admin import). With ``confine_images`` an image path that resolves outside
    ``images_root`` (``..``, an absolute path, a symlink out) is a row error.
    """
    from tqdm import tqdm

    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise FileNotFoundError(
            f"CSV file {csv_path} not found; pass the path of the catalog's manifest."
        )
    images_root = Path(images_root) if images_root else csv_path.parent
    if not images_root.is_dir():
        raise FileNotFoundError(f"Images folder {images_root} not found; pass --images-root.")
    header = _check_columns(csv_path, columns)
    attribute_columns = columns.attribute_columns(header)

    report = ImportReport()
    categories: dict[str, Category] = {}
    rows = list(_read_rows(csv_path, limit))
    with (
        per_image_embedding_paused(),
        tqdm(total=len(rows), desc="Importing products", unit="row", disable=not progress) as bar,
    ):
        for start in range(0, len(rows), batch_size):
            with transaction.atomic():  # one commit per batch: far fewer fsyncs on SQLite
                for line, row in rows[start : start + batch_size]:
                    existed = report.created
                    try:
                        with transaction.atomic():
                            changed = _import_row(
                                row,
                                images_root=images_root,
                                columns=columns,
                                categories=categories,
                                report=report,
                                confine_images=confine_images,
                                attribute_columns=attribute_columns,
                            )
                    except (RowError, ValidationError, OSError) as exc:
                        reason = (
                            "; ".join(exc.messages)
                            if isinstance(exc, ValidationError)
                            else str(exc)
                        )
                        report.skipped += 1
                        report.errors.append((line, reason))
                        if on_error:
                            on_error(line, reason)
                        continue
                    if report.created == existed:
                        if changed:
                            report.updated += 1
                        else:
                            report.unchanged += 1
            bar.update(len(rows[start : start + batch_size]))
            if on_batch:
                on_batch(min(start + batch_size, len(rows)), report)
    if embed and report.image_ids:
        report.embedded = services.images_embed_batched(
            image_ids=report.image_ids, batch_size=batch_size, progress=progress
        )
    return report


def images_missing_embedding(*, model_id: str) -> list[int]:
    """Ids of images with no stored vector of ``model_id``, or not marked indexed."""
    have = ImageEmbedding.objects.filter(model_id=model_id).values("image_id")
    missing = ProductImage.objects.exclude(id__in=have)
    not_indexed = ProductImage.objects.exclude(index_status=ProductImage.IndexStatus.INDEXED)
    return sorted(
        set(missing.values_list("id", flat=True)) | set(not_indexed.values_list("id", flat=True))
    )
