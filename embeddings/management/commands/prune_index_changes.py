"""manage.py prune_index_changes: delete old rows of the index change log (celery beat does it daily)."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from embeddings import services


class Command(BaseCommand):
    help = (
        "Deletes IndexChange rows older than --days (default EMBEDDINGS_CHANGE_LOG_DAYS). Stored "
        "vectors and products are untouched; an index or snapshot older than the pruned point "
        "rebuilds itself from the stored vectors at its next sync."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--days",
            type=float,
            default=None,
            help="keep rows younger than this many days (default: EMBEDDINGS_CHANGE_LOG_DAYS)",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="only count what would be deleted"
        )

    def handle(self, *args, days=None, dry_run=False, **options):
        days = settings.EMBEDDINGS_CHANGE_LOG_DAYS if days is None else days
        if days is None or days < 0:
            raise CommandError(f"--days must be 0 or more, got {days}.")
        outcome = services.index_changes_prune(older_than=timedelta(days=days), dry_run=dry_run)
        if not outcome.deleted:
            self.stdout.write(f"No change-log rows older than {days:g} days; nothing to prune.")
            return
        verb = "Would delete" if dry_run else "Deleted"
        self.stdout.write(
            self.style.SUCCESS(
                f"{verb} {outcome.deleted} change-log rows (through #{outcome.pruned_through}); "
                f"{outcome.kept} kept."
            )
        )
        if not dry_run:
            self.stdout.write(
                "Run `manage.py snapshot_index` so new serving processes start from a snapshot "
                "past this point instead of rebuilding."
            )
