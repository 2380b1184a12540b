"""How much shopper vocabulary a text tower understands: synonym -> articleType, text only.

For each shopper word the catalog metadata never uses ("sneakers", "tee", ...) the probe ranks
the catalog's articleType names by cosine similarity and counts a hit when the best one is a
correct type. Compares the full MiniLM (the teacher the starter's tower was distilled from), a
checkpoint's own text tower, and a random-init tower of the same architecture.

    .venv/bin/python scripts/text_tower_probe.py --manifest ../shared/datasets/myntra-224/manifest.csv \
        --model shopclip-starter --pretrained embeddings/starter/shopclip-starter.pt
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from embeddings.management.commands.evaluate import SYNONYM_QUERIES  # noqa: E402


def probe(encode, types: list[str]) -> float:
    queries = [(q, rel) for q, rel in SYNONYM_QUERIES.items() if rel & set(types)]
    q = encode([w for w, _ in queries])
    t = encode(types)
    best = np.argmax(q @ t.T, axis=1)
    return float(np.mean([types[b] in rel for b, (_, rel) in zip(best, queries, strict=True)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--model", default="shopclip-starter")
    parser.add_argument("--pretrained", required=True)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(2)
    from embeddings.encoder import ClipEncoder
    from embeddings.training.teacher import minilm_embed

    with open(args.manifest, newline="") as fh:
        types = sorted({row["articleType"] for row in csv.DictReader(fh) if row["articleType"]})
    results = {
        "MiniLM (teacher, 22.7M params)": probe(
            lambda xs: minilm_embed(list(xs)).astype(np.float32), types
        )
    }
    results[f"{args.model} text tower"] = probe(
        ClipEncoder(args.model, args.pretrained).encode_texts, types
    )
    torch.manual_seed(0)
    results["random-init tower"] = probe(ClipEncoder(args.model, None).encode_texts, types)
    print(
        json.dumps(
            {"synonym_to_type_top1": results, "types": len(types), "queries": len(SYNONYM_QUERIES)},
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
