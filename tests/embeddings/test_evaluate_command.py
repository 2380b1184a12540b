"""``manage.py evaluate`` end to end on a tiny random-init model and generated images: which
split a manifest gets from the model card, and the shopper-photo figures. No shared data."""

from __future__ import annotations

import csv
import json
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from embeddings.evaluation_photos import Photo, held_out_photos
from embeddings.training.data import read_manifest, validation_ids
from tests.conftest import TINY_MODEL_NAME, distinct_image

PHOTO_FIGURES = ("photo2catalog_p@10", "photo2photo_p@10", "photo_zero_shot_acc")
PHOTO_ROWS = (
    "shopper photo->catalog P@10",
    "shopper photo->photo P@10",
    "zero-shot shopper-photo label accuracy",
)


def write_catalog(folder: Path, n: int = 24, first_id: int = 100) -> Path:
    """``n`` products, alternately Tshirts and Casual Shoes, each with its own picture."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        pid = first_id + i
        (folder / "images" / f"{pid}.png").write_bytes(distinct_image(i))
        kind = "Tshirts" if i % 2 == 0 else "Casual Shoes"
        colour = "Red" if i % 4 < 2 else "Blue"
        rows.append(
            {
                "path": f"images/{pid}.png",
                "product_id": str(pid),
                "title": f"{colour} {kind} {pid}",
                "articleType": kind,
                "baseColour": colour,
            }
        )
    path = folder / "manifest.csv"
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


PHOTO_ROWS_CSV = [
    ("T-Shirt", "1"),
    ("T-Shirt", "2"),
    ("T-Shirt", "3"),
    ("Shoes", "4"),
    ("Shoes", "5"),
    ("Shoes", ""),  # no sender: its own
    ("Hat", "6"),
    ("Not sure", "7"),
]


def write_photos(folder: Path, rows=PHOTO_ROWS_CSV) -> Path:
    (folder / "photos").mkdir(parents=True, exist_ok=True)
    path = folder / "photos.csv"
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label", "kids", "sender_id"])
        for i, (label, sender) in enumerate(rows):
            (folder / "photos" / f"p{i}.png").write_bytes(distinct_image(40 + i))
            writer.writerow([f"photos/p{i}.png", label, "False", sender])
    return path


MAP = {
    "labels": {
        "T-Shirt": {"catalog_types": ["Tshirts"], "prompt": "t-shirt"},
        "Shoes": {"catalog_types": ["Casual Shoes", "Sports Shoes"], "prompt": "shoes"},
        "Hat": {"catalog_types": ["Caps"], "prompt": "hat"},
    },
    "ignore": ["Not sure"],
}


def write_map(folder: Path, form: str = "json") -> Path:
    if form == "json":
        path = folder / "map.json"
        path.write_text(json.dumps(MAP))
        return path
    path = folder / "map.csv"
    path.write_text(
        "label,catalog_types,prompt,ignore\n"
        "T-Shirt,Tshirts,t-shirt,\n"
        "Shoes,Casual Shoes;Sports Shoes,shoes,\n"
        "Hat,Caps,hat,\n"
        "Not sure,,,yes\n"
    )
    return path


@pytest.fixture
def checkpoint(tmp_path, tiny_checkpoint) -> Path:
    """The tiny model linked into a folder of its own, so a test can put a card beside it."""
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "tiny.pt").symlink_to(tiny_checkpoint)
    (folder / "tiny.pt.json").symlink_to(str(tiny_checkpoint) + ".json")
    return folder / "tiny.pt"


def write_card(checkpoint: Path, **training_config) -> Path:
    card = {
        "model_name": "tiny-shop",
        "training_config": training_config,
        "split": {"salt": "shopsearch-val-v1", "val_size": 12, "val_fraction": None},
    }
    path = checkpoint.with_name("tiny.card.json")
    path.write_text(json.dumps(card))
    return path


def evaluate(checkpoint: Path, manifest: Path, *args: str) -> tuple[str, dict]:
    out = StringIO()
    json_out = manifest.parent / "results.json"
    call_command(
        "evaluate",
        "--manifest",
        str(manifest),
        "--model",
        TINY_MODEL_NAME,
        "--pretrained",
        str(checkpoint),
        "--threads",
        "1",
        "--batch-size",
        "16",
        "--json-out",
        str(json_out),
        *args,
        stdout=out,
    )
    return out.getvalue(), json.loads(json_out.read_text())


# -- which products are scored ------------------------------------------------------------------


def test_a_manifest_the_model_was_not_trained_on_is_scored_whole_by_default(tmp_path, checkpoint):
    manifest = write_catalog(tmp_path / "shop")
    write_card(checkpoint, sources=[{"manifest": str(tmp_path / "elsewhere" / "manifest.csv")}])
    out, results = evaluate(checkpoint, manifest, "--no-floor")
    assert "split: all (this manifest was not used to train tiny-shop)" in out
    assert results["split"] == "all"
    assert results["split_reason"] == "this manifest was not used to train tiny-shop"
    assert results["products"] == 24
    assert "photo" not in out  # no photo rows without --photos


def test_the_primary_training_manifest_is_scored_on_its_held_out_products(tmp_path, checkpoint):
    manifest = write_catalog(tmp_path / "shop")
    write_card(checkpoint, sources=[{"manifest": str(manifest.resolve())}])
    out, results = evaluate(checkpoint, manifest, "--no-floor")
    assert "split: val (the 12 products train_model held out of this manifest)" in out
    assert (results["split"], results["products"], results["val_size"]) == ("val", 12, 12)


def test_an_extra_training_manifest_is_scored_on_the_primarys_held_out_ids(tmp_path, checkpoint):
    primary = write_catalog(tmp_path / "primary", n=30)
    held = validation_ids(read_manifest(primary), size=12)
    # The extra source: the primary's products and 10 more, less one of the held-out ones.
    extra = write_catalog(tmp_path / "extra", n=40)
    dropped = set(sorted(held)[:1])
    lines = extra.read_text().splitlines(keepends=True)
    extra.write_text("".join(x for x in lines if x.split(",")[1] not in dropped))
    write_card(checkpoint, sources=[{"manifest": str(primary)}, {"manifest": str(extra)}])
    _, results = evaluate(checkpoint, extra, "--no-floor")
    # Its own hash split would hold out 12 of its products; training skipped only the other 11.
    assert results["split"] == "val"
    assert results["products"] == 11
    assert "whose ids train_model held out of" in results["split_reason"]


def test_explicit_val_split_on_a_small_manifest_says_to_use_split_all(tmp_path, checkpoint):
    manifest = write_catalog(tmp_path / "shop")
    with pytest.raises(
        CommandError, match=r"--val-size 1000 must be between 0 and 24 products\..*--split all"
    ):
        evaluate(checkpoint, manifest, "--split", "val", "--no-floor")


# -- shopper photos -----------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["json", "csv"])
def test_photo_figures_for_model_and_floor_in_the_table_and_json(tmp_path, checkpoint, form):
    manifest = write_catalog(tmp_path / "shop")
    photos = write_photos(tmp_path / "shop")
    out, results = evaluate(
        checkpoint, manifest, "--photos", str(photos), "--label-map", str(write_map(tmp_path, form))
    )
    table = out.splitlines()
    for row in PHOTO_ROWS:
        line = next(x for x in table if x.startswith(row))
        assert len(line[52:].split()) == 2  # model and floor
    assert (
        "warning: catalog types in the label map that this catalog lacks: Caps (Hat), Sports Shoes (Shoes)"
        in out
    )
    assert "photo senders: all (this photo set was not used to train" in out
    for run in ("model", "random-init"):
        metrics = results["metrics"][run]
        assert all(0.0 <= metrics[f] <= 1.0 for f in PHOTO_FIGURES)
        assert metrics["photos"] == 7.0
        assert metrics["photo_zero_shot_classes"] == 3.0
        assert set(metrics["photo2catalog_by_label"]) == {"T-Shirt", "Shoes", "Hat"}
        assert metrics["photo2catalog_by_label"]["Hat"]["catalog_items"] == 0.0
    info = results["photos"]
    assert (info["count"], info["ignored_photos"], info["senders"]) == (7, 1, "all")
    assert info["labels"] == {"Hat": 1, "Shoes": 3, "T-Shirt": 3}


def test_a_photo_label_the_map_does_not_know_is_named(tmp_path, checkpoint):
    manifest = write_catalog(tmp_path / "shop")
    photos = write_photos(tmp_path / "shop", PHOTO_ROWS_CSV + [("Scarf", "8"), ("Scarf", "9")])
    with pytest.raises(
        CommandError, match=r"'Scarf' \(2 photos\) are neither mapped nor ignored.*\"ignore\""
    ):
        evaluate(
            checkpoint, manifest, "--photos", str(photos), "--label-map", str(write_map(tmp_path))
        )
    with pytest.raises(CommandError, match="--photos needs --label-map"):
        evaluate(checkpoint, manifest, "--photos", str(photos))


def test_photo_senders_auto_scores_held_out_senders_when_the_card_lists_the_photo_set(
    tmp_path, checkpoint
):
    manifest = write_catalog(tmp_path / "shop")
    rows = [("T-Shirt" if i % 2 else "Shoes", str(i)) for i in range(24)]
    photos = write_photos(tmp_path / "shop", rows)
    card = write_card(
        checkpoint,
        sources=[{"manifest": str(tmp_path / "elsewhere.csv")}],
        photo_sources=[
            {"manifest": str(photos.resolve()), "val_fraction": 0.5, "salt": "shopsearch-photos-v1"}
        ],
    )
    held = held_out_photos([Photo(f"p{i}", lab, s) for i, (lab, s) in enumerate(rows)])
    assert 0 < len(held) < len(rows)
    out, results = evaluate(
        checkpoint,
        manifest,
        "--no-floor",
        "--photos",
        str(photos),
        "--label-map",
        str(write_map(tmp_path)),
        "--update-card",
    )
    assert (
        f"photo senders: val (the {len(held)} photos of the {len(held)} senders train_model held out"
        in out
    )
    assert results["photos"]["senders"] == "val"
    assert results["metrics"]["model"]["photos"] == len(held)
    evaluation = json.loads(card.read_text())["evaluation"]
    assert evaluation["photos"]["senders"] == "val"
    assert evaluation["photos"]["count"] == len(held)
    assert evaluation["photos"]["label_map"].endswith("map.json")
    assert "photo2catalog_p@10" in evaluation["metrics"]["model"]
