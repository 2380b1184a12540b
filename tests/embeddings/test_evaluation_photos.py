"""Shopper-photo label maps and photo sets (embeddings/evaluation_photos.py): both map forms,
the checks that name what to fix, and the sender split."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from embeddings.evaluation_photos import (
    Photo,
    PhotoSetError,
    absent_catalog_types,
    held_out_photos,
    load_label_map,
    read_photo_manifest,
    unmapped_labels,
)
from embeddings.training.data import PHOTO_SPLIT_SALT, photo_sender_is_validation

MAP = {
    "labels": {
        "T-Shirt": {"catalog_types": ["Tshirts"], "prompt": "t-shirt"},
        "Shoes": {"catalog_types": ["Casual Shoes", "Sports Shoes"]},
    },
    "ignore": ["Not sure", {"label": "Body", "reason": "no such type"}],
}


def write_json(tmp_path: Path, data) -> Path:
    path = tmp_path / "map.json"
    path.write_text(json.dumps(data))
    return path


def test_json_and_csv_maps_read_the_same(tmp_path):
    from_json = load_label_map(write_json(tmp_path, MAP))
    csv_path = tmp_path / "map.csv"
    csv_path.write_text(
        "label,catalog_types,prompt,ignore,note\n"
        "T-Shirt,Tshirts,t-shirt,,\n"
        "Shoes,Casual Shoes;Sports Shoes,,,\n"
        "Not sure,,,yes,\n"
        "Body,,,true,no such type\n"
    )
    from_csv = load_label_map(csv_path)
    for m in (from_json, from_csv):
        assert m.catalog_types == {
            "T-Shirt": ("Tshirts",),
            "Shoes": ("Casual Shoes", "Sports Shoes"),
        }
        assert m.prompts == {"T-Shirt": "t-shirt", "Shoes": "Shoes"}  # the label when no prompt
        assert m.ignore == {"Not sure": "", "Body": "no such type"}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({**MAP, "lables": {}}, r"unknown key\(s\) \['lables'\]"),
        (
            {"labels": {"Hat": {"catalog_types": ["Caps"], "promt": "hat"}}},
            r"'Hat' has unknown key",
        ),
        ({"labels": {"Hat": {"catalog_types": []}}}, r"'Hat' has an empty catalog_types list"),
        ({"labels": {"Hat": {"prompt": "hat"}}}, r"'Hat' needs catalog_types"),
        (
            {"labels": {"Hat": {"catalog_types": ["Caps"]}}, "ignore": ["Hat"]},
            "both maps and ignores",
        ),
        ({"ignore": ["Skip"]}, 'needs "labels"'),
    ],
)
def test_bad_json_maps_say_what_to_fix(tmp_path, data, message):
    with pytest.raises(PhotoSetError, match=message):
        load_label_map(write_json(tmp_path, data))


def test_bad_csv_maps_say_what_to_fix(tmp_path):
    path = tmp_path / "map.csv"
    path.write_text("label,types\nHat,Caps\n")
    with pytest.raises(PhotoSetError, match=r"unknown column\(s\) \['types'\]"):
        load_label_map(path)
    path.write_text("label,catalog_types\nHat, ; \n")
    with pytest.raises(PhotoSetError, match="'Hat' has an empty catalog_types list"):
        load_label_map(path)
    path.write_text("label,catalog_types,ignore\nHat,Caps,yes\n")
    with pytest.raises(PhotoSetError, match="ignored but lists catalog types"):
        load_label_map(path)


def test_unmapped_labels_and_absent_types(tmp_path):
    label_map = load_label_map(write_json(tmp_path, MAP))
    photos = [Photo("a", "T-Shirt", "1"), Photo("b", "Scarf", "2"), Photo("c", "Scarf", "3")]
    photos.append(Photo("d", "Not sure", "4"))
    assert unmapped_labels(photos, label_map) == {"Scarf": 2}
    assert absent_catalog_types(label_map, ["Tshirts", "Casual Shoes"]) == {
        "Sports Shoes": ["Shoes"]
    }


def test_photo_manifest_senders_default_to_the_path(tmp_path):
    (tmp_path / "images").mkdir()
    for name in ("a.jpg", "b.jpg"):
        (tmp_path / "images" / name).write_bytes(b"x")
    manifest = tmp_path / "photos.csv"
    manifest.write_text("path,label,sender_id\nimages/a.jpg,Hat,7\nimages/b.jpg,Hat,\n,Hat,8\n")
    photos = read_photo_manifest(manifest)
    assert [(Path(p.image_path).name, p.sender) for p in photos] == [
        ("a.jpg", "7"),
        ("b.jpg", "images/b.jpg"),
    ]
    manifest.write_text("path,label\nimages/gone.jpg,Hat\n")
    with pytest.raises(PhotoSetError, match=r"1 photo file\(s\) listed .* missing"):
        read_photo_manifest(manifest)


def test_held_out_photos_keep_whole_senders():
    photos = [Photo(f"{s}-{i}", "Hat", str(s)) for s in range(40) for i in range(3)]
    held = held_out_photos(photos)
    senders = {p.sender for p in held}
    assert 5 < len(senders) < 35  # about half of 40 senders
    assert len(held) == 3 * len(senders)  # every photo of a held-out sender, none of the others
    assert all(photo_sender_is_validation(s, 0.5, PHOTO_SPLIT_SALT) for s in senders)
