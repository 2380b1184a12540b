"""manage.py rebuild_index: rebuild this model's FAISS index from the vectors in the database."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from embeddings import services
from embeddings.encoder import ModelLoadError
from embeddings.engine.kinds import KINDS


class Command(BaseCommand):
    help = (
        "Rebuilds the search index of the configured model from the vectors stored in the database "
        "and writes it as the machine's new shared base. Safe to run at any time: serving processes "
        "switch to it at their next sync (within EMBEDDINGS_SYNC_INTERVAL)."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--kind",
            choices=[*KINDS, "auto"],
            default=None,
            help="flat (exact), ivf (approximate, trained now), ivfpq (compressed, approximate) "
            "or auto (by catalog size). "
            "Default: EMBEDDINGS_INDEX_KIND.",
        )

    def handle(self, *args, kind=None, verbosity=1, **options):
        try:
            live = services.index_rebuild(kind=kind, progress=verbosity > 0)
        except ModelLoadError as exc:
            raise CommandError(
                f"{exc}\nFix the model settings, then run rebuild_index again."
            ) from exc
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            self.style.SUCCESS(
                f"Index rebuilt: {len(live)} vectors, kind {live.params.kind}, sequence {live.seq}, "
                f"model {live.model_id}\nSnapshot: {live.base_path}"
            )
        )
