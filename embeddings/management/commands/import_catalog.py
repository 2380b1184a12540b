"""manage.py import_catalog: bulk import products from a CSV and a folder of images."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from catalog.thumbnails import images_thumbnails_make
from embeddings.bulk_import import ImportColumns, catalog_import
from embeddings.encoder import ModelLoadError


class Command(BaseCommand):
    help = (
        "Imports products from a CSV (one row per product, an image path per row) and embeds the "
        "new or changed images in batches. Idempotent by SKU: running it again updates products, "
        "never duplicates them. Bad rows are reported with their line number and skipped."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--csv", required=True, type=Path, help="The catalog CSV (e.g. manifest.csv)."
        )
        parser.add_argument(
            "--images-root",
            type=Path,
            default=None,
            help="Folder the image paths are relative to (default: the CSV's folder).",
        )
        parser.add_argument("--limit", type=int, default=None, help="Import only the first N rows.")
        parser.add_argument("--path-column", default="path")
        parser.add_argument("--sku-column", default="product_id")
        parser.add_argument("--title-column", default="title")
        parser.add_argument("--category-column", default="articleType")
        parser.add_argument(
            "--price-column", default="price", help="Ignored when the CSV has no such column."
        )
        parser.add_argument(
            "--description-columns",
            nargs="*",
            default=[],
            help="Column(s) that make the description; several become 'column: value' lines.",
        )
        parser.add_argument(
            "--attribute-columns",
            nargs="*",
            default=[],
            metavar="NAME=COLUMN",
            help="Product attributes from columns, e.g. colour=baseColour type=articleType "
            "usage=usage (values are stored lower-case). A `gender` column is used when present.",
        )
        parser.add_argument(
            "--batch-size", type=int, default=64, help="Rows per commit and images per model call."
        )
        parser.add_argument(
            "--no-embed",
            action="store_true",
            help="Only create rows (images stay pending); embed later with `manage.py reembed --only-missing`.",
        )

    def handle(self, *args, **o):
        columns = ImportColumns(
            path=o["path_column"],
            sku=o["sku_column"],
            title=o["title_column"],
            category=o["category_column"],
            price=o["price_column"],
            description=tuple(o["description_columns"]),
            attributes=_attribute_columns(o["attribute_columns"]),
        )
        if o["limit"] is not None and o["limit"] < 0:
            raise CommandError("--limit must be zero or more.")
        progress = o["verbosity"] > 0
        try:
            report = catalog_import(
                csv_path=o["csv"],
                images_root=o["images_root"],
                columns=columns,
                limit=o["limit"],
                embed=not o["no_embed"],
                batch_size=max(1, o["batch_size"]),
                progress=progress,
            )
        except (FileNotFoundError, ValueError) as exc:
            raise CommandError(str(exc)) from exc
        except ModelLoadError as exc:
            raise CommandError(
                f"{exc}\nThe products were imported; fix the model settings and run "
                "`manage.py reembed --only-missing`."
            ) from exc
        for line, reason in report.errors[:50]:
            self.stderr.write(f"line {line}: skipped: {reason}")
        if len(report.errors) > 50:
            self.stderr.write(f"... and {len(report.errors) - 50} more skipped rows")
        self.stdout.write(
            self.style.SUCCESS(
                f"Imported {report.rows} rows: {report.created} created, {report.updated} updated, "
                f"{report.unchanged} unchanged, {report.skipped} skipped."
            )
        )
        if report.embedded:
            self.stdout.write(
                "Embedded: {indexed} indexed, {skipped} unchanged, {failed} failed.".format(
                    **report.embedded
                )
            )
        elif report.image_ids:
            self.stdout.write(
                f"{len(report.image_ids)} image(s) are pending: run `manage.py reembed --only-missing` "
                "(or let the Celery workers pick them up)."
            )
        if not o["no_embed"]:
            # Embedding made the thumbnails of new images; these are older ones without any.
            made = sum(t.status == "made" for t in images_thumbnails_make(missing_only=True))
            if made:
                self.stdout.write(f"Thumbnails: made for {made} earlier image(s).")
        if report.errors:
            self.stdout.write(
                self.style.WARNING("Fix the skipped rows in the CSV and run the import again.")
            )


def _attribute_columns(pairs: list[str]) -> tuple[tuple[str, str], ...]:
    out = []
    for pair in pairs:
        name, sep, column = pair.partition("=")
        name, column = name.strip().lower(), column.strip()
        if not sep or not name or not column:
            raise CommandError(
                f"--attribute-columns {pair!r}: write NAME=COLUMN, e.g. colour=baseColour."
            )
        out.append((name, column))
    return tuple(out)
