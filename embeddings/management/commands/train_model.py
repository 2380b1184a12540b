"""``manage.py train_model``: contrastive training / fine-tuning of an open_clip model.

A thin wrapper: argument parsing here, all logic in :mod:`embeddings.training.train`.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser


class Command(BaseCommand):
    help = (
        "Train or fine-tune an open_clip model on (image, title) pairs from catalog manifests "
        "(symmetric InfoNCE). Writes PATH.pt, its config sidecar PATH.pt.json and a model card."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--manifest",
            required=True,
            help="CSV with path, product_id, title (+ metadata) columns; its product ids define the validation split",
        )
        parser.add_argument(
            "--images-root",
            default=None,
            help="folder the manifest's paths are relative to (default: the manifest's folder)",
        )
        parser.add_argument(
            "--extra-manifest",
            action="append",
            default=[],
            help="more training data (repeatable); validation ids are excluded from it too",
        )
        parser.add_argument(
            "--extra-images-root",
            action="append",
            default=[],
            help="images root for each --extra-manifest, in order",
        )
        parser.add_argument(
            "--model-name",
            required=True,
            help="open_clip model name (registered from --model-config, embeddings/starter, or built in)",
        )
        parser.add_argument(
            "--model-config",
            default=None,
            help="open_clip model config JSON to register under --model-name",
        )
        parser.add_argument(
            "--init",
            default="random",
            help="'random', a pretrained tag of the model, or a checkpoint path",
        )
        parser.add_argument("--epochs", type=float, default=1.0)
        parser.add_argument("--batch-size", type=int, default=256)
        parser.add_argument(
            "--image-size",
            type=int,
            default=None,
            help="must equal the config's vision_cfg.image_size (default: that)",
        )
        parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
        group = parser.add_mutually_exclusive_group()
        group.add_argument(
            "--val-fraction",
            type=float,
            default=None,
            help="hold out this fraction of the first manifest's product ids",
        )
        group.add_argument(
            "--val-size",
            type=int,
            default=None,
            help="hold out this many product ids of the first manifest (default 1000)",
        )
        parser.add_argument(
            "--split-salt",
            default=None,
            help="salt of the hashed split (keep the default to match manage.py evaluate --split val)",
        )
        parser.add_argument("--lr", type=float, default=1e-3)
        parser.add_argument("--weight-decay", type=float, default=0.1)
        parser.add_argument("--warmup-steps", type=int, default=200)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument(
            "--threads", type=int, default=2, help="torch CPU threads (keep low on shared machines)"
        )
        parser.add_argument(
            "--workers", type=int, default=2, help="processes decoding JPEGs for the image cache"
        )
        parser.add_argument(
            "--cache-dir",
            default=None,
            help="where decoded image arrays are cached (default: $TMPDIR/shopsearch-image-cache); 'none' disables",
        )
        parser.add_argument(
            "--title-prob",
            type=float,
            default=0.5,
            help="probability a step pairs an image with its title rather than a metadata caption",
        )
        parser.add_argument(
            "--distill-weight",
            type=float,
            default=0.0,
            help=">0: also match MiniLM sentence embeddings through a throw-away head",
        )
        parser.add_argument(
            "--label-weight",
            type=float,
            default=0.0,
            help=">0: also pull together images that share labels (supervised contrastive on the "
            "image side; see --label-columns)",
        )
        parser.add_argument(
            "--label-levels",
            default="articleType,articleType+baseColour",
            help="label levels for --label-weight: comma-separated, each one manifest column or "
            "several joined by + (default: the type, then type + colour)",
        )
        parser.add_argument("--label-temperature", type=float, default=0.1)
        parser.add_argument(
            "--group-size",
            type=int,
            default=0,
            help=">0: build batches from groups of this many images sharing the finest label "
            "level, two groups per coarsest label (e.g. 4 navy + 4 white t-shirts): positives "
            "for --label-weight and same-type hard negatives in every batch (default 0: random "
            "batches)",
        )
        parser.add_argument(
            "--label-captions",
            action="store_true",
            help="count a metadata caption ('Navy Blue Tshirts') as a positive of every image in "
            "the batch whose type and colour make it true, not only of its own image (titles "
            "stay positives of their own product)",
        )
        parser.add_argument(
            "--init-token-embeddings",
            action="store_true",
            help="initialise a native text tower's token embeddings from MiniLM (PCA)",
        )
        parser.add_argument(
            "--fp32", action="store_true", help="store fp32 weights (default: fp16, half the file)"
        )
        parser.add_argument(
            "--precision",
            default="fp32",
            choices=["fp32", "bf16"],
            help="bf16: autocast for speed (weights and loss stay fp32)",
        )
        parser.add_argument(
            "--lock-image",
            action="store_true",
            help="freeze the image tower (weights and BatchNorm statistics); train the text side only",
        )
        parser.add_argument(
            "--lock-image-trunk",
            action="store_true",
            help="freeze a timm image tower's backbone and train only its projection head with the "
            "text side: trunk features are computed once, so steps are many times faster",
        )
        parser.add_argument(
            "--trunk-views",
            type=int,
            default=2,
            help="with --lock-image-trunk: feature passes per image, the plain image then random "
            "crops/flips (default 2)",
        )
        parser.add_argument(
            "--trunk-tail",
            type=int,
            default=0,
            help="with --lock-image-trunk on a timm MobileNet/EfficientNet tower: how much of the "
            "trunk's end still trains on cached maps (1: the final 1x1 conv; 2: + the last block; "
            "default 0: nothing, pooled features cached)",
        )
        parser.add_argument(
            "--phone-views",
            type=int,
            default=0,
            help="with --lock-image-trunk: phone-photo-like views (background swap, tilt, light, "
            "blur, noise, JPEG) cached per image of the first manifest and of --photos sets",
        )
        parser.add_argument(
            "--photos",
            action="append",
            default=[],
            metavar="MANIFEST",
            help="a labelled photo set (path,label,sender_id) to train on as well; needs "
            "--label-map; the senders evaluate holds out never train",
        )
        parser.add_argument(
            "--photos-root",
            default=None,
            help="folder the --photos paths are relative to (default: each manifest's folder)",
        )
        parser.add_argument(
            "--label-map",
            default=None,
            help="JSON/CSV map of the photo labels to catalog types and prompt words "
            "(docs/evaluation/clothing-dataset-to-myntra.json)",
        )
        parser.add_argument(
            "--image-init",
            default=None,
            help="pretrained image trunk to start from: a quantised ONNX classifier (e.g. the "
            "Model Zoo's mobilenetv2-12-int8.onnx for timm mobilenetv2_100) or a state dict",
        )
        parser.add_argument(
            "--text-init",
            default=None,
            help="a checkpoint whose text side (token embedding, text tower, projection, logit "
            "scale) is copied in: keep a trained text tower when the image tower changes",
        )
        parser.add_argument("--no-augment", action="store_true")
        parser.add_argument(
            "--skip-missing",
            action="store_true",
            help="skip manifest rows whose image file is missing instead of failing",
        )
        parser.add_argument(
            "--time-limit",
            type=float,
            default=None,
            help="stop after this many minutes (the checkpoint is still written)",
        )
        parser.add_argument(
            "--output",
            required=True,
            help="checkpoint path, e.g. embeddings/starter/shopclip-starter.pt",
        )

    def handle(self, *args: Any, **opts: Any) -> None:
        from embeddings.training.cache import DEFAULT_CACHE_DIR
        from embeddings.training.data import DEFAULT_SPLIT_SALT, ManifestError
        from embeddings.training.modeling import TrainingSetupError
        from embeddings.training.train import PhotoSource, Source, TrainConfig, train

        extras, roots = opts["extra_manifest"], opts["extra_images_root"]
        if roots and len(roots) != len(extras):
            raise CommandError(
                f"{len(extras)} --extra-manifest but {len(roots)} --extra-images-root; give one root per "
                "extra manifest, in the same order (or none to use each manifest's folder)."
            )
        sources = [Source(opts["manifest"], opts["images_root"])]
        sources += [Source(m, roots[i] if roots else None) for i, m in enumerate(extras)]
        if not opts["output"].endswith(".pt"):
            raise CommandError(
                "--output must end in .pt (the config is written beside it as <output>.json)."
            )
        cache_dir = opts["cache_dir"]
        if opts["photos"] and not opts["label_map"]:
            raise CommandError(
                "--photos needs --label-map FILE (which catalog types answer each photo label)."
            )
        photo_sources = [
            PhotoSource(
                str(Path(m).resolve()),
                str(Path(opts["label_map"]).resolve()),
                str(Path(opts["photos_root"]).resolve()) if opts["photos_root"] else None,
            )
            for m in opts["photos"]
        ]
        cfg = TrainConfig(
            sources=sources,
            model_name=opts["model_name"],
            model_config=opts["model_config"],
            output=opts["output"],
            init=opts["init"],
            epochs=opts["epochs"],
            batch_size=opts["batch_size"],
            image_size=opts["image_size"],
            device=opts["device"],
            val_fraction=opts["val_fraction"],
            val_size=opts["val_size"]
            if opts["val_size"] is not None
            else (None if opts["val_fraction"] is not None else 1000),
            split_salt=opts["split_salt"] or DEFAULT_SPLIT_SALT,
            lr=opts["lr"],
            weight_decay=opts["weight_decay"],
            warmup_steps=opts["warmup_steps"],
            seed=opts["seed"],
            threads=opts["threads"],
            workers=opts["workers"],
            cache_dir=None if cache_dir == "none" else (cache_dir or str(DEFAULT_CACHE_DIR)),
            title_prob=opts["title_prob"],
            distill_weight=opts["distill_weight"],
            label_weight=opts["label_weight"],
            label_levels=tuple(
                tuple(c.strip() for c in level.split("+") if c.strip())
                for level in opts["label_levels"].split(",")
                if level.strip()
            ),
            label_temperature=opts["label_temperature"],
            group_size=opts["group_size"],
            label_captions=opts["label_captions"],
            init_token_embeddings=opts["init_token_embeddings"],
            half_checkpoint=not opts["fp32"],
            augment=not opts["no_augment"],
            precision=opts["precision"],
            lock_image=opts["lock_image"],
            lock_image_trunk=opts["lock_image_trunk"],
            trunk_views=opts["trunk_views"],
            trunk_tail=opts["trunk_tail"],
            phone_views=opts["phone_views"],
            photo_sources=photo_sources,
            image_init=opts["image_init"],
            text_init=opts["text_init"],
            skip_missing=opts["skip_missing"],
            time_limit_minutes=opts["time_limit"],
            command="python manage.py train_model "
            + shlex.join(sys.argv[2:] if len(sys.argv) > 2 else []),
        )
        try:
            card = train(cfg, log=lambda msg: self.stdout.write(msg))
        except (ManifestError, TrainingSetupError) as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            self.style.SUCCESS(
                f"wrote {cfg.output} ({card.get('checkpoint_bytes', 0) / 1e6:.1f} MB), its config "
                f"{cfg.output}.json and the card; evaluate it with: python manage.py evaluate --manifest "
                f"{opts['manifest']} --model {cfg.model_name} --pretrained {cfg.output} --split val"
            )
        )
