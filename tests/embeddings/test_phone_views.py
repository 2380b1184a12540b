"""Phone-photo-like views of studio shots (embeddings/training/augment.py) and the frozen
trunk's prefix/tail split with its view sampling (embeddings/training/views.py). Images are
drawn in the test."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from embeddings.training.augment import _foreground_mask, phone_view
from embeddings.training.views import TrunkSplit, sample_views

STUDIO_WHITE = (246, 246, 246)
RED = (210, 25, 30)
GREEN_ROOM = (30, 170, 40)


def _studio_disc(colour=RED, size: int = 128) -> np.ndarray:
    """A coloured disc (about 28% of the frame) centred on a studio-white background."""
    img = Image.new("RGB", (size, size), STUDIO_WHITE)
    r = int(0.3 * size)
    c = size // 2
    ImageDraw.Draw(img).ellipse((c - r, c - r, c + r, c + r), fill=colour)
    return np.asarray(img)


def _white_shirt_with_outline(size: int = 128) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """A white product (brighter than the studio white) inside a dark 4 px outline, and the
    box of its inside."""
    img = Image.new("RGB", (size, size), STUDIO_WHITE)
    lo, hi = size // 4, 3 * size // 4
    ImageDraw.Draw(img).rectangle(
        (lo, lo, hi, hi), fill=(252, 252, 252), outline=(70, 70, 80), width=4
    )
    return np.asarray(img), (lo + 8, lo + 8, hi - 8, hi - 8)


def _green_rooms(n: int = 3, size: int = 96) -> np.ndarray:
    """'Room photos' for the swapped background: a strong green nobody's product here has."""
    return np.broadcast_to(np.array(GREEN_ROOM, np.uint8), (n, size, size, 3)).copy()


def _green_share(view: np.ndarray) -> float:
    v = view.astype(int)
    return float(((v[..., 1] - np.maximum(v[..., 0], v[..., 2])) > 60).mean())


def _red_share(view: np.ndarray) -> float:
    v = view.astype(int)
    return float(((v[..., 0] > 90) & (v[..., 0] - np.maximum(v[..., 1], v[..., 2]) > 60)).mean())


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny tensors: a second thread only adds synchronisation, and on a busy machine its
    spin-waits cost seconds (measured 0.09 s vs 2.4 s for one 64-image forward pass)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# -- augment ------------------------------------------------------------------------------------


def test_phone_view_is_uint8_of_the_asked_size_and_deterministic_per_seed():
    img = _studio_disc()
    a = phone_view(img, 64, np.random.default_rng(7), backgrounds=_green_rooms())
    b = phone_view(img, 64, np.random.default_rng(7), backgrounds=_green_rooms())
    assert a.dtype == np.uint8 and a.shape == (64, 64, 3)
    assert np.array_equal(a, b)
    others = [phone_view(img, 64, np.random.default_rng(s)) for s in range(8, 12)]
    assert any(not np.array_equal(a, o) for o in others)
    # Non-square inputs too (a shopper's photo is rarely square).
    assert phone_view(img[:, :96], 48, np.random.default_rng(0)).shape == (48, 48, 3)


def test_white_product_inside_its_outline_is_foreground_not_studio_background():
    img, (x0, y0, x1, y1) = _white_shirt_with_outline()
    mask = _foreground_mask(img)[..., 0]
    assert mask.shape == img.shape[:2]
    # The flood fill from the border stops at the outline: the white inside is kept...
    assert mask[y0:y1, x0:x1].min() > 0.9
    # ... and the studio white around it is background.
    for corner in (mask[:10, :10], mask[:10, -10:], mask[-10:, :10], mask[-10:, -10:]):
        assert corner.max() < 0.1
    # Through phone_view: whenever the background became the green room, the white product
    # is still there (bright neutral pixels), not green.
    swapped = 0
    for seed in range(16):
        view = phone_view(img, 64, np.random.default_rng(seed), backgrounds=_green_rooms())
        if _green_share(view) > 0.2:
            swapped += 1
            v = view.astype(int)
            neutral_bright = (v.min(axis=2) > 140) & (v.max(axis=2) - v.min(axis=2) < 40)
            assert neutral_bright.mean() > 0.1, f"seed {seed}: the white product was replaced"
    assert swapped >= 3


def test_coloured_product_on_white_gets_the_room_background_in_some_views():
    img = _studio_disc()
    shares = [
        _green_share(phone_view(img, 64, np.random.default_rng(s), backgrounds=_green_rooms()))
        for s in range(12)
    ]
    # Swap p=0.6, a room patch (not the random colour field) p=0.7: ~42% of views are green.
    assert sum(s > 0.3 for s in shares) >= 2
    assert sum(s < 0.01 for s in shares) >= 2  # and some keep the studio white


def test_product_colour_survives_light_white_balance_blur_noise_and_jpeg():
    """studio=False (a shopper photo: no background swap), so every saturated pixel of a view
    is the red product's: over 20 views it stays a large share of the frame and stays red."""
    img = _studio_disc()
    for seed in range(20):
        v = phone_view(img, 64, np.random.default_rng(seed), studio=False).astype(int)
        chroma = v.max(axis=2) - v.min(axis=2)
        saturated = chroma > 50
        assert saturated.mean() > 0.15, f"seed {seed}: the product left the frame"
        red_first = (v[..., 0] >= v[..., 1]) & (v[..., 0] >= v[..., 2])
        assert red_first[saturated].mean() > 0.95, f"seed {seed}: hue moved off red"
        mean = v[saturated].mean(axis=0)
        assert mean[0] > 1.8 * max(mean[1], mean[2]), f"seed {seed}: mean colour {mean}"


def test_studio_views_keep_the_red_product_whatever_the_background():
    img = _studio_disc()
    for seed in range(20):
        view = phone_view(img, 64, np.random.default_rng(seed), backgrounds=_green_rooms())
        assert _red_share(view) > 0.15, f"seed {seed}"


def test_studio_false_never_swaps_the_background():
    img = _studio_disc()
    for seed in range(20):
        view = phone_view(
            img, 64, np.random.default_rng(seed), backgrounds=_green_rooms(), studio=False
        )
        assert _green_share(view) == 0.0, f"seed {seed}"


# -- the frozen prefix and the trainable tail ---------------------------------------------------


@pytest.fixture(scope="module")
def mobilenet():
    import timm

    from tests.embeddings.tiny_onnx import randomise_batch_norms

    torch.manual_seed(0)
    trunk = timm.create_model("mobilenetv2_050", num_classes=0, pretrained=False)
    randomise_batch_norms(trunk, 1)
    return trunk.eval()


@pytest.mark.parametrize("tail", [0, 1, 2])
def test_tail_of_prefix_is_the_whole_trunk(mobilenet, tail):
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(tail))
    split = TrunkSplit(mobilenet, tail)
    with torch.no_grad():
        maps = split.prefix(x)
        torch.testing.assert_close(split.tail(maps), mobilenet(x), rtol=1e-5, atol=1e-5)
    if tail == 0:
        assert maps.shape == (2, mobilenet.num_features)  # pooled features: nothing trains
    else:
        assert maps.ndim == 4  # a feature map, the input of the trainable blocks


def test_tail_parameters_are_the_last_blocks_and_the_head_conv(mobilenet):
    last = len(mobilenet.blocks) - 1
    by_id = {id(p): name for name, p in mobilenet.named_parameters()}

    def names(tail):
        return sorted(by_id[id(p)] for p in TrunkSplit(mobilenet, tail).tail_parameters())

    head = sorted(n for n in by_id.values() if n.startswith(("conv_head.", "bn2.")))
    last_block = sorted(n for n in by_id.values() if n.startswith(f"blocks.{last}."))
    assert names(0) == []
    assert names(1) == head
    assert names(2) == sorted(head + last_block)
    before_last = sorted(n for n in by_id.values() if n.startswith(f"blocks.{last - 1}."))
    assert names(3) == sorted(head + last_block + before_last)
    with pytest.raises(ValueError, match="more than the trunk's"):
        TrunkSplit(mobilenet, len(mobilenet.blocks) + 2)


def test_a_trunk_without_mobilenet_parts_refuses_a_tail():
    import timm

    resnet = timm.create_model("resnet10t", num_classes=0, pretrained=False)
    with pytest.raises(ValueError, match="MobileNet/EfficientNet.*--trunk-tail 0"):
        TrunkSplit(resnet, 1)
    assert TrunkSplit(resnet, 0).tail_parameters() == []  # pooled features still work


def test_sample_views_picks_only_available_views_and_all_of_them():
    # Item 0: plain only; item 1: plain + 2 views; item 2: plain + 1 view.
    index = np.array([[0, -1, -1], [1, 3, 5], [2, 4, -1]])
    rng = np.random.default_rng(0)
    seen: dict[int, set[int]] = {0: set(), 1: set(), 2: set()}
    for _ in range(300):
        items = rng.integers(0, 3, size=5)
        rows = sample_views(index, items, rng)
        assert rows.shape == (5,) and (rows >= 0).all()
        for item, row in zip(items, rows, strict=True):
            assert row in index[item]
            seen[int(item)].add(int(row))
    assert seen == {0: {0}, 1: {1, 3, 5}, 2: {2, 4}}
