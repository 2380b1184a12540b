"""manage.py reconcile_index: queue images whose embedding was lost or is out of date (celery beat
runs the same every EMBEDDINGS_RECONCILE_INTERVAL seconds)."""

from __future__ import annotations

import json
from datetime import timedelta

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from embeddings import reconcile, runtime
from embeddings.encoder import ModelLoadError


class Command(BaseCommand):
    help = (
        "Queues for embedding the images pending longer than the grace period (their task was "
        "lost: broker down at save, worker killed) and the images with no vector, or an "
        "out-of-date one, of the configured model. Failed images are left alone. Safe to run any "
        "time: queued images are skipped by the workers when their content already has a vector."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--grace",
            type=float,
            default=None,
            help="seconds an image may stay pending before it is queued again "
            "(default: EMBEDDINGS_RECONCILE_GRACE)",
        )
        parser.add_argument(
            "--limit",
            type=int,
            default=None,
            help="images queued per batch (default: EMBEDDINGS_RECONCILE_BATCH)",
        )
        parser.add_argument(
            "--all", action="store_true", help="repeat batches until nothing is left"
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="only count what would be queued"
        )
        parser.add_argument(
            "--json", dest="as_json", action="store_true", help="print one JSON object"
        )

    def handle(
        self, *args, grace=None, limit=None, all=False, dry_run=False, as_json=False, **options
    ):
        if grace is not None and grace < 0:
            raise CommandError(f"--grace must be 0 or more seconds, got {grace:g}.")
        if limit is not None and limit < 1:
            raise CommandError(f"--limit must be at least 1, got {limit}.")
        try:
            model_id = runtime.get_encoder().model_id
        except ModelLoadError as exc:
            raise CommandError(
                f"{exc}\nFix the model settings, then run reconcile_index again."
            ) from exc
        delta = timedelta(
            seconds=grace if grace is not None else settings.EMBEDDINGS_RECONCILE_GRACE
        )
        batches = []
        while True:
            outcome = reconcile.images_reconcile(
                model_id=model_id, grace=delta, limit=limit, dry_run=dry_run
            )
            batches.append(outcome)
            if not as_json:
                self.stdout.write(
                    f"{'Would queue' if dry_run else 'Queued'} "
                    f"{outcome.left if dry_run else outcome.queued}: "
                    f"{outcome.stuck_pending} pending longer than {delta.total_seconds():g} s, "
                    f"{outcome.missing_vector} without a vector, {outcome.outdated_vector} with "
                    f"an out-of-date vector" + ("" if dry_run else f"; {outcome.left} left")
                )
            if dry_run or not all or not outcome.queued or not outcome.left:
                break
            # With --grace 0 what was just queued is due again at once: stop after one pass over
            # what the first batch found.
            if sum(b.queued for b in batches) >= batches[0].queued + batches[0].left:
                break
        queued = sum(b.queued for b in batches)
        if as_json:
            self.stdout.write(
                json.dumps(
                    {
                        "model_id": model_id,
                        "dry_run": dry_run,
                        "queued": queued,
                        "left": batches[-1].left,
                        "batches": [b.as_dict() for b in batches],
                    },
                    indent=2,
                )
            )
            return
        if dry_run:
            return
        if batches[-1].left:
            self.stdout.write(
                f"{batches[-1].left} left for the next run (celery beat, or --all to go on now)."
            )
        self.stdout.write(
            self.style.SUCCESS(
                f"Queued {queued} image(s) for {model_id}; the workers embed them "
                "(`manage.py index_status` shows progress)."
            )
        )
