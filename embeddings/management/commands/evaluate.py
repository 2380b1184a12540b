"""``manage.py evaluate``: retrieval quality of a CLIP model on a catalog manifest.

Encodes the images into a VectorIndex and prints image->image, text->image, title->product and
zero-shot figures beside those of a random-init model of the same architecture (the floor).
By default (``--split auto``) a manifest the model card lists as a training source is
scored on the products train_model held out, any other manifest whole.
Optional: shopper photos (``--photos`` + ``--label-map``: photo->catalog, photo->photo and
zero-shot label figures), hybrid (word ranking + RRF) vs vector-only retrieval, the "no good
match" threshold, and prompt templates. The maths lives in :mod:`embeddings.evaluation` and
:mod:`embeddings.hybrid`; which data is scored in :mod:`embeddings.evaluation_splits`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

# Shopper words the catalog's own metadata never uses, with the articleTypes that answer them:
# a probe of how well the text tower generalises beyond catalog vocabulary.
SYNONYM_QUERIES: dict[str, set[str]] = {
    "sneakers": {"Casual Shoes", "Sports Shoes"},
    "trainers": {"Sports Shoes", "Casual Shoes"},
    "tee": {"Tshirts"},
    "t-shirt": {"Tshirts"},
    "purse": {"Handbags", "Wallets", "Clutches"},
    "wristwatch": {"Watches"},
    "shades": {"Sunglasses"},
    "denims": {"Jeans"},
    "pants": {"Trousers", "Track Pants", "Jeans", "Capris", "Leggings"},
    "frock": {"Dresses"},
    "blouse": {"Tops", "Shirts"},
    "slippers": {"Flip Flops", "Sandals"},
    "hoodie": {"Sweatshirts"},
    "stilettos": {"Heels"},
    "rucksack": {"Backpacks"},
}


class Command(BaseCommand):
    help = "Evaluate retrieval quality of an open_clip model on a catalog manifest (plus a random-init floor)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--manifest", required=True)
        parser.add_argument("--images-root", default=None, help="default: the manifest's folder")
        parser.add_argument("--model", default=None, help="default: settings.EMBEDDINGS_MODEL")
        parser.add_argument(
            "--pretrained",
            default=None,
            help="checkpoint path or tag (default: settings.EMBEDDINGS_PRETRAINED)",
        )
        parser.add_argument("--type-column", default="articleType")
        parser.add_argument("--colour-column", default="baseColour")
        parser.add_argument("--title-column", default="title")
        parser.add_argument(
            "--split",
            choices=["auto", "val", "all"],
            default="auto",
            help="val: exactly the products train_model held out (split read from the model card when "
            "present); all: every product; auto (default): val when the model card lists this manifest "
            "as a training source, else all",
        )
        parser.add_argument(
            "--val-size",
            type=int,
            default=None,
            help="override the split size (default: the card's, else 1000)",
        )
        parser.add_argument("--val-fraction", type=float, default=None)
        parser.add_argument("--split-salt", default=None)
        parser.add_argument(
            "--limit", type=int, default=None, help="evaluate only the first N selected products"
        )
        parser.add_argument(
            "--photos",
            default=None,
            help="shopper-photo set CSV (path, label; optionally sender_id): photo->catalog, "
            "photo->photo and zero-shot label figures (needs --label-map)",
        )
        parser.add_argument("--photos-root", default=None, help="default: the photo set's folder")
        parser.add_argument(
            "--label-map",
            default=None,
            help="JSON or CSV mapping each photo label to the catalog types (--type-column values) "
            "that answer it (see docs/EVALUATION.md)",
        )
        parser.add_argument(
            "--photo-senders",
            choices=["auto", "val", "all"],
            default="auto",
            help="val: only photos of the senders train_model holds out; all: every photo; auto "
            "(default): val when the model card's training_config.photo_sources lists the photo set",
        )
        parser.add_argument("--device", default="cpu")
        parser.add_argument("--batch-size", type=int, default=64)
        parser.add_argument("--threads", type=int, default=2)
        parser.add_argument("--no-floor", action="store_true", help="skip the random-init floor")
        parser.add_argument(
            "--hybrid",
            action="store_true",
            help="also measure word ranking (the production full-text engine) + vector fusion (RRF)",
        )
        parser.add_argument("--rrf-k", type=int, default=60)
        parser.add_argument(
            "--threshold",
            action="store_true",
            help="measure real vs nonsense query scores and pick min_score",
        )
        parser.add_argument("--templates", action="store_true", help="compare prompt templates")
        parser.add_argument("--json-out", default=None, help="write every figure to this JSON file")
        parser.add_argument(
            "--update-card",
            action="store_true",
            help="write the evaluation (and min_score with --threshold) into the checkpoint's model card",
        )

    # -- helpers ----------------------------------------------------------------------------
    def _select(
        self, opts: dict[str, Any], card: dict[str, Any], model: str
    ) -> tuple[list[Any], dict[str, Any]]:
        from embeddings.evaluation_splits import VAL, choose_catalog_split
        from embeddings.training.data import (
            DEFAULT_SPLIT_SALT,
            ManifestError,
            read_manifest,
            validation_ids,
        )

        required = (
            "path",
            "product_id",
            opts["title_column"],
            opts["type_column"],
            opts["colour_column"],
        )
        try:
            records = read_manifest(opts["manifest"], opts["images_root"], required=required)
        except ManifestError as exc:
            raise CommandError(str(exc)) from exc
        choice = choose_catalog_split(card, opts["manifest"], opts["split"], model)
        split_info: dict[str, Any] = {"split": choice.split}
        if choice.split == VAL:
            card_split: dict[str, Any] = card.get("split") or {}
            fraction = (
                opts["val_fraction"]
                if opts["val_fraction"] is not None
                else card_split.get("val_fraction")
            )
            size = opts["val_size"] if opts["val_size"] is not None else card_split.get("val_size")
            if fraction is None and size is None:
                size = 1000
            if opts["val_size"] is not None:
                fraction = None
            salt = opts["split_salt"] or card_split.get("salt") or DEFAULT_SPLIT_SALT
            try:
                # An extra training source was trained on except the primary's held-out ids.
                basis = (
                    read_manifest(
                        choice.primary[0],
                        choice.primary[1],
                        required=("path", "product_id"),
                        check_files=False,
                    )
                    if choice.primary
                    else records
                )
                val = validation_ids(
                    basis, fraction=fraction if size is None else None, size=size, salt=salt
                )
            except ManifestError as exc:
                raise CommandError(
                    f"{exc} Use --split all for a manifest the model was not trained on."
                ) from exc
            records = [r for r in records if r.product_id in val]
            split_info.update(
                val_size=size, val_fraction=fraction if size is None else None, salt=salt
            )
        split_info["split_reason"] = choice.reason(len(records))
        if opts["limit"]:
            records = records[: opts["limit"]]
            split_info["split_reason"] += f"; the first {len(records)} with --limit"
        split_info["products"] = len(records)
        return records, split_info

    def _photo_set(
        self, opts: dict[str, Any], card: dict[str, Any], model: str, types: list[str]
    ) -> tuple[list[Any], Any, dict[str, Any]]:
        """The photos to score (labels the map maps), the label map, and what to record."""
        from collections import Counter

        from embeddings.evaluation_photos import (
            PhotoSetError,
            absent_catalog_types,
            held_out_photos,
            load_label_map,
            read_photo_manifest,
            unmapped_labels,
        )
        from embeddings.evaluation_splits import VAL, choose_photo_senders

        if not opts["label_map"]:
            raise CommandError(
                "--photos needs --label-map FILE: which catalog types answer each photo label "
                "(docs/evaluation/clothing-dataset-to-myntra.json is the one for the shared shopper photos)."
            )
        try:
            label_map = load_label_map(opts["label_map"])
            photos = read_photo_manifest(opts["photos"], opts["photos_root"])
        except PhotoSetError as exc:
            raise CommandError(str(exc)) from exc
        unmapped = unmapped_labels(photos, label_map)
        if unmapped:
            listed = ", ".join(f"{lab!r} ({n} photos)" for lab, n in sorted(unmapped.items()))
            raise CommandError(
                f"Photo labels {listed} are neither mapped nor ignored by {opts['label_map']}: add "
                'each to "labels" with the catalog types that answer it, or to "ignore".'
            )
        absent = absent_catalog_types(label_map, (t for t in types if t))
        if absent:
            listed = ", ".join(f"{t} ({', '.join(labs)})" for t, labs in sorted(absent.items()))
            self.stdout.write(
                self.style.WARNING(
                    f"warning: catalog types in the label map that this catalog lacks: {listed}"
                )
            )
        choice = choose_photo_senders(card, opts["photos"], opts["photo_senders"], model)
        if choice.senders == VAL:
            photos = held_out_photos(photos, choice.fraction, choice.salt)
        ignored = sum(1 for p in photos if p.label in label_map.ignore)
        photos = [p for p in photos if p.label in label_map.catalog_types]
        if not photos:
            raise CommandError(
                f"No photo of {opts['photos']} is left to score ({choice.senders} senders, "
                "labels the map maps); try --photo-senders all."
            )
        info: dict[str, Any] = {
            "manifest": str(Path(opts["photos"]).resolve()),
            "images_root": str(Path(opts["photos_root"] or Path(opts["photos"]).parent).resolve()),
            "label_map": opts["label_map"],
            "senders": choice.senders,
            "senders_reason": choice.reason(len(photos), len({p.sender for p in photos})),
            "count": len(photos),
            "ignored_photos": ignored,
            "labels": dict(sorted(Counter(p.label for p in photos).items())),
        }
        if choice.senders == VAL:
            info.update(sender_val_fraction=choice.fraction, sender_salt=choice.salt)
        return photos, label_map, info

    def _encode_photos(self, encoder: Any, photos: list[Any], desc: str, batch: int) -> np.ndarray:
        from embeddings.encoder import ImageDecodeError, load_image

        out = []
        for s in tqdm(range(0, len(photos), batch), desc=desc, unit="batch"):
            images = []
            for p in photos[s : s + batch]:
                try:
                    # Decoded as a shopper's photo query is: no larger than the model needs.
                    images.append(load_image(p.image_path, min_side=encoder.decode_side))
                except ImageDecodeError as exc:
                    raise CommandError(f"Photo {p.image_path} cannot be read: {exc}") from exc
            out.append(encoder.encode_images(images))
        return np.concatenate(out)

    def _encode_images(self, encoder: Any, records: list[Any], desc: str, batch: int) -> np.ndarray:
        from embeddings.encoder import load_image

        out = []
        for s in tqdm(range(0, len(records), batch), desc=desc, unit="batch"):
            out.append(
                encoder.encode_images([load_image(r.image_path) for r in records[s : s + batch]])
            )
        return np.concatenate(out)

    @staticmethod
    def _index_search(emb: np.ndarray):
        import faiss

        index = faiss.IndexFlatIP(emb.shape[1])  # exact: figures are about the model alone
        index.add(np.ascontiguousarray(emb, dtype=np.float32))

        def search(queries: np.ndarray, k: int) -> list[list[int]]:
            q = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, emb.shape[1])
            _, ids = index.search(q, min(k, len(emb)))
            return [[int(i) for i in row if i >= 0] for row in ids]

        return index, search

    # -- main -------------------------------------------------------------------------------
    def handle(self, *args: Any, **opts: Any) -> None:
        import torch

        from embeddings.encoder import ClipEncoder, ModelLoadError
        from embeddings.evaluation import format_report, photo_report, retrieval_report
        from embeddings.evaluation_splits import read_card

        torch.set_num_threads(max(1, opts["threads"]))
        model = opts["model"] or settings.EMBEDDINGS_MODEL
        pretrained = (
            opts["pretrained"] if opts["pretrained"] is not None else settings.EMBEDDINGS_PRETRAINED
        )
        try:
            card = read_card(pretrained)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        records, split_info = self._select(opts, card, model)
        if len(records) < 11:
            raise CommandError(
                f"Only {len(records)} products selected; need at least 11 for P@10. Use --split all or a bigger --limit."
            )
        tcol, ccol, ticol = opts["type_column"], opts["colour_column"], opts["title_column"]
        titles = [r.get(ticol) for r in records]
        types = [r.get(tcol) for r in records]
        colours = [r.get(ccol) for r in records]
        shown = {k: v for k, v in split_info.items() if k != "split_reason"}
        self.stdout.write(f"{len(records)} products ({shown}); model {model} weights {pretrained}")
        self.stdout.write(f"split: {split_info['split']} ({split_info['split_reason']})")
        photos: list[Any] = []
        label_map = None
        results: dict[str, Any] = {"model": model, "pretrained": pretrained, **split_info}
        if opts["photos"]:
            photos, label_map, results["photos"] = self._photo_set(opts, card, model, types)
            info = results["photos"]
            self.stdout.write(
                f"{info['count']} shopper photos ({info['ignored_photos']} with ignored labels left out); "
                f"photo senders: {info['senders']} ({info['senders_reason']})"
            )
        columns: dict[str, dict[str, Any]] = {}
        runs = [("model", pretrained)] + ([] if opts["no_floor"] else [("random-init", None)])
        main_state: dict[str, Any] = {}
        for label, weights in runs:
            if weights is None:
                torch.manual_seed(0)  # a reproducible floor
            encoder = ClipEncoder(
                model, weights, device=opts["device"], batch_size=opts["batch_size"]
            )
            try:
                emb = self._encode_images(
                    encoder, records, f"encoding images ({label})", opts["batch_size"]
                )
            except ModelLoadError as exc:
                raise CommandError(str(exc)) from exc
            index, search = self._index_search(emb)
            columns[label] = retrieval_report(
                emb, titles, types, colours, encoder.encode_texts, search=search
            )
            columns[label]["synonym_p@10"] = self._synonyms(encoder, search, types)
            if photos:
                assert label_map is not None
                photo_emb = self._encode_photos(
                    encoder, photos, f"encoding photos ({label})", opts["batch_size"]
                )
                columns[label].update(
                    photo_report(
                        photo_emb,
                        [p.label for p in photos],
                        emb,
                        types,
                        label_map.catalog_types,
                        encoder.encode_texts,
                        prompts=label_map.prompts,
                        catalog_search=search,
                    )
                )
            if label == "model":
                main_state = {"encoder": encoder, "emb": emb, "search": search, "index": index}
        results["metrics"] = columns
        self.stdout.write(format_report(columns))
        self.stdout.write(
            "shopper-synonym queries P@10 (e.g. 'sneakers'): "
            + ", ".join(f"{k} {v['synonym_p@10']:.3f}" for k, v in columns.items())
        )
        if photos:
            for name, col in columns.items():
                self.stdout.write(
                    f"shopper photo->catalog P@10 by label ({name}): "
                    + ", ".join(
                        f"{lab} {row['p@10']:.2f} ({row['photos']:.0f})"
                        for lab, row in col["photo2catalog_by_label"].items()
                    )
                )
        enc, emb, search = main_state["encoder"], main_state["emb"], main_state["search"]
        if opts["hybrid"]:
            results["hybrid"] = self._hybrid(
                enc, emb, search, titles, types, colours, opts["rrf_k"]
            )
        if opts["threshold"]:
            results["threshold"] = self._threshold(enc, main_state["index"], titles, types, colours)
        if opts["templates"]:
            results["templates"] = self._templates(enc, emb, search, titles, types, colours)
        if opts["json_out"]:
            Path(opts["json_out"]).write_text(json.dumps(results, indent=2))
        if opts["update_card"]:
            self._update_card(pretrained, results)

    def _synonyms(self, encoder: Any, search: Any, types: list[str]) -> float:
        from embeddings.evaluation import precision_at_k

        present = {t for t in types if t}
        queries = [(q, rel) for q, rel in SYNONYM_QUERIES.items() if rel & present]
        if not queries:
            return float("nan")
        rankings = search(encoder.encode_texts([q for q, _ in queries]), 10)
        relevant = [{i for i, t in enumerate(types) if t in rel} for _, rel in queries]
        return precision_at_k(rankings, relevant, 10)

    def _hybrid(self, encoder, emb, search, titles, types, colours, rrf_k: int) -> dict[str, Any]:
        """Vector-only vs words-only vs RRF fusion (lexical weights 0.5/1/2), same depth for all.
        Words are ranked by the production engine (BM25 in tantivy) over an index of the titles
        built in a temporary folder; item i is product id i."""
        import tempfile

        from embeddings.engine.fulltext import ProductDoc, TextIndex
        from embeddings.evaluation import (
            colour_type_queries,
            mean_reciprocal_rank,
            precision_at_k,
            recall_at_k,
        )
        from embeddings.hybrid import hybrid_rank

        depth = 100
        out: dict[str, Any] = {"rrf_k": rrf_k, "depth": depth}
        targets = list(range(len(titles)))
        title_vec = search(encoder.encode_texts(titles), depth)
        queries = colour_type_queries(types, colours)
        relevant = [set(q.relevant) for q in queries]
        q_vec = search(encoder.encode_texts([q.text for q in queries]), depth)
        with tempfile.TemporaryDirectory(prefix="evaluate-fulltext-") as tmp:
            words = TextIndex.build(
                Path(tmp) / "fulltext",
                (ProductDoc(product_id=i, title=t or "") for i, t in enumerate(titles)),
            )
            title_lex = [
                words.search(t or "", limit=depth).ids
                for t in tqdm(titles, desc="word-ranked title queries", unit="q", leave=False)
            ]
            q_lex = [words.search(q.text, limit=depth).ids for q in queries]
            del words  # closes the index files before the folder goes
        variants: dict[str, tuple[list, list]] = {
            "vector": (title_vec, q_vec),
            "bm25": (title_lex, q_lex),
        }
        for w in (0.5, 1.0, 2.0):
            variants[f"hybrid_w{w:g}"] = (
                [
                    hybrid_rank(v, lx, k=rrf_k, lexical_weight=w, limit=depth)
                    for v, lx in zip(title_vec, title_lex, strict=True)
                ],
                [
                    hybrid_rank(v, lx, k=rrf_k, lexical_weight=w, limit=depth)
                    for v, lx in zip(q_vec, q_lex, strict=True)
                ],
            )
        self.stdout.write(
            f"hybrid retrieval (BM25 over titles in the full-text engine + vector, reciprocal rank fusion k={rrf_k}, depth {depth}):"
        )
        for name, (t_rank, q_rank) in variants.items():
            row = {
                "title_recall@1": recall_at_k(t_rank, targets, 1),
                "title_recall@10": recall_at_k(t_rank, targets, 10),
                f"title_mrr@{depth}": mean_reciprocal_rank(t_rank, targets),
                "text2img_p@10": precision_at_k(q_rank, relevant, 10),
            }
            out[name] = row
            self.stdout.write(
                f"  {name:12s} title R@1 {row['title_recall@1']:.3f}  R@10 {row['title_recall@10']:.3f}  "
                f"MRR@{depth} {row[f'title_mrr@{depth}']:.3f} | '<colour> <type>' P@10 {row['text2img_p@10']:.3f}"
            )
        return out

    def _threshold(self, encoder, index, titles, types, colours) -> dict[str, Any]:
        from embeddings.evaluation import colour_type_queries
        from embeddings.hybrid import (
            UNRELATED_QUERIES,
            choose_min_score,
            random_string_queries,
            score_summary,
        )

        rng = np.random.default_rng(0)
        sample = [
            titles[i] for i in rng.choice(len(titles), size=min(300, len(titles)), replace=False)
        ]
        real = (
            [q.text for q in colour_type_queries(types, colours)] + sample + list(SYNONYM_QUERIES)
        )
        real += sorted({f"{t}" for t in types if t})
        nonsense = list(UNRELATED_QUERIES) + random_string_queries(200, seed=0)

        def top1(texts: list[str]) -> list[float]:
            scores, _ = index.search(np.ascontiguousarray(encoder.encode_texts(texts)), 1)
            return [float(s) for s in scores[:, 0]]

        real_scores, junk_scores = top1(real), top1(nonsense)
        choice = choose_min_score(real_scores, junk_scores, min_real_kept=0.95)
        out = {
            "real_queries": score_summary(real_scores),
            "nonsense_queries": score_summary(junk_scores),
            "min_score": round(choice.min_score, 4),
            "real_kept": choice.real_kept,
            "nonsense_rejected": choice.nonsense_rejected,
            "rule": "highest threshold keeping >= 95% of real queries (colour+type, titles, synonyms, type names); "
            "nonsense = unrelated words + random strings; score = best cosine over the catalog",
        }
        self.stdout.write(
            f"no-good-match threshold: min_score {choice.min_score:.3f} keeps {choice.real_kept:.1%} of {len(real)} real "
            f"queries and rejects {choice.nonsense_rejected:.1%} of {len(nonsense)} nonsense queries"
        )
        self.stdout.write(
            f"  real top-1 cosine: {json.dumps({k: round(v, 3) for k, v in out['real_queries'].items()})}"
        )
        self.stdout.write(
            f"  nonsense top-1 cosine: {json.dumps({k: round(v, 3) for k, v in out['nonsense_queries'].items()})}"
        )
        return out

    def _templates(self, encoder, emb, search, titles, types, colours) -> dict[str, Any]:
        from embeddings.evaluation import retrieval_report

        out: dict[str, Any] = {}
        self.stdout.write("prompt templates:")
        for zs, qt in (
            ("{}", "{colour} {type}"),
            ("a photo of {}", "a photo of {colour} {type}"),
            ("a photo of a {}", "{colour} coloured {type}"),
        ):
            rep = retrieval_report(
                emb,
                titles,
                types,
                colours,
                encoder.encode_texts,
                zero_shot_template=zs,
                query_template=qt,
                search=search,
            )
            out[f"zero_shot '{zs}' / query '{qt}'"] = {
                "zero_shot_type_acc": rep.get("zero_shot_type_acc"),
                "text2img_p@10": rep.get("text2img_p@10"),
            }
            self.stdout.write(
                f"  zero-shot '{zs}': acc {rep.get('zero_shot_type_acc', float('nan')):.3f} | query '{qt}': P@10 {rep.get('text2img_p@10', float('nan')):.3f}"
            )
        return out

    def _update_card(self, pretrained: str | None, results: dict[str, Any]) -> None:
        from embeddings.training.checkpoint import card_path_for, update_card

        if not pretrained or not Path(pretrained).is_file():
            raise CommandError(
                "--update-card needs --pretrained to be a checkpoint file with a card beside it."
            )
        fields: dict[str, Any] = {"evaluation": results}
        if "threshold" in results:
            fields["min_score"] = results["threshold"]["min_score"]
        path = card_path_for(pretrained)
        update_card(path, **fields)
        self.stdout.write(self.style.SUCCESS(f"updated {path}"))
