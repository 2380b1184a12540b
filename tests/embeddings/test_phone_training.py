"""Frozen-trunk tail training from a pretrained ONNX backbone, with phone-photo views and a
labelled photo set (train_model --image-init --text-init --lock-image-trunk --trunk-tail
--phone-views --photos --label-map). Everything is generated in the test: shape images, shape
"phone photos" with sender ids, a label map and a quantised tiny MobileNetV2."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from embeddings.encoder import register_model_config
from embeddings.training.data import photo_sender_is_validation
from embeddings.training.modeling import TrainingSetupError
from tests.embeddings.test_onnx_import import ONNX_TOWER_CFG, ONNX_TOWER_MODEL
from tests.embeddings.test_training import (
    COLOURS,
    TRAIN_CFG,
    TRAIN_MODEL,
    _draw,
    one_epoch_config,
)

# Photo labels -> the shape manifest's articleType values (make_shapes_manifest: circle,
# square, triangle) and the words a shopper would use.
LABEL_MAP = {
    "labels": {
        "Round": {"catalog_types": ["circle"], "prompt": "round thing"},
        "Box": {"catalog_types": ["square"], "prompt": "box"},
        "Pyramid": {"catalog_types": ["triangle"], "prompt": "pyramid"},
    },
    "ignore": [{"label": "Blurry", "reason": "unusable"}],
}
SHAPE_OF = {"Round": "circle", "Box": "square", "Pyramid": "triangle"}


def _draw_photo(shape: str, rng: random.Random) -> Image.Image:
    """A 'phone photo': a non-square frame, a room-coloured noisy background, the shape off
    centre."""
    w, h = 48, 40
    room = tuple(rng.randint(60, 180) for _ in range(3))
    noise = np.random.default_rng(rng.randint(0, 10**6)).normal(0, 12, (h, w, 3))
    img = Image.fromarray(np.clip(np.array(room) + noise, 0, 255).astype(np.uint8))
    colour = rng.choice(list(COLOURS.values()))
    return _draw(shape, colour, rng, canvas=img, radius=(9, 13), margin=2)


def make_photo_set(root: Path, held: int = 12, kept: int = 12) -> tuple[Path, Path, set[str]]:
    """A photo CSV (path, label, sender_id) with one photo per sender, ``held`` of them from
    senders the split holds out and ``kept`` from senders that train, plus two rows the label
    map skips; the label map JSON; and the held-out senders' photo paths (as written)."""
    rng = random.Random(0)
    (root / "photos").mkdir(parents=True, exist_ok=True)
    rows, held_paths = [], set()
    n_held = n_kept = i = 0
    labels = list(SHAPE_OF)
    while n_held < held or n_kept < kept:
        sender = f"shopper-{i}"
        out = photo_sender_is_validation(sender)
        i += 1
        if (out and n_held >= held) or (not out and n_kept >= kept):
            continue
        label = labels[(n_held if out else n_kept) % len(labels)]
        n_held, n_kept = n_held + out, n_kept + (not out)
        rel = f"photos/{sender}.jpg"
        _draw_photo(SHAPE_OF[label], rng).save(root / rel, quality=90)
        rows.append({"path": rel, "label": label, "sender_id": sender})
        if out:
            held_paths.add(rel)
    _draw_photo("circle", rng).save(root / "photos/blurry.jpg")
    rows.append({"path": "photos/blurry.jpg", "label": "Blurry", "sender_id": "shopper-x"})
    manifest = root / "photos.csv"
    with manifest.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["path", "label", "sender_id"])
        writer.writeheader()
        writer.writerows(rows)
    label_map = root / "label-map.json"
    label_map.write_text(json.dumps(LABEL_MAP))
    return manifest, label_map, held_paths


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny tensors: a second thread only adds synchronisation, and on a busy machine its
    spin-waits cost seconds. (one_epoch_config sets two; this puts the count back after.)"""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# -- text side -----------------------------------------------------------------------------------


def test_copy_text_side_copies_every_non_visual_tensor_and_nothing_visual(tmp_path):
    import open_clip

    from embeddings.training.checkpoint import save_checkpoint
    from embeddings.training.train import copy_text_side

    register_model_config(TRAIN_MODEL, TRAIN_CFG)
    register_model_config(ONNX_TOWER_MODEL, ONNX_TOWER_CFG)
    torch.manual_seed(1)
    donor = open_clip.create_model(TRAIN_MODEL)  # a ViT image tower, the same text config
    path = save_checkpoint(donor, tmp_path / "donor.pt", TRAIN_MODEL, TRAIN_CFG, half=False)
    torch.manual_seed(2)
    model = open_clip.create_model(ONNX_TOWER_MODEL)
    visual_before = {k: v.clone() for k, v in model.visual.state_dict().items()}
    report = copy_text_side(model, str(path))

    own, given = model.state_dict(), donor.state_dict()
    text_keys = [k for k in own if not k.startswith("visual.")]
    assert report["tensors"] == report["of"] == len(text_keys) > 5
    for key in text_keys:
        assert torch.equal(own[key], given[key]), key
    for key, value in model.visual.state_dict().items():
        assert torch.equal(value, visual_before[key]), key

    with pytest.raises(TrainingSetupError, match="does not exist"):
        copy_text_side(model, str(tmp_path / "nope.pt"))
    other_text = {
        **TRAIN_CFG,
        "text_cfg": {**TRAIN_CFG["text_cfg"], "width": 32, "context_length": 4},
    }
    other_text["embed_dim"] = 16
    register_model_config("test-other-text", other_text)
    stranger = save_checkpoint(
        open_clip.create_model("test-other-text"), tmp_path / "s.pt", "test-other-text", other_text
    )
    with pytest.raises(TrainingSetupError, match="text config differs"):
        copy_text_side(model, str(stranger))


# -- setup errors (no training) --------------------------------------------------------------------


def test_trunk_tail_and_phone_views_need_lock_image_trunk(tmp_path):
    from embeddings.training.train import train_model

    register_model_config(ONNX_TOWER_MODEL, ONNX_TOWER_CFG)
    for extra in ({"trunk_tail": 1}, {"phone_views": 2}):
        cfg = one_epoch_config(tmp_path, model_name=ONNX_TOWER_MODEL, **extra)
        with pytest.raises(TrainingSetupError, match="need --lock-image-trunk"):
            train_model(cfg, log=lambda _msg: None)


def test_trunk_tail_on_a_resnet_tower_is_a_setup_error(tmp_path):
    from embeddings.training.train import train_model
    from tests.embeddings.test_training import TIMM_CFG, TIMM_MODEL

    register_model_config(TIMM_MODEL, TIMM_CFG)
    cfg = one_epoch_config(tmp_path, model_name=TIMM_MODEL, lock_image_trunk=True, trunk_tail=1)
    with pytest.raises(TrainingSetupError, match="MobileNet/EfficientNet"):
        train_model(cfg, log=lambda _msg: None)


def test_photos_without_a_label_map_is_a_command_error(tmp_path):
    from django.core.management import CommandError, call_command

    manifest, _label_map, _held = make_photo_set(tmp_path / "shop", held=1, kept=1)
    with pytest.raises(CommandError, match="--photos needs --label-map"):
        call_command(
            "train_model",
            "--manifest",
            str(tmp_path / "catalog.csv"),
            "--model-name",
            ONNX_TOWER_MODEL,
            "--photos",
            str(manifest),
            "--output",
            str(tmp_path / "x.pt"),
        )


def test_command_passes_the_new_options_with_resolved_photo_paths(tmp_path, monkeypatch):
    import io

    from django.core.management import call_command

    from embeddings.training.train import PhotoSource

    seen = {}

    def fake_train(cfg, log):
        seen["cfg"] = cfg
        return {"checkpoint_bytes": 0}

    monkeypatch.setattr("embeddings.training.train.train", fake_train)
    make_photo_set(tmp_path / "shop", held=1, kept=1)
    monkeypatch.chdir(tmp_path)
    call_command(
        "train_model",
        *("--manifest", "catalog.csv", "--model-name", ONNX_TOWER_MODEL, "--output", "x.pt"),
        *("--photos", "shop/photos.csv", "--label-map", "shop/label-map.json"),
        *("--lock-image-trunk", "--trunk-tail", "2", "--phone-views", "3"),
        *("--image-init", "tower.onnx", "--text-init", "text.pt"),
        stdout=io.StringIO(),
    )
    cfg = seen["cfg"]
    assert cfg.photo_sources == [
        PhotoSource(str(tmp_path / "shop/photos.csv"), str(tmp_path / "shop/label-map.json"), None)
    ]
    assert (cfg.lock_image_trunk, cfg.trunk_tail, cfg.phone_views) == (True, 2, 3)
    assert (cfg.image_init, cfg.text_init) == ("tower.onnx", "text.pt")


def test_image_init_of_another_architecture_is_a_setup_error(tmp_path):
    import timm

    from embeddings.training.train import train_model
    from tests.embeddings.tiny_onnx import export_onnx

    other = export_onnx(
        timm.create_model("mobilenetv2_035", num_classes=10).eval(), tmp_path / "035.onnx"
    )
    register_model_config(ONNX_TOWER_MODEL, ONNX_TOWER_CFG)
    cfg = one_epoch_config(tmp_path, model_name=ONNX_TOWER_MODEL, image_init=str(other))
    with pytest.raises(TrainingSetupError, match="architectures differ"):
        train_model(cfg, log=lambda _msg: None)


# -- end to end ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_onnx_backbone_tail_training_with_phone_views_and_a_photo_set(tmp_path):
    import open_clip

    from embeddings.training.onnx_import import init_image_tower
    from embeddings.training.train import PhotoSource, load_data, train_model
    from tests.embeddings.tiny_onnx import build_tiny_onnx

    tiny = build_tiny_onnx(tmp_path / "onnx")
    photos, label_map, held_paths = make_photo_set(tmp_path / "shop")

    # A first tiny run (ViT image tower) whose text side the ONNX-tower run starts from.
    text_run = one_epoch_config(tmp_path, threads=1)
    train_model(text_run, log=lambda _msg: None)

    register_model_config(ONNX_TOWER_MODEL, ONNX_TOWER_CFG)
    cache = tmp_path / "cache"
    cfg = one_epoch_config(
        tmp_path,
        model_name=ONNX_TOWER_MODEL,
        output=str(tmp_path / "phone.pt"),
        threads=1,
        cache_dir=str(cache),
        augment=True,
        image_init=str(tiny.quant_path),
        text_init=text_run.output,
        lock_image_trunk=True,
        trunk_tail=2,
        phone_views=2,
        epochs=2,
        lr=1e-3,
        photo_sources=[PhotoSource(str(photos), str(label_map))],
    )
    model, card = train_model(cfg, log=lambda _msg: None)

    # What the image tower started from: the run's seed (0) for the head, the ONNX weights in
    # the trunk (stem folded). (copy_text_side's own test checks the text side.)
    torch.manual_seed(cfg.seed)
    start = open_clip.create_model(ONNX_TOWER_MODEL)
    init_image_tower(start, tiny.quant_path)
    before, after = start.visual.trunk.state_dict(), model.visual.trunk.state_dict()
    last = len(model.visual.trunk.blocks) - 1
    tail_prefixes = (f"blocks.{last}.", "conv_head.", "bn2.")
    for name, tensor in before.items():  # weights and BatchNorm statistics alike
        if not name.startswith(tail_prefixes):
            assert torch.equal(tensor, after[name]), f"frozen trunk tensor {name} changed"
    assert not torch.equal(before["conv_head.weight"], after["conv_head.weight"])
    assert not torch.equal(
        before[f"blocks.{last}.0.conv_pw.weight"], after[f"blocks.{last}.0.conv_pw.weight"]
    )
    assert not torch.equal(start.visual.head.mlp.fc1.weight, model.visual.head.mlp.fc1.weight)

    # The card: the photo set by resolved paths, the photo figures, what was loaded.
    assert card["image_tower_locked"] == "trunk prefix (tail + head trained)"
    tc = card["training_config"]
    assert tc["trunk_tail"] == 2 and tc["phone_views"] == 2
    assert tc["photo_sources"][0]["manifest"] == str(photos)
    assert tc["image_init"] == str(tiny.quant_path) and tc["text_init"] == text_run.output
    photo_block = card["data"]["sources"][-1]
    assert photo_block["manifest"] == str(photos.resolve())
    assert photo_block["label_map"] == str(label_map.resolve())
    assert photo_block["train_rows"] == 12 and photo_block["held_out_rows"] == 12
    assert photo_block["rows"] == 24  # the ignored label's photo is not counted
    metrics = card["validation_metrics"]
    for key in ("photo2photo_p@10", "photo2catalog_p@10"):
        assert 0.0 <= metrics[key] <= 1.0
    init = card["initialisation"]
    assert init["image_init"]["convolutions"] == 52
    assert init["text_init"]["tensors"] == init["text_init"]["of"]
    assert init["trunk_split"]["trunk_tail"] == 2
    on_disk = json.loads((tmp_path / "phone.card.json").read_text())
    assert on_disk["validation_metrics"].keys() >= {"photo2photo_p@10", "photo2catalog_p@10"}

    # Held-out senders' photos never train; they are the in-training photo validation set.
    data = load_data(cfg, 64, open_clip.get_tokenizer(ONNX_TOWER_MODEL))
    photo_paths = {Path(p).relative_to(photos.parent).as_posix() for p in data.blocks[-1]["paths"]}
    assert len(photo_paths) == 12 and photo_paths.isdisjoint(held_paths)
    assert data.val_photos is not None and len(data.val_photos) == len(held_paths) == 12
    assert data.val_photos.shape[1:] == (64, 64, 3)
    n_catalog = int((data.item_block == 0).sum())
    assert len(data.images) == n_catalog + 12

    # One views cache per block (the catalog, the photo set): every item's plain view + 2 phone
    # views, so adding a block or continuing the run from its checkpoint recomputes nothing else.
    views = sorted(cache.glob("views-*.npy"), key=lambda p: np.load(p, mmap_mode="r").shape[0])
    assert len(views) == 2
    sizes = [np.load(v, mmap_mode="r").shape[0] for v in views]
    assert sizes == [12 * 3, n_catalog * 3]
    maps = np.load(views[1], mmap_mode="r")
    assert maps.dtype == np.float16 and maps.ndim == 4
