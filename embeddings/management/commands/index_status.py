"""manage.py index_status: how many images are pending / indexed / failed, and the index itself.

The figures come from ``embeddings.health.index_health``, the same as the admin's index health
page (Admin > Product images > Index health)."""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from catalog.models import ProductImage
from embeddings.health import index_health


class Command(BaseCommand):
    help = (
        "Shows indexing progress (pending / indexed / failed images), how far the vectors lag "
        "behind the catalog (oldest pending image, the drift bound), the index size and the model."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--json", dest="as_json", action="store_true", help="Print one JSON object."
        )
        parser.add_argument(
            "--failed", action="store_true", help="Also list failed images and why."
        )

    def handle(self, *args, as_json=False, failed=False, **options):
        info = index_health()
        if info["model_error"]:
            raise CommandError(
                f"{info['model_error']}\nFix the model settings, then run index_status again."
            )
        if info["index_size"] is None:
            raise CommandError(f"The index could not be opened: {info['index_error']}")
        if failed:
            info["failed"] = list(
                ProductImage.objects.filter(index_status=ProductImage.IndexStatus.FAILED).values(
                    "id", "product_id", "index_error"
                )[:200]
            )
        if as_json:
            self.stdout.write(json.dumps(info, indent=2, default=str))
            return
        counts = info["images"]
        self.stdout.write(f"Model:    {info['model_id']} (dim {info['dim']})")
        self.stdout.write(
            "Images:   {pending} pending, {indexed} indexed, {failed} failed".format(**counts)
        )
        self.stdout.write(
            f"Index:    {info['index_size']} vectors ({info['index_kind']}), sequence "
            f"{info['index_seq']} of {info['db_seq']}; {info['index_delta']} changed since the "
            f"base; {info['vectors_of_this_model']} vectors of this model in the database"
        )
        self.stdout.write(
            f"Snapshot: {info['snapshot'] or 'none yet (run manage.py snapshot_index)'}"
        )
        if info["index_error"]:
            self.stdout.write(self.style.WARNING(f"Problem:  {info['index_error']}"))
        fresh = info["freshness"]
        oldest = fresh["oldest_pending_age_s"]
        self.stdout.write(
            "Lag:      "
            + (
                f"oldest pending image queued {oldest:.0f} s ago; {fresh['pending_beyond_grace']} "
                f"pending longer than the {fresh['grace_s']:.0f} s grace period"
                if oldest is not None
                else "nothing pending"
            )
        )
        self.stdout.write(f"Bound:    {fresh['drift_bound']}")
        for row in info.get("failed", []):
            self.stdout.write(
                f"  failed image {row['id']} (product {row['product_id']}): {row['index_error']}"
            )
        if counts["pending"]:
            self.stdout.write(
                "Pending images are embedded by the Celery workers (make worker); celery beat "
                "queues stuck ones again (manage.py reconcile_index does it now), or embed them "
                "in this process with: manage.py reembed --only-missing"
            )
