"""Bulk import jobs started from the admin (issue 11, item 5): checking the uploaded CSV and ZIP,
unpacking the ZIP safely, and running the import in a worker with its progress saved on the job.

The rows are written by ``bulk_import.catalog_import``, the service behind ``manage.py
import_catalog``: idempotent by SKU (a second run updates or leaves rows alone, never duplicates),
one savepoint per row (a row imports fully, product and image, or is listed as an error with its
CSV line), one commit per batch. A job that crashes is marked failed with the reason and the
counts of the batches that had committed; running it again picks up from there without
duplicates.
"""

from __future__ import annotations

import csv
import io
import logging
import shutil
import stat
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path, PurePosixPath

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone

from . import services
from .bulk_import import ImportColumns, ImportReport, catalog_import
from .encoder import ModelLoadError
from .models import CatalogImport

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
# The product fields a CSV column can fill; the first three are required.
FIELDS = ("sku", "title", "path", "price", "category", "description")
REQUIRED_FIELDS = ("sku", "title", "path")
# Lower-cased column names that suggest each field (the mapping form's defaults).
_GUESSES = {
    "sku": ("sku", "product_id", "productid", "id", "article", "article_number", "code", "ref"),
    "title": ("title", "name", "product_name", "productdisplayname", "product"),
    "path": ("path", "image", "image_path", "file", "filename", "photo", "picture", "img"),
    "price": ("price", "amount", "cost", "unit_price"),
    "category": ("category", "articletype", "type", "category_name", "department"),
    "description": ("description", "desc", "details", "body"),
}
# A job "running" whose progress has not moved for this long lost its worker (killed, machine
# gone): staff may start it again.
STALE_AFTER = timedelta(minutes=15)


def import_root() -> Path:
    """Where image paths of a CSV imported without a ZIP are looked up (IMPORT_ROOT)."""
    return Path(settings.IMPORT_ROOT or Path(settings.MEDIA_ROOT) / "imports").resolve()


def csv_header_read(file) -> list[str]:
    """The column names of an uploaded CSV (its first line). Raises ValidationError when the
    file is not UTF-8 text in CSV form with at least one named column and one data row."""
    file.seek(0)
    head = file.read(256 * 1024)
    file.seek(0)
    if b"\x00" in head:
        raise ValidationError("This is not a CSV file: it holds binary data.")
    try:
        text = head.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        # A multi-byte character cut at the end of the sample is not an error.
        if exc.start < len(head) - 4:
            raise ValidationError(
                "This CSV is not UTF-8 text: save it as 'CSV UTF-8' and upload it again."
            ) from None
        text = head[: exc.start].decode("utf-8-sig")
    reader = csv.reader(io.StringIO(text))
    header = [c.strip() for c in next(reader, [])]
    if not any(header):
        raise ValidationError("This CSV is empty: its first line must name the columns.")
    if next(reader, None) is None:
        raise ValidationError("This CSV has a header but no rows to import.")
    named = [c for c in header if c]
    if len(set(named)) != len(named):
        dupes = sorted({c for c in named if named.count(c) > 1})
        raise ValidationError(f"This CSV names a column twice: {', '.join(dupes)}.")
    return named


def columns_guess(header: Iterable[str]) -> dict[str, object]:
    """The mapping form's defaults: for each field, the first column whose name suggests it."""
    by_name = {c.lower().replace(" ", "_"): c for c in header}
    guess: dict[str, object] = {}
    for name in FIELDS:
        hit = next((by_name[g] for g in _GUESSES[name] if g in by_name), "")
        guess[name] = (
            [hit] if name == "description" and hit else ([] if name == "description" else hit)
        )
    return guess


@dataclass(frozen=True)
class ZipMember:
    info: zipfile.ZipInfo
    path: PurePosixPath  # relative, inside the ZIP root


def zip_members_check(file) -> list[ZipMember]:
    """The image files of an uploaded ZIP, each checked: a relative path without ``..``, no
    links, an image extension, at most MAX_UPLOAD_BYTES; at most IMPORT_ZIP_MAX_FILES files and
    IMPORT_ZIP_MAX_BYTES unpacked. Folders and other files (``__MACOSX/``, ``.DS_Store``, a
    README) are passed over. Raises ValidationError naming the offending entry."""
    try:
        file.seek(0)
        archive = zipfile.ZipFile(file)
    except (zipfile.BadZipFile, OSError, ValueError):
        raise ValidationError("This is not a ZIP file (or it is damaged).") from None
    members: list[ZipMember] = []
    total = 0
    with archive:
        infos = archive.infolist()
        if len(infos) > settings.IMPORT_ZIP_MAX_FILES:
            raise ValidationError(
                f"The ZIP holds {len(infos)} entries; at most {settings.IMPORT_ZIP_MAX_FILES} "
                "are accepted (IMPORT_ZIP_MAX_FILES). Split it into several imports."
            )
        for info in infos:
            name = info.filename.replace("\\", "/")
            parts = PurePosixPath(name).parts
            if name.startswith("/") or (parts and ":" in parts[0]) or ".." in parts:
                raise ValidationError(
                    f"The ZIP entry {info.filename!r} points outside the ZIP (an absolute path "
                    "or '..'): refusing the whole file."
                )
            if info.is_dir():
                continue
            if stat.S_ISLNK(info.external_attr >> 16):
                raise ValidationError(f"The ZIP entry {info.filename!r} is a link: refused.")
            path = PurePosixPath(*parts)
            if parts[0] == "__MACOSX" or path.name.startswith("."):
                continue
            if path.suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            if info.file_size > settings.MAX_UPLOAD_BYTES:
                raise ValidationError(
                    f"The image {info.filename!r} in the ZIP is {info.file_size} bytes; at most "
                    f"{settings.MAX_UPLOAD_BYTES} are accepted (MAX_UPLOAD_BYTES)."
                )
            total += info.file_size
            if total > settings.IMPORT_ZIP_MAX_BYTES:
                raise ValidationError(
                    f"The ZIP's images unpack to more than {settings.IMPORT_ZIP_MAX_BYTES} bytes "
                    "(IMPORT_ZIP_MAX_BYTES). Split it into several imports."
                )
            members.append(ZipMember(info=info, path=path))
    file.seek(0)
    if not members:
        raise ValidationError(
            f"The ZIP holds no image files ({', '.join(sorted(IMAGE_EXTENSIONS))})."
        )
    return members


def zip_extract(*, zip_path: Path, dest: Path) -> int:
    """Unpacks the checked image files of ``zip_path`` into ``dest`` (emptied first). The sizes
    are enforced while writing, not trusted from the ZIP's directory. Returns the file count."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    root = dest.resolve()
    with zip_path.open("rb") as fh:
        members = zip_members_check(fh)
        with zipfile.ZipFile(fh) as archive:
            budget = settings.IMPORT_ZIP_MAX_BYTES
            for member in members:
                target = (root / member.path).resolve()
                if not target.is_relative_to(root):  # checked above; never write outside
                    raise ValidationError(f"The ZIP entry {member.info.filename!r} escapes.")
                target.parent.mkdir(parents=True, exist_ok=True)
                limit = min(settings.MAX_UPLOAD_BYTES, budget)
                written = 0
                with archive.open(member.info) as src, target.open("wb") as out:
                    while chunk := src.read(1024 * 1024):
                        written += len(chunk)
                        if written > limit:
                            raise ValidationError(
                                f"The ZIP entry {member.info.filename!r} unpacks to more bytes "
                                "than its directory says: refused."
                            )
                        out.write(chunk)
                budget -= written
    return len(members)


def _csv_rows_count(path: Path) -> int:
    with path.open(newline="", encoding="utf-8-sig") as fh:
        return sum(1 for _ in csv.DictReader(fh))


def _columns(mapping: dict) -> ImportColumns:
    return ImportColumns(
        path=mapping["path"],
        sku=mapping["sku"],
        title=mapping["title"],
        # An unmapped optional field names no column: the importer then leaves it empty.
        category=mapping.get("category") or "\x00no category column",
        price=mapping.get("price") or "\x00no price column",
        description=tuple(mapping.get("description") or ()),
    )


def catalog_import_queue(*, job: CatalogImport, columns: dict) -> None:
    """Saves the column mapping, marks the job queued and enqueues its task once committed.
    Also starts a finished, failed or stale job again (same files: updates, no duplicates)."""
    from .tasks import catalog_import_task

    with transaction.atomic():
        CatalogImport.objects.filter(pk=job.pk).update(
            columns=columns,
            status=CatalogImport.Status.QUEUED,
            error="",
            rows_done=0,
            created=0,
            updated=0,
            unchanged=0,
            skipped=0,
            errors=[],
            image_ids=[],
            embedded={},
            embed_error="",
            started_at=None,
            finished_at=None,
            embedded_at=None,
            updated_at=timezone.now(),
        )
        transaction.on_commit(lambda: catalog_import_task.delay(job.pk))
    job.refresh_from_db()


def catalog_import_can_restart(job: CatalogImport) -> bool:
    if job.status in (CatalogImport.Status.DONE, CatalogImport.Status.FAILED):
        return True
    if job.status in (CatalogImport.Status.QUEUED, CatalogImport.Status.RUNNING):
        return timezone.now() - job.updated_at > STALE_AFTER
    return False


def _save_progress(job_id: int, rows_done: int, report: ImportReport) -> None:
    CatalogImport.objects.filter(pk=job_id).update(
        rows_done=rows_done,
        created=report.created,
        updated=report.updated,
        unchanged=report.unchanged,
        skipped=report.skipped,
        errors=[list(e) for e in report.errors],
        image_ids=list(report.image_ids),
        updated_at=timezone.now(),
    )


def catalog_import_run(*, job_id: int) -> str:
    """Runs a queued job (the Celery task's body). Safe to run twice: only the run that moves
    the job from queued to running does anything. Returns the job's final status.

    Rows first (the job is ``done`` once every row is imported or listed as an error), then the
    new or replaced images are embedded in model batches; a model that cannot load leaves them
    pending for the worker's reconcile, noted on the job."""
    claimed = CatalogImport.objects.filter(pk=job_id, status=CatalogImport.Status.QUEUED).update(
        status=CatalogImport.Status.RUNNING, started_at=timezone.now(), updated_at=timezone.now()
    )
    if not claimed:
        return "skipped"
    job = CatalogImport.objects.get(pk=job_id)
    batch = settings.IMPORT_BATCH_SIZE
    progress = {"rows": 0}
    try:
        csv_path = Path(default_storage.path(job.csv_file.name))
        if job.zip_file:
            images_root = Path(default_storage.path(job.folder)) / "images"
            zip_extract(zip_path=Path(default_storage.path(job.zip_file.name)), dest=images_root)
        else:
            images_root = import_root()
            images_root.mkdir(parents=True, exist_ok=True)
        total = _csv_rows_count(csv_path)
        CatalogImport.objects.filter(pk=job_id).update(rows_total=total)

        def on_batch(rows_done: int, report: ImportReport) -> None:
            progress["rows"] = rows_done
            _save_progress(job_id, rows_done, report)

        report = catalog_import(
            csv_path=csv_path,
            images_root=images_root,
            columns=_columns(job.columns),
            embed=False,
            batch_size=batch,
            progress=False,
            on_batch=on_batch,
            confine_images=True,
        )
    except Exception as exc:  # noqa: BLE001 - any crash must end in a failed job, not "running"
        log.exception("catalog import #%s failed", job_id)
        reason = "; ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)
        CatalogImport.objects.filter(pk=job_id).update(
            status=CatalogImport.Status.FAILED,
            error=(
                f"Stopped after {progress['rows']} row(s): {type(exc).__name__}: {reason}. The "
                "rows counted below were imported; run the import again to finish it (rows "
                "already imported are updated or left alone, never duplicated)."
            ),
            finished_at=timezone.now(),
            updated_at=timezone.now(),
        )
        return CatalogImport.Status.FAILED
    _save_progress(job_id, report.rows, report)
    CatalogImport.objects.filter(pk=job_id).update(
        status=CatalogImport.Status.DONE, finished_at=timezone.now()
    )
    embed_error = ""
    embedded: dict[str, int] = {}
    try:
        if report.image_ids:
            embedded = services.images_embed_batched(
                image_ids=report.image_ids, batch_size=batch, progress=False
            )
    except ModelLoadError as exc:
        embed_error = (
            f"The images were not embedded: {exc}. They stay pending; the workers' reconcile "
            "(or manage.py reembed --only-missing) embeds them once the model loads."
        )
    except Exception as exc:  # noqa: BLE001 - the rows are in; say why the vectors are not
        log.exception("catalog import #%s: embedding failed", job_id)
        embed_error = f"Embedding stopped: {type(exc).__name__}: {exc}. Pending images are retried by the reconcile."
    CatalogImport.objects.filter(pk=job_id).update(
        embedded=embedded, embed_error=embed_error, embedded_at=timezone.now()
    )
    return CatalogImport.Status.DONE


def catalog_import_image_counts(job: CatalogImport) -> dict[str, int]:
    """Index status of the images this job created or replaced (those still existing)."""
    from django.db.models import Count

    from catalog.models import ProductImage

    counts = {s.value: 0 for s in ProductImage.IndexStatus}
    if job.image_ids:
        rows = (
            ProductImage.objects.filter(id__in=job.image_ids)
            .values("index_status")
            .annotate(n=Count("id"))
        )
        counts.update({r["index_status"]: r["n"] for r in rows})
    return counts


def catalog_import_files_delete(job: CatalogImport) -> None:
    """Removes the job's folder (uploads and unpacked images) from MEDIA_ROOT/imports/jobs."""
    if job.folder and job.folder.startswith("imports/jobs/"):
        shutil.rmtree(Path(default_storage.path(job.folder)), ignore_errors=True)
