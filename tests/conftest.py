"""Shared fixtures. Every test runs with its own media and index folders and a tiny random-init
open_clip model saved to a checkpoint file, loaded through the same `pretrained=<path>` route a
real checkpoint takes. Nothing touches the network."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

TINY_MODEL_NAME = "test-tiny-clip"
TINY_MODEL_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A random-init open_clip model written like a trained checkpoint, config beside it."""
    import open_clip
    import torch

    from embeddings.encoder import register_model_config

    register_model_config(TINY_MODEL_NAME, TINY_MODEL_CFG)
    torch.manual_seed(0)
    model = open_clip.create_model(TINY_MODEL_NAME, pretrained=None)
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    torch.save({"state_dict": model.state_dict()}, path)
    Path(str(path) + ".json").write_text(
        json.dumps({"model_name": TINY_MODEL_NAME, "model_cfg": TINY_MODEL_CFG})
    )
    return path


@pytest.fixture(autouse=True)
def _isolated_settings(settings, tmp_path, tiny_checkpoint):
    from django.core.cache import cache

    from embeddings import runtime, selectors

    # Throttle counts (and anything else cached) start empty: a test is never throttled because
    # of the requests of the tests before it. Tests use local memory (CACHE_URL unset).
    cache.clear()
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.EMBEDDINGS_INDEX_DIR = tmp_path / "index"
    settings.EMBEDDINGS_MODEL = TINY_MODEL_NAME
    settings.EMBEDDINGS_PRETRAINED = str(tiny_checkpoint)
    settings.EMBEDDINGS_SYNC_INTERVAL = 0.0
    settings.EMBEDDINGS_MIN_SCORE = None
    settings.CELERY_TASK_ALWAYS_EAGER = True
    runtime.reset()
    selectors.clear_query_cache()
    yield
    runtime.reset()


def make_image(
    color=(200, 30, 30),
    *,
    size=(64, 64),
    shape: str = "circle",
    fmt: str = "PNG",
    mode: str = "RGB",
    accent=(255, 255, 255),
) -> bytes:
    """A small generated picture: a background colour with a shape on it, encoded as ``fmt``."""
    img = Image.new("RGB", size, color)
    draw = ImageDraw.Draw(img)
    w, h = size
    box = (w // 4, h // 4, 3 * w // 4, 3 * h // 4)
    if shape == "circle":
        draw.ellipse(box, fill=accent)
    elif shape == "square":
        draw.rectangle(box, fill=accent)
    elif shape == "stripes":
        for y in range(0, h, max(h // 8, 2)):
            draw.rectangle((0, y, w, y + max(h // 16, 1)), fill=accent)
    if mode != "RGB":
        img = img.convert(mode)
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


# Background colour x shape x accent colour: distinct_image(n) differs for every n.
DISTINCT_COLORS = [
    (220, 20, 20),
    (20, 20, 220),
    (20, 160, 40),
    (230, 200, 30),
    (120, 40, 160),
    (20, 180, 200),
    (240, 120, 20),
]
DISTINCT_SHAPES = ["circle", "square", "stripes"]


def distinct_image(n: int) -> bytes:
    """A different picture for every n (the accent colour keeps them apart past 21)."""
    accent = (255 - (n * 53) % 200, 255 - (n * 97) % 200, 255 - (n * 151) % 200)
    return make_image(
        DISTINCT_COLORS[n % len(DISTINCT_COLORS)],
        shape=DISTINCT_SHAPES[(n // len(DISTINCT_COLORS)) % len(DISTINCT_SHAPES)],
        accent=accent,
    )


@pytest.fixture
def image_bytes():
    return make_image
