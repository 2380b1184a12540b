"""manage.py reembed: compute the configured model's vectors (model change, repair), then rebuild."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from embeddings import runtime, services
from embeddings.bulk_import import images_missing_embedding
from embeddings.encoder import ModelLoadError


class Command(BaseCommand):
    help = (
        "Embeds product images with the configured model in this process (in batches), then "
        "rebuilds the index. Use after changing EMBEDDINGS_MODEL / EMBEDDINGS_PRETRAINED, or with "
        "--only-missing after a bulk import made with --no-embed or after failures."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--only-missing",
            action="store_true",
            help="Only images with no vector of this model or not marked indexed.",
        )
        parser.add_argument(
            "--batch-size", type=int, default=64, help="Images per model call (default 64)."
        )
        parser.add_argument(
            "--no-rebuild", action="store_true", help="Skip the index rebuild afterwards."
        )

    def handle(
        self, *args, only_missing=False, batch_size=64, no_rebuild=False, verbosity=1, **options
    ):
        progress = verbosity > 0
        try:
            encoder = runtime.get_encoder()
            self.stdout.write(f"Model: {encoder.model_id}")
            if only_missing:
                ids = images_missing_embedding(model_id=encoder.model_id)
                self.stdout.write(f"{len(ids)} image(s) need a vector.")
                counts = services.images_embed_batched(
                    image_ids=ids, batch_size=batch_size, progress=progress
                )
            else:
                counts = services.images_reembed_all(
                    batch_size=batch_size, force=True, progress=progress
                )
        except ModelLoadError as exc:
            raise CommandError(f"{exc}\nFix the model settings, then run reembed again.") from exc
        self.stdout.write(
            "Embedded: {indexed} indexed, {skipped} unchanged, {failed} failed, {missing} gone.".format(
                **counts
            )
        )
        if counts["failed"]:
            self.stdout.write(
                self.style.WARNING(
                    f"{counts['failed']} image(s) failed; their reason is on the image (admin, or "
                    "`manage.py index_status --failed`). Replace those files and run reembed --only-missing."
                )
            )
        if not no_rebuild:
            live = services.index_rebuild(progress=progress)
            self.stdout.write(
                self.style.SUCCESS(f"Index rebuilt: {len(live)} vectors, sequence {live.seq}.")
            )
