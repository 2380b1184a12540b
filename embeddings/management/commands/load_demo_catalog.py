"""manage.py load_demo_catalog: a small drawn catalog (default), or a folder with manifest.csv."""

from __future__ import annotations

import os
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from catalog.thumbnails import images_thumbnails_make
from embeddings.bulk_import import ImportColumns, catalog_import
from embeddings.demo import DEMO_ATTRIBUTE_COLUMNS, demo_catalog_write
from embeddings.encoder import ModelLoadError


class Command(BaseCommand):
    help = (
        "Loads a demo catalog. By default draws one (t-shirts, hoodies and tote bags with prints) "
        "under DATA_DIR/demo-catalog and imports it. With --source (or env DEMO_CATALOG) imports "
        "a folder holding manifest.csv and images/ instead (e.g. ../shared/datasets/myntra-224). "
        "Idempotent: a second run changes nothing."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--source",
            type=Path,
            default=None,
            help="A folder with manifest.csv (Myntra layout). Default: env DEMO_CATALOG, else generate.",
        )
        parser.add_argument(
            "--count",
            type=int,
            default=None,
            help="Products to generate (default 96) or import (default all).",
        )

    def handle(self, *args, source=None, count=None, verbosity=1, **options):
        source = source or (
            Path(os.environ["DEMO_CATALOG"]) if os.environ.get("DEMO_CATALOG") else None
        )
        progress = verbosity > 0
        if source is not None:
            csv_path = source / "manifest.csv"
            if not csv_path.is_file():
                raise CommandError(
                    f"{csv_path} not found. --source (or DEMO_CATALOG) must be a folder holding "
                    "manifest.csv and the images it names."
                )
            columns = ImportColumns(
                description=("baseColour", "usage"),
                attributes=_present(
                    csv_path,
                    (("colour", "baseColour"), ("type", "articleType"), ("usage", "usage")),
                ),
            )
            self.stdout.write(f"Importing demo catalog from {source}")
        else:
            if count is not None and not 1 <= count <= 300:
                raise CommandError("--count must be between 1 and 300 for the generated catalog.")
            folder = Path(settings.DATA_DIR) / "demo-catalog"
            csv_path = demo_catalog_write(folder, count=count or 96, progress=progress)
            columns = ImportColumns(
                category="articleType",
                description=("description",),
                attributes=DEMO_ATTRIBUTE_COLUMNS,
            )
            count = None  # the manifest holds exactly what was asked for
            self.stdout.write(f"Generated demo catalog in {folder}")
        try:
            report = catalog_import(
                csv_path=csv_path, columns=columns, limit=count, progress=progress
            )
        except ModelLoadError as exc:
            raise CommandError(
                f"{exc}\nThe products were imported; fix the model settings and run "
                "`manage.py reembed --only-missing`."
            ) from exc
        for line, reason in report.errors[:20]:
            self.stderr.write(f"line {line}: skipped: {reason}")
        self.stdout.write(
            self.style.SUCCESS(
                f"Demo catalog: {report.created} created, {report.updated} updated, "
                f"{report.unchanged} unchanged, {report.skipped} skipped."
            )
        )
        if report.embedded:
            self.stdout.write(
                "Embedded: {indexed} indexed, {failed} failed.".format(**report.embedded)
            )
        # Embedding made the thumbnails of new images; a demo loaded before thumbnails existed
        # gets them here (images with current ones are skipped without reading their files).
        made = sum(t.status == "made" for t in images_thumbnails_make(missing_only=True))
        if made:
            self.stdout.write(f"Thumbnails: made for {made} earlier image(s).")


def _present(csv_path: Path, mapping: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    """The attribute columns of ``mapping`` that this manifest has (the shared sets differ)."""
    import csv

    with csv_path.open(newline="", encoding="utf-8-sig") as fh:
        header = next(csv.reader(fh), [])
    return tuple((name, column) for name, column in mapping if column in header)
