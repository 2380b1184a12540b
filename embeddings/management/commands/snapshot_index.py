"""manage.py snapshot_index: write this model's index snapshot (what celery beat does periodically)."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from embeddings import runtime, services
from embeddings.encoder import ModelLoadError


class Command(BaseCommand):
    help = (
        "Brings the index up to date with the database and writes its snapshot atomically, with the "
        "change sequence it covers, so new serving processes start from it plus a small delta."
    )

    def handle(self, *args, **options):
        try:
            path = services.index_snapshot_write()
        except ModelLoadError as exc:
            raise CommandError(
                f"{exc}\nFix the model settings, then run snapshot_index again."
            ) from exc
        live = runtime.get_live_index(sync=False)
        self.stdout.write(
            self.style.SUCCESS(
                f"Snapshot written: {path} ({len(live)} vectors, sequence {live.seq})"
            )
        )
