"""Text-tower ablation against a fixed, trained image tower.

Isolates the text-tower recipe from image-tower training (which is what makes full runs
expensive on CPU): the trained checkpoint's image embeddings of every training image are
computed once, then fresh text towers of the same architecture are trained against them for the
same number of steps with different recipes, and scored on the held-out products (text->image,
title->product, zero-shot, and shopper-synonym queries the captions never contain).

Variants: distillation from MiniLM + MiniLM token-embedding init (the starter's recipe), token init
only, and neither.

    .venv/bin/python scripts/text_tower_ablation.py --checkpoint embeddings/starter/shopclip-starter.pt \
        --steps 500 --out /tmp/text_tower_ablation.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--model-name", default="shopclip-starter")
    parser.add_argument("--manifest", default=str(DATA / "myntra-224" / "manifest.csv"))
    parser.add_argument("--extra-manifest", default=str(DATA / "myntra-small" / "manifest.csv"))
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--variants", default="distill+tokinit,tokinit,plain")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    import torch
    import torch.nn.functional as F
    from tqdm import tqdm

    from embeddings.evaluation import precision_at_k, retrieval_report
    from embeddings.management.commands.evaluate import SYNONYM_QUERIES
    from embeddings.training.modeling import (
        create_model,
        init_token_embeddings_from_minilm,
        resolve_model_config,
    )
    from embeddings.training.teacher import minilm_embed, minilm_vocabulary_words
    from embeddings.training.train import (
        Source,
        TrainConfig,
        contrastive_loss,
        encode_uint8_images,
        load_data,
        text_encoder_fn,
    )

    torch.set_num_threads(args.threads)
    cfg = TrainConfig(
        sources=[Source(args.manifest), Source(args.extra_manifest)],
        model_name=args.model_name,
        output="/dev/null",
        init=args.checkpoint,
        val_size=1000,
    )
    model_cfg = resolve_model_config(args.model_name, None, args.checkpoint)
    trained, tokenizer = create_model(args.model_name, args.checkpoint)
    trained.eval()
    size = int(model_cfg["vision_cfg"]["image_size"])
    data = load_data(cfg, size, tokenizer)
    mean, std = trained.visual.image_mean, trained.visual.image_std
    with torch.autocast("cpu", dtype=torch.bfloat16):
        train_img = torch.from_numpy(
            encode_uint8_images(trained, data.images, mean, std, size, batch=512)
        ).float()
    val_img = encode_uint8_images(trained, data.val_images, mean, std, size)
    types = [r.get("articleType") for r in data.val_records]
    teacher_caps = torch.from_numpy(minilm_embed(data.captions).astype(np.float32))
    words = minilm_vocabulary_words()
    teacher_words = torch.from_numpy(minilm_embed(words).astype(np.float32))
    word_tokens = torch.cat(
        [tokenizer(words[s : s + 4096]) for s in range(0, len(words), 4096)]
    ).long()

    results: dict[str, dict[str, float]] = {}
    for variant in args.variants.split(","):
        torch.manual_seed(0)
        rng = np.random.default_rng(0)
        model, _ = create_model(args.model_name, "random")
        if "tokinit" in variant:
            init_token_embeddings_from_minilm(model)
        distill = "distill" in variant
        text_params = [p for n, p in model.named_parameters() if not n.startswith("visual.")]
        head = torch.nn.Linear(int(model_cfg["embed_dim"]), teacher_caps.shape[1])
        opt = torch.optim.AdamW(text_params + list(head.parameters()), lr=args.lr, weight_decay=0.0)
        started = time.time()
        for step in tqdm(range(args.steps), desc=variant, unit="step"):
            lr = (
                args.lr
                * min(1.0, (step + 1) / 50)
                * 0.5
                * (1 + math.cos(math.pi * step / args.steps))
            )
            for g in opt.param_groups:
                g["lr"] = lr
            idx = rng.choice(len(train_img), size=args.batch_size, replace=False)
            caps = []
            for i in idx:
                options = data.caption_lists[i]
                caps.append(
                    options[0]
                    if len(options) == 1 or rng.random() < 0.5
                    else options[1 + int(rng.integers(len(options) - 1))]
                )
            cap_ids = torch.tensor(caps)
            txt = F.normalize(model.encode_text(data.tokens[cap_ids]).float(), dim=-1)
            img = F.normalize(train_img[idx], dim=-1)
            loss = contrastive_loss(img, txt, model.logit_scale.exp().clamp(max=100.0), cap_ids)
            if distill:
                pred = F.normalize(head(txt), dim=-1)
                loss = loss + 0.5 * (1 - (pred * teacher_caps[cap_ids]).sum(-1).mean())
                w_idx = torch.randint(len(word_tokens), (128,))
                w = F.normalize(
                    head(F.normalize(model.encode_text(word_tokens[w_idx]).float(), dim=-1)), dim=-1
                )
                loss = loss + 0.5 * (1 - (w * teacher_words[w_idx]).sum(-1).mean())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        model.eval()
        encode = text_encoder_fn(model, tokenizer)
        rep = retrieval_report(
            val_img,
            [r.title for r in data.val_records],
            types,
            [r.get("baseColour") for r in data.val_records],
            encode,
        )
        present = set(types)
        queries = [(q, rel) for q, rel in SYNONYM_QUERIES.items() if rel & present]
        ranked = np.argsort(-(encode([q for q, _ in queries]) @ val_img.T), axis=1)[:, :10]
        rel = [{i for i, t in enumerate(types) if t in r} for _, r in queries]
        rep["synonym_p@10"] = precision_at_k(ranked.tolist(), rel, 10)
        rep["minutes"] = (time.time() - started) / 60
        results[variant] = {k: round(float(v), 4) for k, v in rep.items()}
        print(variant, json.dumps(results[variant]), flush=True)
    payload = {
        "checkpoint": args.checkpoint,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "results": results,
    }
    if args.out:
        Path(args.out).write_text(json.dumps(payload, indent=2))
    print(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
