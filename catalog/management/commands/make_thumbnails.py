"""manage.py make_thumbnails [--missing] [--force]: thumbnails of existing product images."""

from __future__ import annotations

from collections import Counter

from django.core.management.base import BaseCommand, CommandError

from catalog.models import ProductImage
from catalog.thumbnails import images_thumbnails_make


class Command(BaseCommand):
    help = (
        "Makes the WebP thumbnails (THUMBNAIL_WIDTHS) of every product image whose recorded "
        "ones are missing or out of date. New and replaced images get theirs from the embedding "
        "worker; run this for images from before, or after changing THUMBNAIL_WIDTHS. "
        "Idempotent: a second run reads nothing and writes nothing."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--missing",
            action="store_true",
            help="Only images whose row records no current thumbnails (no file is read for the "
            "others). Default: every image's file is read and its thumbnail files checked.",
        )
        parser.add_argument(
            "--force",
            action="store_true",
            help="Re-encode every thumbnail (after changing THUMBNAIL_QUALITY).",
        )

    def handle(self, *args, missing=False, force=False, verbosity=1, **options):
        from tqdm import tqdm

        if missing and force:
            raise CommandError("--missing and --force exclude each other.")
        counts: Counter[str] = Counter()
        failed: list[str] = []
        with tqdm(
            total=ProductImage.objects.count(),
            desc="Thumbnails",
            unit="img",
            disable=verbosity < 1,
        ) as bar:
            for outcome in images_thumbnails_make(missing_only=missing, force=force):
                counts[outcome.status] += 1
                if outcome.status == "failed":
                    failed.append(f"image {outcome.image_id}: {outcome.error}")
                bar.update(1)
        for line in failed[:20]:
            self.stderr.write(line)
        self.stdout.write(
            self.style.SUCCESS(
                f"Thumbnails: {counts['made']} made, {counts['unchanged']} unchanged, "
                f"{counts['failed']} failed, {counts['missing']} missing."
            )
        )
