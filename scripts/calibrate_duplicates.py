#!/usr/bin/env python
"""Calibrates EMBEDDINGS_DUPLICATE_THRESHOLD and measures the upload assistant's category vote
for one model (README, Suggestions on upload): run it again after changing EMBEDDINGS_MODEL.

Sample: the ``--types`` commonest article types of the manifest, ``--per-type`` products each
(seeded). Each product's photo is loaded as the catalog loads it (``load_image`` with the
model's ``decode_side``), and 4 copies of it are made in memory and decoded from their bytes as
an upload is:

- ``jpeg_q40``: re-encoded as JPEG quality 40;
- ``resized_60``: resized to 60 % (bicubic), saved as PNG;
- ``cropped_5``: 5 % cut from each side, saved as PNG;
- ``upscaled_2x_png``: upscaled 2x (bicubic), saved as PNG.

The resized and cropped copies are saved losslessly so each kind measures one change.

Duplicates: each photo against its 4 copies (4 n pairs). Non-duplicates: every pair of different
products of the same article type (the hardest negatives a shop has). The threshold is the
lowest cosine at which precision over these pairs is >= ``--precision`` (0.99); the script
prints recall overall and per kind of copy, the top non-duplicate pairs (flagging the same
photo listed under two product ids), and how often a new product's photo, checked against all
the other products of the sample, would be warned.

Category accuracy: each product kept out in turn, its article type predicted from the others
by the score-weighted vote of its k nearest (as ``upload_assist.category_suggest`` votes), and
zero-shot against "a photo of a <type name>".

    python scripts/calibrate_duplicates.py --model shopclip-starter \\
        --pretrained embeddings/starter/shopclip-starter.pt --threads 2 --json-out calib.json

A second run with the same arguments samples the same products and gives the same figures.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import math
import random
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from embeddings.encoder import ClipEncoder, load_image  # noqa: E402

DEFAULT_MANIFEST = ROOT.parent / "shared" / "datasets" / "myntra-224" / "manifest.csv"
COPY_KINDS = ("jpeg_q40", "resized_60", "cropped_5", "upscaled_2x_png")
ZERO_SHOT_PROMPT = "a photo of a {}"  # as embeddings/upload_assist.py
TABLE_THRESHOLDS = (0.95, 0.96, 0.97, 0.975, 0.98, 0.985, 0.99, 0.995)
KS = (5, 10, 20)
CHUNK = 32  # products whose copies are made and embedded together (bounds memory)


def make_copy(img, kind: str) -> bytes:
    """The bytes of one copy of ``img`` (an RGB PIL image)."""
    from PIL import Image

    w, h = img.size
    buf = io.BytesIO()
    if kind == "jpeg_q40":
        img.save(buf, "JPEG", quality=40)
    elif kind == "resized_60":
        img.resize((round(w * 0.6), round(h * 0.6)), Image.Resampling.BICUBIC).save(buf, "PNG")
    elif kind == "cropped_5":
        dx, dy = round(w * 0.05), round(h * 0.05)
        img.crop((dx, dy, w - dx, h - dy)).save(buf, "PNG")
    elif kind == "upscaled_2x_png":
        img.resize((2 * w, 2 * h), Image.Resampling.BICUBIC).save(buf, "PNG")
    else:
        raise ValueError(kind)
    return buf.getvalue()


def sample_products(
    manifest: Path, n_types: int, per_type: int, seed: int
) -> tuple[list[dict], list[str]]:
    """``per_type`` rows of each of the ``n_types`` commonest article types (ties by name), one
    row per product, drawn with ``random.Random(seed)`` from the rows sorted by product id."""
    with manifest.open(newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("articleType")]
    seen: set[str] = set()
    unique = []
    for row in sorted(rows, key=lambda r: (_id_key(r["product_id"]), r["path"])):
        if row["product_id"] not in seen:
            seen.add(row["product_id"])
            unique.append(row)
    counts = Counter(r["articleType"] for r in unique)
    types = [t for t, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n_types]]
    by_type = defaultdict(list)
    for row in unique:
        by_type[row["articleType"]].append(row)
    rng = random.Random(seed)
    sample = []
    for t in types:
        pool = by_type[t]
        if len(pool) < per_type:
            print(f"warning: {t!r} has only {len(pool)} products", file=sys.stderr)
        picked = rng.sample(pool, min(per_type, len(pool)))
        sample.extend(sorted(picked, key=lambda r: _id_key(r["product_id"])))
    return sample, types


def _id_key(product_id: str) -> tuple[int, str]:
    return (int(product_id), "") if product_id.isdigit() else (math.inf, product_id)  # type: ignore[return-value]


def embed_sample(
    encoder: ClipEncoder, rows: list[dict], root: Path
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(originals (n, d), copies (n, kinds, d), a hash of each original's decoded pixels)."""
    from tqdm import tqdm

    side = encoder.decode_side
    originals, copies, pixel_hashes = [], [], []
    with tqdm(total=len(rows), desc="embedding photos + 4 copies", unit="product") as bar:
        for start in range(0, len(rows), CHUNK):
            chunk = rows[start : start + CHUNK]
            pictures = [load_image(root / r["path"], min_side=side) for r in chunk]
            pixel_hashes.extend(hashlib.sha256(p.tobytes()).hexdigest()[:16] for p in pictures)
            originals.append(encoder.encode_images(pictures))
            copied = [
                load_image(make_copy(p, kind), min_side=side)
                for p in pictures
                for kind in COPY_KINDS
            ]
            vectors = encoder.encode_images(copied)
            copies.append(vectors.reshape(len(chunk), len(COPY_KINDS), -1))
            bar.update(len(chunk))
    return np.concatenate(originals), np.concatenate(copies), pixel_hashes


def at_threshold(dup: np.ndarray, non: np.ndarray, t: float) -> dict:
    tp, fp = int((dup >= t).sum()), int((non >= t).sum())
    return {
        "threshold": round(float(t), 6),
        "precision": tp / (tp + fp) if tp + fp else 1.0,
        "recall": tp / len(dup),
        "false_positives": fp,
    }


def lowest_threshold(dup: np.ndarray, non: np.ndarray, target: float) -> float | None:
    """The lowest cosine t (one of the pair scores) at which pairs scoring >= t have precision
    >= ``target``; None if no threshold reaches it."""
    scores = np.concatenate([dup, non])
    labels = np.concatenate([np.ones(len(dup), bool), np.zeros(len(non), bool)])
    order = np.argsort(-scores, kind="stable")
    scores, labels = scores[order], labels[order]
    tp, fp = np.cumsum(labels), np.cumsum(~labels)
    # Only the last of a run of tied scores is a real threshold (ties are all in or all out).
    last = np.r_[scores[1:] != scores[:-1], True]
    ok = np.flatnonzero(last & (tp / (tp + fp) >= target))
    return float(scores[ok[-1]]) if len(ok) else None


def knn_accuracy(sims: np.ndarray, labels: list[str], k: int) -> float:
    """Leave-one-out accuracy of the score-weighted vote of the k nearest (``sims`` has -inf on
    its diagonal). Ties go to the smallest label, as upload_assist._vote does."""
    top = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    right = 0
    for i, neighbours in enumerate(top):
        votes: dict[str, float] = defaultdict(float)
        for j in neighbours:
            votes[labels[j]] += max(float(sims[i, j]), 0.0)
        right += min(votes, key=lambda c: (-votes[c], c)) == labels[i]
    return right / len(labels)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="shopclip-starter", help="open_clip model name")
    parser.add_argument(
        "--pretrained",
        default=str(ROOT / "embeddings" / "starter" / "shopclip-starter.pt"),
        help="checkpoint (config beside it as <checkpoint>.json) or pretrained tag",
    )
    parser.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST)
    parser.add_argument(
        "--images-root", type=Path, default=None, help="default: the manifest's folder"
    )
    parser.add_argument("--types", type=int, default=20, help="commonest article types")
    parser.add_argument("--per-type", type=int, default=100, help="products per type")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--precision", type=float, default=0.99, help="target precision")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--top-pairs", type=int, default=10)
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    root = args.images_root or args.manifest.parent
    rows, types = sample_products(args.manifest, args.types, args.per_type, args.seed)
    labels = [r["articleType"] for r in rows]
    encoder = ClipEncoder(args.model, args.pretrained, batch_size=args.batch_size)
    print(
        f"Model {encoder.model_id} (input {encoder.image_size} px), torch threads "
        f"{torch.get_num_threads()}; {len(rows)} products of {len(types)} article types "
        f"from {args.manifest}",
        flush=True,
    )
    originals, copies, pixel_hashes = embed_sample(encoder, rows, root)

    # Duplicates: each photo against each of its copies.
    dup_by_kind = np.einsum("nd,nkd->nk", originals, copies).astype(np.float64)
    dup = dup_by_kind.ravel()
    # Non-duplicates: every pair of different products of the same type.
    sims = (originals @ originals.T).astype(np.float64)
    label_arr = np.array(labels)
    same_type = np.triu(label_arr[:, None] == label_arr[None, :], k=1)
    pi, pj = np.nonzero(same_type)
    non = sims[pi, pj]
    print(f"Pairs: {len(dup):,} duplicates, {len(non):,} non-duplicates (same type)")

    threshold = lowest_threshold(dup, non, args.precision)
    result: dict = {
        "model": args.model,
        "pretrained": args.pretrained,
        "model_id": encoder.model_id,
        "image_size": encoder.image_size,
        "manifest": str(args.manifest),
        "types": types,
        "per_type": args.per_type,
        "seed": args.seed,
        "products": len(rows),
        "duplicate_pairs": len(dup),
        "non_duplicate_pairs": len(non),
        "target_precision": args.precision,
        "threshold": threshold,
    }
    chosen = threshold if threshold is not None else 1.0
    rounded = math.ceil(chosen * 1000 - 1e-9) / 1000  # to 3 decimals, up: keeps the precision
    result["threshold_rounded_up"] = rounded
    result["at_threshold"] = at_threshold(dup, non, chosen)
    result["at_rounded"] = at_threshold(dup, non, rounded)
    result["table"] = [at_threshold(dup, non, t) for t in TABLE_THRESHOLDS]
    result["per_kind"] = {
        kind: {
            "recall_at_threshold": float((dup_by_kind[:, k] >= chosen).mean()),
            "recall_at_rounded": float((dup_by_kind[:, k] >= rounded).mean()),
            "median": float(np.median(dup_by_kind[:, k])),
            "p05": float(np.percentile(dup_by_kind[:, k], 5)),
            "min": float(dup_by_kind[:, k].min()),
        }
        for k, kind in enumerate(COPY_KINDS)
    }
    result["non_duplicates"] = {
        "median": float(np.median(non)),
        "p99": float(np.percentile(non, 99)),
        "p999": float(np.percentile(non, 99.9)),
        "max": float(non.max()),
    }
    top = np.argsort(-non, kind="stable")[: args.top_pairs]
    result["top_non_duplicates"] = [
        {
            "score": float(non[t]),
            "same_pixels": pixel_hashes[pi[t]] == pixel_hashes[pj[t]],
            "a": {k: rows[pi[t]][k] for k in ("product_id", "path", "title")},
            "b": {k: rows[pj[t]][k] for k in ("product_id", "path", "title")},
        }
        for t in top
    ]
    above = non >= chosen
    result["non_duplicates_above_threshold"] = {
        "pairs": int(above.sum()),
        "same_pixels": int(
            sum(
                pixel_hashes[a] == pixel_hashes[b]
                for a, b in zip(pi[above], pj[above], strict=True)
            )
        ),
    }

    # A new product's photo checked against every other product of the sample (all types).
    np.fill_diagonal(sims, -np.inf)
    best_other = sims.max(axis=1)
    result["warning_rate"] = {
        f"{t:.4f}": float((best_other >= t).mean()) for t in sorted({chosen, rounded, 0.97, 0.985})
    }

    result["category_accuracy"] = {f"knn_k{k}": knn_accuracy(sims, labels, k) for k in KS}
    texts = encoder.encode_texts([ZERO_SHOT_PROMPT.format(t) for t in types])
    predicted = np.argmax(originals @ texts.T, axis=1)
    result["category_accuracy"]["zero_shot"] = float(
        np.mean([types[p] == label for p, label in zip(predicted, labels, strict=True)])
    )
    result["seconds"] = round(time.perf_counter() - started, 1)
    report(result)
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=1) + "\n")
        print(f"Wrote {args.json_out}")


def report(r: dict) -> None:
    p = r["target_precision"]
    if r["threshold"] is None:
        print(f"\nNo threshold reaches precision {p}.")
    else:
        a = r["at_threshold"]
        print(
            f"\nLowest threshold with precision >= {p}: {r['threshold']:.4f} "
            f"(precision {a['precision']:.4f}, recall {a['recall']:.3f}, "
            f"{a['false_positives']} non-duplicate pairs above)"
        )
    b = r["at_rounded"]
    print(
        f"Rounded up to {r['threshold_rounded_up']:.3f}: precision {b['precision']:.4f}, "
        f"recall {b['recall']:.3f}"
    )
    print("Recall per copy kind (at threshold / rounded; median, 5th pct, min cosine):")
    for kind, k in r["per_kind"].items():
        print(
            f"  {kind:<16} {k['recall_at_threshold']:.3f} / {k['recall_at_rounded']:.3f}"
            f"   median {k['median']:.4f}  p05 {k['p05']:.4f}  min {k['min']:.4f}"
        )
    n = r["non_duplicates"]
    print(
        f"Non-duplicates (same type): median {n['median']:.4f}, p99 {n['p99']:.4f}, "
        f"p99.9 {n['p999']:.4f}, max {n['max']:.4f}"
    )
    print("threshold  precision  recall  false pos.")
    for row in r["table"]:
        print(
            f"  {row['threshold']:<8g} {row['precision']:.4f}     {row['recall']:.3f}"
            f"   {row['false_positives']}"
        )
    above = r["non_duplicates_above_threshold"]
    print(
        f"Top non-duplicate pairs ({above['pairs']} above the threshold, "
        f"{above['same_pixels']} of them the same pixels under two product ids):"
    )
    for pair in r["top_non_duplicates"]:
        same = "SAME PIXELS" if pair["same_pixels"] else "different"
        print(
            f"  {pair['score']:.4f} {same:<11} {pair['a']['product_id']} "
            f"{pair['a']['title'][:38]!r} vs {pair['b']['product_id']} "
            f"{pair['b']['title'][:38]!r}"
        )
    print(
        f"A new product's photo vs the other {r['products'] - 1:,} is warned: "
        + ", ".join(f"{v:.1%} at {t}" for t, v in r["warning_rate"].items())
    )
    c = r["category_accuracy"]
    print(
        "Category accuracy (leave one out): "
        + ", ".join(f"k={k} {c[f'knn_k{k}']:.1%}" for k in KS)
        + f"; zero-shot {c['zero_shot']:.1%} ({len(r['types'])} type names)"
    )
    print(f"({r['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
