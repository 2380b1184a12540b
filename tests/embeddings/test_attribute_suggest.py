"""Zero-shot attribute suggestions (embeddings.attribute_suggest, manage.py suggest_attributes).

The tiny test model's text tower is random, so the tests replace the encoder's text vectors:
each prompt "a photo of a <value> <noun>" is given the image vector of the product that value
should win for. The right answer then scores a cosine of exactly 1 and every other one less, so a
wrong prompt, noun, mean or argmax picks another value and the test fails."""

from __future__ import annotations

import io
import json
from decimal import Decimal

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command

from catalog import services as catalog_services
from catalog.models import Category, Product
from embeddings import runtime
from embeddings.attribute_suggest import (
    attribute_suggest,
    attributes_apply_missing,
    product_vectors,
    suggestions_report,
)
from tests.conftest import make_image

pytestmark = pytest.mark.django_db

RED = make_image((220, 30, 30), shape="circle")
BLUE = make_image((30, 30, 220), shape="square")
GREEN = make_image((30, 200, 40), shape="stripes")
GREY = make_image((128, 128, 128), shape="circle")


def add(title: str, category: Category | None, picture: bytes | None, **attributes) -> Product:
    images = [SimpleUploadedFile(f"{title}.png", picture, content_type="image/png")]
    return catalog_services.product_create(
        title=title,
        description="",
        price=Decimal("10"),
        category=category,
        attributes=attributes or None,
        images=images if picture else [],
    )


@pytest.fixture
def shop(django_capture_on_commit_callbacks) -> dict[str, Product]:
    tees = Category.objects.create(name="Tees")
    with django_capture_on_commit_callbacks(execute=True):  # the (eager) embed tasks
        return {
            "red": add("Red tee", tees, RED, colour="red"),
            "red2": add("Another red tee", tees, RED, colour="red"),
            "blue": add("Blue tee", tees, BLUE, colour="blue"),
            # Staff say blue, the photo is green: the one wrong suggestion.
            "mislabelled": add("Green-looking tee", tees, GREEN, colour="blue"),
            "bare": add("Grey thing", None, GREY),  # no category, no colour
            "no_image": add("Photo to come", tees, None),
        }


@pytest.fixture
def prompts(shop, monkeypatch) -> list[str]:
    """Text vectors chosen so the right value's prompt equals the winning product's image vector;
    returns the prompts the encoder was asked for."""
    encoder = runtime.get_encoder()
    vec = product_vectors(model_id=encoder.model_id)
    table = {
        "a photo of a red tees": vec[shop["red"].id],
        "a photo of a blue tees": vec[shop["blue"].id],
        "a photo of a green tees": vec[shop["mislabelled"].id],
        "a photo of a red product": vec[shop["red"].id],
        "a photo of a blue product": vec[shop["blue"].id],
        "a photo of a green product": vec[shop["bare"].id],
    }
    asked: list[str] = []

    def encode_texts(texts):
        asked.extend(texts)
        return np.stack([table[t] for t in texts])  # an unexpected prompt is a KeyError

    monkeypatch.setattr(encoder, "encode_texts", encode_texts)
    return asked


def test_product_vectors_are_unit_means_of_indexed_images_only(shop):
    vec = product_vectors(model_id=runtime.get_encoder().model_id)
    assert shop["no_image"].id not in vec
    assert set(vec) == {p.id for k, p in shop.items() if k != "no_image"}
    for v in vec.values():
        assert v.dtype == np.float32 and abs(float(np.linalg.norm(v)) - 1) < 1e-5
    # Same photo, same vector; different photos differ.
    assert float(vec[shop["red"].id] @ vec[shop["red2"].id]) > 0.9999
    assert float(vec[shop["red"].id] @ vec[shop["blue"].id]) < 0.9999


def test_the_value_whose_prompt_matches_the_photo_is_chosen(shop, prompts):
    out = {
        s.product_id: s
        for s in attribute_suggest(attribute="colour", values=["Red", "blue", "green"])
    }
    assert set(out) == {p.id for k, p in shop.items() if k != "no_image"}
    assert {k: out[p.id].value for k, p in shop.items() if p.id in out} == {
        "red": "red",
        "red2": "red",
        "blue": "blue",
        "mislabelled": "green",
        "bare": "green",  # its prompts say "product": it has no category
    }
    assert out[shop["mislabelled"].id].current == "blue"
    assert out[shop["bare"].id].current is None
    assert abs(out[shop["blue"].id].score - 1.0) < 1e-5
    assert "a photo of a green product" in prompts and "a photo of a green tees" in prompts


def test_accuracy_and_majority_baseline_count_only_products_with_a_value(shop, prompts):
    values = ["red", "blue", "green"]
    suggestions = attribute_suggest(attribute="colour", values=values)
    report = suggestions_report(attribute="colour", values=values, suggestions=suggestions)
    # red, red2, blue right; mislabelled wrong; bare has no value and is not counted.
    assert (report.n, report.correct, report.accuracy) == (4, 3, 0.75)
    assert report.majority_baseline == 0.5  # red 2, blue 2 of 4
    assert report.majority_value in {"red", "blue"}
    assert report.missing == 1


def test_catalog_values_are_the_default_candidates(shop, prompts):
    suggestions = attribute_suggest(attribute="colour")  # red and blue only: green is unknown
    assert {s.value for s in suggestions} <= {"red", "blue"}
    assert not any("green" in p for p in prompts)


def test_apply_missing_fills_only_products_lacking_the_attribute(shop, prompts):
    suggestions = attribute_suggest(attribute="colour", values=["red", "blue", "green"])
    assert attributes_apply_missing(suggestions=suggestions) == 1
    for product in shop.values():
        product.refresh_from_db()
    assert shop["bare"].attributes == {"colour": "green"}
    assert shop["mislabelled"].attributes == {"colour": "blue"}  # staff's value stays
    assert shop["no_image"].attributes == {}
    # Stale suggestions never overwrite a value set since they were made.
    assert attributes_apply_missing(suggestions=suggestions) == 0


def test_command_reports_json_and_applies_missing(shop, prompts):
    out = io.StringIO()
    call_command(
        "suggest_attributes",
        "--attribute",
        "colour",
        "--values",
        "red,blue,green",
        "--apply-missing",
        "--json",
        stdout=out,
    )
    data = json.loads(out.getvalue())
    assert data["products"] == 5
    [colour] = data["attributes"]
    assert (colour["attribute"], colour["n"], colour["correct"]) == ("colour", 4, 3)
    assert (colour["accuracy"], colour["majority_baseline"], colour["applied"]) == (0.75, 0.5, 1)
    shop["bare"].refresh_from_db()
    assert shop["bare"].attributes["colour"] == "green"

    text = io.StringIO()
    call_command("suggest_attributes", "--attribute", "colour", stdout=text)
    # Green is a catalog value now (bare's), and bare counts: 4 of 5 right; red, blue 2 each.
    assert "colour: 3 values, n=5, accuracy 80.0 % (majority baseline 40.0 %" in text.getvalue()


def test_command_refuses_an_attribute_with_fewer_than_two_values(shop):
    with pytest.raises(CommandError, match="'pattern' has 0 known value"):
        call_command("suggest_attributes", "--attribute", "pattern", stdout=io.StringIO())
    with pytest.raises(CommandError, match="--values needs exactly one --attribute"):
        call_command("suggest_attributes", "--values", "a,b", stdout=io.StringIO())
