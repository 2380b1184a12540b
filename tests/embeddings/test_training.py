"""Training pipeline: manifest checks, the deterministic split, and a tiny end-to-end training run
on generated coloured-shape images (no shared data, no network)."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from embeddings.encoder import ClipEncoder, register_model_config
from embeddings.training.data import (
    ManifestError,
    captions_for,
    read_manifest,
    split_records,
    validation_ids,
)

COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 180, 40),
    "blue": (30, 60, 220),
    "yellow": (235, 220, 30),
}
SHAPES = ("circle", "square", "triangle")
TRAIN_MODEL = "test-train-tiny"
TRAIN_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 8, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1},
}


def _draw(
    shape: str,
    colour: tuple[int, int, int],
    rng: random.Random,
    size: int = 32,
    *,
    canvas: Image.Image | None = None,
    radius: tuple[int, int] = (8, 13),
    margin: int = 0,
) -> Image.Image:
    """``shape`` in ``colour`` at a random place on a near-white square of ``size`` (or on
    ``canvas``), at least ``margin`` px from the left and right edges."""
    img = canvas if canvas is not None else Image.new("RGB", (size, size), (245, 245, 245))
    w, h = img.size
    d = ImageDraw.Draw(img)
    r = rng.randint(*radius)
    cx, cy = rng.randint(r + margin, w - r - margin), rng.randint(r, h - r)
    box = (cx - r, cy - r, cx + r, cy + r)
    if shape == "circle":
        d.ellipse(box, fill=colour)
    elif shape == "square":
        d.rectangle(box, fill=colour)
    else:
        d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
    return img


def make_shapes_manifest(root: Path, per_pair: int = 5, seed: int = 0) -> Path:
    """``per_pair`` images of each colour x shape, with titles like 'red circle'."""
    rng = random.Random(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    pid = 1000
    for colour, rgb in COLOURS.items():
        for shape in SHAPES:
            for _ in range(per_pair):
                pid += 1
                rel = f"images/{pid}.png"
                _draw(shape, rgb, rng).save(root / rel)
                rows.append(
                    {
                        "path": rel,
                        "product_id": str(pid),
                        "title": f"{colour} {shape}",
                        "articleType": shape,
                        "baseColour": colour,
                        "usage": "",
                    }
                )
    manifest = root / "manifest.csv"
    with manifest.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return manifest


# -- fast checks ------------------------------------------------------------------------------


def test_missing_column_says_what_to_add(tmp_path):
    (tmp_path / "m.csv").write_text("path,product_id\na.jpg,1\n")
    with pytest.raises(ManifestError, match=r"lacks column\(s\) \['title'\]"):
        read_manifest(tmp_path / "m.csv", tmp_path)


def test_missing_images_are_counted(tmp_path):
    manifest = make_shapes_manifest(tmp_path, per_pair=1)
    for p in list((tmp_path / "images").iterdir())[:3]:
        p.unlink()
    with pytest.raises(ManifestError, match=r"^3 image file\(s\) listed"):
        read_manifest(manifest, tmp_path)
    assert len(read_manifest(manifest, tmp_path, drop_missing=True)) == 12 - 3


def test_split_is_deterministic_disjoint_and_order_free(tmp_path):
    records = read_manifest(make_shapes_manifest(tmp_path, per_pair=3), tmp_path)
    val = validation_ids(records, size=10)
    assert len(val) == 10
    assert validation_ids(list(reversed(records)), size=10) == val
    train, held = split_records(records, val)
    assert {r.product_id for r in train}.isdisjoint({r.product_id for r in held})
    assert len(train) + len(held) == len(records)
    by_fraction = validation_ids(records, fraction=0.5)
    assert 0 < len(by_fraction) < len(records)
    with pytest.raises(ManifestError):
        validation_ids(records, size=5, fraction=0.1)


def test_captions_include_title_and_metadata(tmp_path):
    records = read_manifest(make_shapes_manifest(tmp_path, per_pair=1), tmp_path)
    caps = captions_for(records[0])
    assert caps[0] == "red circle"
    assert "a photo of circle" in caps and "red circle" in caps


# -- end to end -------------------------------------------------------------------------------


@pytest.mark.slow
def test_tiny_training_beats_chance_and_checkpoint_reloads(tmp_path):
    from embeddings.training.train import Source, TrainConfig, train_model

    torch.set_num_threads(2)
    manifest = make_shapes_manifest(tmp_path / "data", per_pair=6)
    register_model_config(TRAIN_MODEL, TRAIN_CFG)
    out = tmp_path / "out" / "tiny.pt"
    cfg = TrainConfig(
        sources=[Source(str(manifest), str(tmp_path / "data"))],
        model_name=TRAIN_MODEL,
        output=str(out),
        epochs=25,
        batch_size=16,
        val_size=24,
        lr=3e-3,
        warmup_steps=10,
        cache_dir=None,
        workers=1,
        title_prob=0.7,
        half_checkpoint=False,
        augment=False,
        command="pytest",
    )
    model, card = train_model(cfg, log=lambda _msg: None)

    # Held-out images: classify each into the 12 "colour shape" captions (chance = 1/12).
    records = read_manifest(manifest, tmp_path / "data")
    val_ids = validation_ids(records, size=24)
    held = [r for r in records if r.product_id in val_ids]
    labels = sorted({r.title for r in records})
    encoder = ClipEncoder(TRAIN_MODEL, str(out), batch_size=16)
    images = [Image.open(r.image_path).convert("RGB") for r in held]
    img = encoder.encode_images(images)
    txt = encoder.encode_texts(labels)
    pred = np.argmax(img @ txt.T, axis=1)
    acc = float(np.mean([labels[p] == r.title for p, r in zip(pred, held, strict=True)]))
    print(f"held-out accuracy {acc:.3f}")
    assert acc > 3 / 12, f"held-out accuracy {acc:.2f} is not clearly above chance (1/12)"

    # The checkpoint reloads through ClipEncoder (sidecar config) with the same embeddings.
    x = torch.stack([encoder._preprocess(i) for i in images])
    with torch.no_grad():
        direct = torch.nn.functional.normalize(model.encode_image(x).float(), dim=-1).numpy()
    np.testing.assert_allclose(img, direct, atol=1e-5)

    sidecar = json.loads(Path(str(out) + ".json").read_text())
    assert sidecar["model_name"] == TRAIN_MODEL and sidecar["model_cfg"]["embed_dim"] == 32
    card_file = out.with_name("tiny.card.json")
    card_on_disk = json.loads(card_file.read_text())
    assert card_on_disk["embedding_dim"] == 32
    assert card_on_disk["parameters"] == card["parameters"] > 0
    assert card_on_disk["split"]["validation_products"] == 24
    assert "zero_shot_type_acc" in card_on_disk["validation_metrics"]
    assert card_on_disk["command"] == "pytest"

    # Strict open_clip loading of the fp16 variant works too (what the starter ships).
    import open_clip

    from embeddings.training.checkpoint import save_checkpoint

    half = tmp_path / "out" / "tiny-half.pt"
    save_checkpoint(model, half, TRAIN_MODEL, TRAIN_CFG, half=True)
    reloaded = open_clip.create_model(TRAIN_MODEL, pretrained=str(half))
    with torch.no_grad():
        again = torch.nn.functional.normalize(reloaded.encode_image(x).float(), dim=-1).numpy()
    assert float(np.min(np.sum(again * direct, axis=1))) > 0.999


def one_epoch_config(tmp_path: Path, **overrides):
    """A one-epoch, 8-per-batch config on 24 shape images (12 held out), for wiring checks."""
    from embeddings.training.train import Source, TrainConfig

    torch.set_num_threads(2)
    data = tmp_path / "data"
    if not (data / "manifest.csv").exists():
        make_shapes_manifest(data, per_pair=2)
    register_model_config(TRAIN_MODEL, TRAIN_CFG)
    fields = {
        "sources": [Source(str(data / "manifest.csv"), str(data))],
        "model_name": TRAIN_MODEL,
        "output": str(tmp_path / "a.pt"),
        "epochs": 1,
        "batch_size": 8,
        "val_size": 12,
        "cache_dir": None,
        "workers": 1,
        "warmup_steps": 1,
        "half_checkpoint": False,
        "augment": False,
        **overrides,
    }
    return TrainConfig(**fields)


@pytest.mark.slow
def test_lock_image_trains_the_text_side_only(tmp_path):
    from embeddings.training.train import train_model

    base = one_epoch_config(tmp_path)
    first, _ = train_model(base, log=lambda _msg: None)
    base.output, base.init, base.lock_image = str(tmp_path / "b.pt"), str(tmp_path / "a.pt"), True
    second, card = train_model(base, log=lambda _msg: None)
    assert card["image_tower_locked"] is True
    for (name, p1), p2 in zip(
        first.visual.state_dict().items(), second.visual.state_dict().values(), strict=True
    ):
        assert torch.equal(p1, p2), f"image tower weight {name} changed"
    assert not torch.equal(first.text_projection, second.text_projection)


def test_native_bf16_is_read_from_the_cpu_flags():
    from embeddings.training.train import cpu_has_native_bf16

    assert cpu_has_native_bf16("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n") is False
    assert cpu_has_native_bf16("flags\t\t: avx2 avx512f avx512_bf16\n") is True
    assert cpu_has_native_bf16("flags\t\t: avx2 amx_bf16 amx_tile\n") is True
    assert cpu_has_native_bf16("Hardware\t: BCM2835\n") is None


TIMM_MODEL = "test-train-tiny-timm"
TIMM_CFG = {
    "embed_dim": 32,
    "vision_cfg": {
        "timm_model_name": "resnet10t",
        "timm_model_pretrained": False,
        "timm_pool": "avg",
        "timm_proj": "linear",
        "image_size": 32,
    },
    "text_cfg": TRAIN_CFG["text_cfg"],
}


@pytest.mark.slow
def test_lock_image_trunk_trains_head_and_text_from_cached_trunk_features(tmp_path):
    from embeddings.training.modeling import TrainingSetupError
    from embeddings.training.train import train_model

    register_model_config(TIMM_MODEL, TIMM_CFG)
    cache = tmp_path / "cache"
    base = one_epoch_config(
        tmp_path, model_name=TIMM_MODEL, cache_dir=str(cache), augment=True, label_weight=1.0
    )
    first, _ = train_model(base, log=lambda _msg: None)
    base.output, base.init, base.lock_image_trunk = (
        str(tmp_path / "b.pt"),
        str(tmp_path / "a.pt"),
        True,
    )
    base.epochs = 3
    second, card = train_model(base, log=lambda _msg: None)
    assert card["image_tower_locked"] == "trunk (head trained)"
    trunk1, trunk2 = first.visual.trunk.state_dict(), second.visual.trunk.state_dict()
    for name, t in trunk1.items():  # weights and BatchNorm statistics alike
        assert torch.equal(t, trunk2[name]), f"trunk tensor {name} changed"
    assert not torch.equal(first.visual.head.proj.weight, second.visual.head.proj.weight)
    assert not torch.equal(first.text_projection, second.text_projection)
    # The trunk features (plain + one augmented view of 12 training images) were cached once...
    cached = list(cache.glob("trunk-*.npy"))
    assert len(cached) == 1
    feats = np.load(cached[0])
    assert feats.shape == (2, 12, first.visual.trunk.num_features)
    assert not np.allclose(feats[0], feats[1])  # the augmented view differs from the plain one
    # ... and they are what the frozen trunk computes for the plain images.
    import open_clip

    from embeddings.training.train import _model_norm, load_data, to_model_input

    data = load_data(base, 32, open_clip.get_tokenizer(TIMM_MODEL))
    mean, std = _model_norm(second)
    with torch.no_grad():
        direct = second.visual.trunk(to_model_input(data.images, mean, std, 32)).numpy()
    np.testing.assert_allclose(feats[0], direct, rtol=1e-4, atol=1e-5)
    # A second run reads the cache instead of recomputing it (same file, untouched).
    mtime = cached[0].stat().st_mtime_ns
    base.output = str(tmp_path / "c.pt")
    train_model(base, log=lambda _msg: None)
    assert cached[0].stat().st_mtime_ns == mtime and len(list(cache.glob("trunk-*.npy"))) == 1
    # Clear errors: a non-timm image tower, and both lock options at once.
    vit = one_epoch_config(tmp_path, output=str(tmp_path / "d.pt"), lock_image_trunk=True)
    with pytest.raises(TrainingSetupError, match="timm image tower"):
        train_model(vit, log=lambda _msg: None)
    base.lock_image = True
    with pytest.raises(TrainingSetupError, match="pass one of them"):
        train_model(base, log=lambda _msg: None)


# -- label-aware (supervised contrastive) term -----------------------------------------------


def test_label_ids_per_level_and_unknown_is_minus_one():
    from embeddings.training.data import Record
    from embeddings.training.train import label_ids

    recs = [
        Record("a", "1", "t", {"articleType": "Shirts", "baseColour": "Navy Blue"}),
        Record("b", "2", "t", {"articleType": "shirts", "baseColour": "navy  blue"}),
        Record("c", "3", "t", {"articleType": "Shirts", "baseColour": "Red"}),
        Record("d", "4", "t", {"articleType": "Watches", "baseColour": ""}),
        Record("e", "5", "t", {"articleType": "", "baseColour": "Red"}),
    ]
    ids = label_ids(recs, [("articleType",), ("articleType", "baseColour"), ("baseColour",)])
    # Level 0: type (case and spacing insensitive); level 1: type + colour; level 2: colour.
    assert ids[0, 0] == ids[1, 0] == ids[2, 0] != ids[3, 0]
    assert ids[0, 1] == ids[1, 1] != ids[2, 1]
    assert ids[3, 1] == -1 and ids[4, 0] == -1 and ids[4, 1] == -1
    assert ids[2, 2] == ids[4, 2] != ids[0, 2] == ids[1, 2] and ids[3, 2] == -1


def test_label_contrastive_loss_prefers_features_grouped_by_label():
    from embeddings.training.train import label_contrastive_loss

    labels = torch.tensor([[0], [0], [1], [1]])
    grouped = torch.nn.functional.normalize(
        torch.tensor([[1.0, 0.1], [1.0, -0.1], [0.1, 1.0], [-0.1, 1.0]]), dim=-1
    )
    crossed = grouped[[0, 2, 1, 3]]  # same features, labels now split across the two groups
    good = label_contrastive_loss(grouped, labels, 0.1)
    bad = label_contrastive_loss(crossed, labels, 0.1)
    assert good < 0.01 < 1.0 < bad
    # Rows without a positive (label -1, or alone in the batch) contribute nothing.
    lonely = torch.tensor([[0], [1], [2], [-1]])
    assert float(label_contrastive_loss(grouped, lonely, 0.1)) == 0.0
    # The gradient flows to the features.
    feats = grouped.clone().requires_grad_(True)
    label_contrastive_loss(feats, labels, 0.1).backward()
    assert feats.grad is not None and float(feats.grad.abs().sum()) > 0


@pytest.mark.slow
def test_label_weight_trains_and_says_when_columns_are_missing(tmp_path):
    from embeddings.training.modeling import TrainingSetupError
    from embeddings.training.train import train_model

    plain, _ = train_model(one_epoch_config(tmp_path), log=lambda _msg: None)
    cfg = one_epoch_config(tmp_path, output=str(tmp_path / "b.pt"), label_weight=1.0)
    labelled, card = train_model(cfg, log=lambda _msg: None)
    assert card["training_config"]["label_weight"] == 1.0
    # Same seed and data: the image tower differs only because the label term added gradient.
    changed = [
        not torch.equal(a, b)
        for a, b in zip(
            plain.visual.state_dict().values(), labelled.visual.state_dict().values(), strict=True
        )
    ]
    assert any(changed)
    cfg.label_levels = (("no_such_column",),)
    with pytest.raises(TrainingSetupError, match="--label-levels"):
        train_model(cfg, log=lambda _msg: None)
    # Grouped batches draw other items than the plain epoch order, so the weights differ again.
    grouped_cfg = one_epoch_config(
        tmp_path, output=str(tmp_path / "g.pt"), label_weight=1.0, group_size=2
    )
    grouped, card = train_model(grouped_cfg, log=lambda _msg: None)
    assert card["training_config"]["group_size"] == 2
    assert not torch.equal(
        next(iter(grouped.visual.state_dict().values())),
        next(iter(labelled.visual.state_dict().values())),
    )
    grouped_cfg.label_weight = 0.0
    grouped_cfg.label_levels = (("no_such_column",),)
    with pytest.raises(TrainingSetupError, match="--group-size"):
        train_model(grouped_cfg, log=lambda _msg: None)


def test_metadata_captions_claim_their_columns_and_titles_claim_nothing():
    from embeddings.training.data import Record, captions_with_claims

    rec = Record(
        "a",
        "1",
        "Turtle Men Navy Shirt",
        {
            "articleType": "Shirts",
            "baseColour": "Navy Blue",
            "usage": "Casual",
            "subCategory": "Topwear",
        },
    )
    claims = dict(captions_with_claims(rec))
    assert claims["Turtle Men Navy Shirt"] == ()
    assert claims["Shirts"] == claims["a photo of Shirts"] == ("articleType",)
    assert claims["Navy Blue Shirts"] == ("articleType", "baseColour")
    assert claims["Casual Shirts"] == ("articleType", "usage")
    assert claims["Navy Blue Topwear"] == ("subCategory", "baseColour")
    assert captions_for(rec) == [c for c, _ in captions_with_claims(rec)]


def test_caption_positives_follow_the_claimed_labels():
    from embeddings.training.train import caption_positives

    # Columns: type, colour. Items: navy shirt, navy shirt, white shirt, navy jeans.
    items = np.array([[0, 10], [0, 10], [0, 11], [1, 10]])
    # The texts drawn for them: "Navy Blue Shirts", item 1's title, "Shirts", "Navy Blue Jeans".
    claims = np.array([[0, 10], [-1, -1], [0, -1], [1, 10]])
    pos = caption_positives(items, claims).numpy()
    assert pos[:, 0].tolist() == [True, True, False, False]  # both navy shirts, not the white one
    assert not pos[:, 1].any()  # a title is nobody's extra positive
    assert pos[:, 2].tolist() == [True, True, True, False]  # every shirt
    assert pos[:, 3].tolist() == [False, False, False, True]


def test_contrastive_loss_counts_label_positives_as_targets():
    from embeddings.training.train import contrastive_loss

    norm = torch.nn.functional.normalize
    # Two navy shirts (images 0, 1) and a white one (2); text 0 is "Navy Blue Shirts" (drawn for
    # image 0), texts 1 and 2 are the other two products' titles.
    img = norm(torch.tensor([[1.0, 0.3], [1.0, -0.3], [-1.0, 0.0]]), dim=-1)
    titles = norm(torch.tensor([[1.0, -0.3], [-1.0, 0.0]]), dim=-1)
    between = torch.cat([norm(torch.tensor([[1.0, 0.0]]), dim=-1), titles])  # text 0 between both
    on_own = torch.cat([img[:1], titles])  # text 0 on its own image only
    ids = torch.tensor([0, 1, 2])
    scale = torch.tensor(20.0)
    positives = torch.tensor([[True, False, False], [True, False, False], [False, False, False]])
    # Plain InfoNCE counts image 1 as a negative of text 0, so it prefers text 0 on image 0;
    # with the label positives it prefers text 0 where both navy shirts are.
    assert contrastive_loss(img, on_own, scale, ids) < contrastive_loss(img, between, scale, ids)
    assert contrastive_loss(img, between, scale, ids, positives) < contrastive_loss(
        img, on_own, scale, ids, positives
    )
    # No extra positives is exactly the caption-id rule.
    none = torch.zeros(3, 3, dtype=torch.bool)
    assert torch.equal(
        contrastive_loss(img, between, scale, ids, none), contrastive_loss(img, between, scale, ids)
    )


@pytest.mark.slow
def test_label_captions_train_and_are_recorded(tmp_path):
    from embeddings.training.train import load_data, train_model

    plain_cfg = one_epoch_config(tmp_path)
    plain, _ = train_model(plain_cfg, log=lambda _msg: None)
    cfg = one_epoch_config(tmp_path, output=str(tmp_path / "c.pt"), label_captions=True)
    aware, card = train_model(cfg, log=lambda _msg: None)
    assert card["training_config"]["label_captions"] is True
    # Same seed and data: only the extra positives differ, so the weights do too.
    assert any(
        not torch.equal(a, b)
        for a, b in zip(plain.state_dict().values(), aware.state_dict().values(), strict=True)
    )
    # Each caption's claims are the values of the item it came from.
    import open_clip

    data = load_data(cfg, 32, open_clip.get_tokenizer(TRAIN_MODEL))
    for i, options in enumerate(data.caption_lists):
        for cid in options[1:]:  # metadata captions claim values, and they are the item's own
            claimed = data.caption_claims[cid]
            held = claimed >= 0
            assert held.any()
            assert (claimed[held] == data.item_values[i][held]).all()
    claims = {c: data.caption_claims[k] for k, c in enumerate(data.captions)}
    # Type (column 0) only; type + colour (columns 0, 1). A title that reads exactly like a
    # metadata caption ("red circle") claims what the metadata caption claims.
    assert (claims["circle"] >= 0).tolist() == [True, False, False, False]
    assert (claims["red circle"] >= 0).tolist() == [True, True, False, False]


def test_grouped_batches_hold_label_groups_and_same_type_hard_negatives():
    from embeddings.training.train import GroupedBatches

    rng = np.random.default_rng(0)
    n = 600
    coarse = rng.integers(0, 6, n)  # 6 "types"
    fine = coarse * 10 + rng.integers(0, 5, n)  # 5 "colours" each
    labels = np.stack([coarse, fine], 1)
    labels[:20] = -1  # unlabelled rows can still be drawn
    sampler = GroupedBatches(labels, batch_size=48, group_size=4)
    with_positive = same_type_other_colour = 0
    seen: set[int] = set()
    for _ in range(40):
        batch = sampler.sample(rng)
        assert len(batch) == 48 and len(set(batch.tolist())) == 48
        assert np.all(np.diff(batch) > 0)  # sorted, no repeats
        seen.update(batch.tolist())
        f, c = labels[batch, 1], labels[batch, 0]
        same_fine = (f[:, None] == f[None, :]) & (f[:, None] >= 0)
        np.fill_diagonal(same_fine, False)
        with_positive += int(same_fine.any(1).sum())
        same_type_other_colour += int(((c[:, None] == c[None, :]) & ~same_fine).sum())
    # Random batches of 48 from 30 fine groups give ~80% of rows a positive; groups of 4
    # give nearly all of them one.
    assert with_positive / (40 * 48) > 0.95
    assert same_type_other_colour > 0
    assert len(seen) > 0.9 * n  # sampling still covers the training set
    # Fewer items than a batch: everything, once.
    assert GroupedBatches(labels[:10], 48, 4).sample(rng).tolist() == list(range(10))
