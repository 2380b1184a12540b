"""manage.py suggest_attributes: zero-shot attribute suggestions from the product photos, their
accuracy against the attributes the shop already has, and (--apply-missing) filling the gaps."""

from __future__ import annotations

import json

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from embeddings import runtime
from embeddings.attribute_suggest import (
    AttributeSuggestError,
    attribute_suggest,
    attributes_apply_missing,
    catalog_values,
    product_vectors,
    suggestions_report,
)
from embeddings.encoder import ModelLoadError


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"


class Command(BaseCommand):
    help = (
        "For each product with an indexed image, scores its image vector against 'a photo of a "
        "<value> <category>' for every known value of an attribute and picks the best. Reports, "
        "per attribute, the accuracy against the values products already have and the majority-"
        "class baseline. --apply-missing writes the suggestion to products lacking the attribute "
        "(never overwrites a value)."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--attribute",
            action="append",
            default=None,
            help="Attribute to suggest (repeat for several). Default: every CATALOG_FACET_ATTRIBUTES "
            "entry with at least two values in the catalog.",
        )
        parser.add_argument(
            "--values",
            default=None,
            help="Comma-separated candidate values (with one --attribute). Default: the values "
            "the catalog already has.",
        )
        parser.add_argument("--limit", type=int, default=None, help="First N products by id.")
        parser.add_argument(
            "--apply-missing",
            action="store_true",
            help="Set the suggested value on products that lack the attribute.",
        )
        parser.add_argument("--json", action="store_true", help="Print the report as JSON.")

    def handle(self, *args, attribute=None, values=None, limit=None, **options):
        if limit is not None and limit < 1:
            raise CommandError("--limit must be at least 1.")
        candidates = [v for v in values.split(",") if v.strip()] if values else None
        if candidates is not None and len(attribute or []) != 1:
            raise CommandError("--values needs exactly one --attribute.")
        names = [a.strip().lower() for a in attribute] if attribute else None
        if names is None:
            names = [
                a
                for a in settings.CATALOG_FACET_ATTRIBUTES
                if len(catalog_values(attribute=a)) >= 2
            ]
            if not names:
                raise CommandError(
                    "No attribute of CATALOG_FACET_ATTRIBUTES has two or more values in the "
                    "catalog: give --attribute NAME --values a,b,c."
                )
        try:
            encoder = runtime.get_encoder()
        except ModelLoadError as exc:
            raise CommandError(str(exc)) from exc
        vectors = product_vectors(model_id=encoder.model_id, limit=limit)
        if not vectors:
            raise CommandError(
                f"No product has an indexed image for the model {encoder.model_id}: run "
                "manage.py reembed (or rebuild_index) first."
            )
        reports = []
        for name in names:
            try:
                suggestions = attribute_suggest(attribute=name, values=candidates, vectors=vectors)
            except AttributeSuggestError as exc:
                raise CommandError(str(exc)) from exc
            report = suggestions_report(
                attribute=name,
                values=candidates or catalog_values(attribute=name),
                suggestions=suggestions,
            ).as_dict()
            report["applied"] = (
                attributes_apply_missing(suggestions=suggestions) if options["apply_missing"] else 0
            )
            reports.append(report)

        if options["json"]:
            self.stdout.write(
                json.dumps(
                    {"model": encoder.model_id, "products": len(vectors), "attributes": reports},
                    indent=2,
                )
            )
            return
        self.stdout.write(
            f"Model {encoder.model_id}, {len(vectors)} products with an indexed image"
        )
        for r in reports:
            self.stdout.write(
                f"{r['attribute']}: {len(r['values'])} values, n={r['n']}, accuracy "
                f"{_pct(r['accuracy'])} (majority baseline {_pct(r['majority_baseline'])}, "
                f"'{r['majority_value']}'), {r['missing']} missing"
                + (f", {r['applied']} filled" if options["apply_missing"] else "")
            )
