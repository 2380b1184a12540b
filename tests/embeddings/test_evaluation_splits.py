"""Which data manage.py evaluate scores (embeddings/evaluation_splits.py), from model cards."""

from __future__ import annotations

from embeddings.evaluation_splits import choose_catalog_split, choose_photo_senders


def card_for(tmp_path, *manifests, photo_sources=()):
    return {
        "model_name": "shopclip-x",
        "training_config": {
            "sources": [{"manifest": str(m)} for m in manifests],
            "photo_sources": list(photo_sources),
        },
        # data.sources repeats them (with row counts) in a real card
        "data": {"sources": [{"manifest": str(m), "rows": 1} for m in manifests]},
    }


def test_auto_split_follows_the_card(tmp_path, monkeypatch):
    primary, extra, other = tmp_path / "p.csv", tmp_path / "e.csv", tmp_path / "o.csv"
    card = card_for(tmp_path, primary, extra)
    # A relative spelling of the same file still matches (paths are compared resolved).
    monkeypatch.chdir(tmp_path.parent)
    first = choose_catalog_split(card, primary.relative_to(tmp_path.parent), "auto", "m")
    assert (first.split, first.role) == ("val", "primary")
    assert first.reason(1000) == "the 1000 products train_model held out of this manifest"
    second = choose_catalog_split(card, extra, "auto", "m")
    assert (second.split, second.role, second.primary) == ("val", "extra", (str(primary), None))
    foreign = choose_catalog_split(card, other, "auto", "m")
    assert (foreign.split, foreign.role) == ("all", "foreign")
    assert foreign.reason(961) == "this manifest was not used to train shopclip-x"
    none = choose_catalog_split({}, other, "auto", "m")
    assert (none.split, none.role) == ("all", "unknown")
    asked = choose_catalog_split(card, primary, "all", "m")
    assert asked.split == "all" and "trained on most" in asked.reason(10)


def test_photo_senders_auto_is_val_only_for_a_photo_set_the_card_lists(tmp_path):
    photos = tmp_path / "photos.csv"
    card = card_for(
        tmp_path,
        tmp_path / "p.csv",
        photo_sources=[{"manifest": str(photos), "val_fraction": 0.25, "salt": "s1"}],
    )
    chosen = choose_photo_senders(card, photos, "auto", "m")
    assert (chosen.senders, chosen.trained_on, chosen.fraction, chosen.salt) == (
        "val",
        True,
        0.25,
        "s1",
    )
    other = choose_photo_senders(card, tmp_path / "other.csv", "auto", "m")
    assert (other.senders, other.trained_on) == ("all", False)
    assert other.reason(10, 3) == "this photo set was not used to train shopclip-x"
