"""manage.py snapshot_index: compact this model's index into a new shared base when due (what
celery beat runs periodically)."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from embeddings import runtime, services
from embeddings.encoder import ModelLoadError


class Command(BaseCommand):
    help = (
        "Brings the index up to date with the database and, when enough changed since the current "
        "base (EMBEDDINGS_COMPACT_CHANGES / EMBEDDINGS_COMPACT_AGE) or with --force, builds a new "
        "base from the stored vectors that every serving process then memory-maps."
    )

    def add_arguments(self, parser):
        parser.add_argument("--force", action="store_true", help="Build a new base now.")

    def handle(self, *args, force=False, **options):
        try:
            path = services.index_snapshot_write(force=force)
        except ModelLoadError as exc:
            raise CommandError(
                f"{exc}\nFix the model settings, then run snapshot_index again."
            ) from exc
        live = runtime.get_live_index(sync=False)
        if path is None:
            self.stdout.write(
                f"Base {live.base_path} is current enough ({live.delta_size()} changed images "
                f"since it); nothing written. Use --force to write one anyway."
            )
            return
        self.stdout.write(
            self.style.SUCCESS(f"Base written: {path} ({len(live)} vectors, sequence {live.seq})")
        )
