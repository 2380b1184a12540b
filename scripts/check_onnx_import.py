#!/usr/bin/env python
"""Checks an ONNX backbone import on real photos: the float timm tower that
``train_model --image-init`` builds against onnxruntime running the quantised file itself.

Prints top-1 agreement of the ImageNet classes and the cosine of the logits, overall and per
photo set, for the plain import (ImageNet normalisation) and for the tower as open_clip feeds
it (OpenAI normalisation folded into the stem).

    python scripts/check_onnx_import.py ../shared/models/mobilenetv2-imagenet/mobilenetv2-12-int8.onnx \
        --photos ../shared/datasets/shopper-photos/manifest.csv \
        --photos ../shared/datasets/myntra-224/manifest.csv --n 100
"""

from __future__ import annotations

import argparse
import csv
import random
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from embeddings.training.onnx_import import (  # noqa: E402
    IMAGENET_MEAN,
    IMAGENET_STD,
    OPENAI_MEAN,
    OPENAI_STD,
    fold_input_normalisation,
    load_onnx_into_trunk,
)


def preprocess(path: str, mean, std, size: int = 224) -> np.ndarray:
    """The Model Zoo's preprocessing: shorter side 256, centre crop 224, normalise, CHW."""
    from PIL import Image

    img = Image.open(path).convert("RGB")
    w, h = img.size
    scale = 256 / min(w, h)
    img = img.resize((round(w * scale), round(h * scale)), Image.BILINEAR)
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    arr = np.asarray(img.crop((left, top, left + size, top + size)), np.float32) / 255.0
    return ((arr - np.array(mean)) / np.array(std)).transpose(2, 0, 1).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("onnx")
    parser.add_argument("--model", default="mobilenetv2_100", help="the timm architecture")
    parser.add_argument("--photos", action="append", required=True, help="a CSV with a path column")
    parser.add_argument("--n", type=int, default=100, help="photos sampled per set")
    args = parser.parse_args()

    import onnxruntime as ort
    import timm
    import torch

    torch.set_num_threads(1)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(args.onnx, options, providers=["CPUExecutionProvider"])
    plain = timm.create_model(args.model, pretrained=False).eval()
    print(load_onnx_into_trunk(plain, args.onnx))
    folded = timm.create_model(args.model, pretrained=False).eval()
    load_onnx_into_trunk(folded, args.onnx)
    fold_input_normalisation(folded)

    rng = random.Random(0)
    for manifest in args.photos:
        with open(manifest, newline="", encoding="utf-8") as fh:
            rows = [r for r in csv.DictReader(fh) if r.get("path")]
        paths = [
            str(Path(manifest).parent / r["path"]) for r in rng.sample(rows, min(args.n, len(rows)))
        ]
        x_in = np.stack([preprocess(p, IMAGENET_MEAN, IMAGENET_STD) for p in paths])
        x_oa = np.stack([preprocess(p, OPENAI_MEAN, OPENAI_STD) for p in paths])
        ref = np.concatenate(
            [
                session.run(None, {session.get_inputs()[0].name: x_in[i : i + 16]})[0]
                for i in range(0, len(x_in), 16)
            ]
        )
        with torch.no_grad():
            outs = {
                "import, ImageNet normalisation": plain(torch.from_numpy(x_in)).numpy(),
                "open_clip tower (OpenAI normalisation folded in)": folded(
                    torch.from_numpy(x_oa)
                ).numpy(),
            }
        for name, out in outs.items():
            agree = float((out.argmax(1) == ref.argmax(1)).mean())
            cos = (out * ref).sum(1) / np.linalg.norm(out, axis=1) / np.linalg.norm(ref, axis=1)
            print(
                f"{Path(manifest).parent.name}: {len(paths)} photos, {name}: top-1 agreement "
                f"with onnxruntime {agree:.3f}, logit cosine mean {cos.mean():.4f} (min {cos.min():.4f})"
            )


if __name__ == "__main__":
    main()
