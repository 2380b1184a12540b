"""manage.py index_status: how many images are pending / indexed / failed, and the index itself."""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError
from django.db.models import Max

from catalog.models import ProductImage
from embeddings import reconcile, runtime, selectors
from embeddings.encoder import ModelLoadError
from embeddings.engine.changes import pruned_through
from embeddings.models import ImageEmbedding, IndexChange


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
        counts = selectors.index_status_counts()
        try:
            encoder = runtime.get_encoder()
            model_id = encoder.model_id
            live = runtime.get_live_index()
        except ModelLoadError as exc:
            raise CommandError(
                f"{exc}\nFix the model settings, then run index_status again."
            ) from exc
        info = {
            "model_id": model_id,
            "dim": live.dim,
            "images": counts,
            "vectors_of_this_model": ImageEmbedding.objects.filter(model_id=model_id).count(),
            "index_size": len(live),
            "index_kind": live.params.kind,
            "index_delta": live.delta_size(),
            "index_seq": live.seq,
            "db_seq": max(IndexChange.objects.aggregate(m=Max("id"))["m"] or 0, pruned_through()),
            "change_log_pruned_through": pruned_through(),
            "snapshot": str(live.base_path) if live.base_path else None,
            "freshness": reconcile.index_freshness().as_dict(),
        }
        if failed:
            info["failed"] = list(
                ProductImage.objects.filter(index_status=ProductImage.IndexStatus.FAILED).values(
                    "id", "product_id", "index_error"
                )[:200]
            )
        if as_json:
            self.stdout.write(json.dumps(info, indent=2, default=str))
            return
        self.stdout.write(f"Model:    {model_id} (dim {live.dim})")
        self.stdout.write(
            "Images:   {pending} pending, {indexed} indexed, {failed} failed".format(**counts)
        )
        self.stdout.write(
            f"Index:    {info['index_size']} vectors ({info['index_kind']}), sequence {live.seq} "
            f"of {info['db_seq']}; {info['index_delta']} changed since the base; "
            f"{info['vectors_of_this_model']} vectors of this model in the database"
        )
        self.stdout.write(
            f"Snapshot: {info['snapshot'] or 'none yet (run manage.py snapshot_index)'}"
        )
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
