"""Image decoding and the model wrapper (no database)."""

import io

import numpy as np
import pytest
from PIL import Image, ImageFile

from embeddings.encoder import (
    ClipEncoder,
    ImageDecodeError,
    ImageTooLargeError,
    ModelLoadError,
    load_image,
)
from tests.conftest import TINY_MODEL_NAME, make_image


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_exif_orientation_is_applied():
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    out = load_image(encode(img, "JPEG", exif=exif.tobytes()))
    assert out.size == (20, 40)


@pytest.mark.parametrize(
    "mode,fmt",
    [
        ("P", "PNG"),
        ("L", "PNG"),
        ("LA", "PNG"),
        ("RGBA", "PNG"),
        ("CMYK", "JPEG"),
        ("1", "BMP"),
        ("RGB", "WEBP"),
        ("P", "GIF"),
    ],
)
def test_every_mode_becomes_8bit_rgb(mode, fmt):
    out = load_image(make_image((10, 120, 200), mode=mode, fmt=fmt))
    assert out.mode == "RGB" and out.size == (64, 64)


def test_transparent_areas_become_white():
    img = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    out = load_image(encode(img, "PNG"))
    assert out.getpixel((0, 0)) == (255, 255, 255)


def test_palette_with_transparency_is_composited():
    img = Image.new("P", (8, 8), 0)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    img.info["transparency"] = 0
    out = load_image(encode(img, "PNG", transparency=0))
    assert out.getpixel((0, 0)) == (255, 255, 255)


def test_16bit_grayscale_is_scaled_not_clipped():
    arr = np.full((8, 8), 30000, dtype=np.uint16)
    arr[0, 0] = 60000
    img = Image.fromarray(arr)  # uint16 -> mode I;16
    out = load_image(encode(img, "PNG"))
    r, g, b = out.getpixel((1, 1))
    assert r == g == b and 100 < r < 160  # 30000/60000 of full scale


@pytest.mark.parametrize(
    "data,reason", [(b"", "not a readable image"), (b"hello world", "not a readable image")]
)
def test_non_images_are_rejected_with_a_reason(data, reason):
    with pytest.raises(ImageDecodeError, match=reason):
        load_image(data)


def test_truncated_image_is_rejected():
    data = make_image(fmt="PNG", size=(128, 128))
    with pytest.raises(ImageDecodeError):
        load_image(data[: len(data) // 2])


def test_decompression_bomb_is_rejected_before_decoding(monkeypatch):
    data = make_image(size=(300, 300))
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: pytest.fail("decoded the pixels"))
    with pytest.raises(ImageTooLargeError, match="limit is 10,000 pixels"):
        load_image(data, max_pixels=10_000)


def test_pillows_own_bomb_check_also_counts_as_too_large(monkeypatch):
    # A caller allowing more than Pillow does meets Pillow's DecompressionBombError first.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000)
    with pytest.raises(ImageTooLargeError, match="too many pixels"):
        load_image(make_image(size=(100, 100)), max_pixels=10**9)


def test_full_decode_formats_over_the_decode_limit_are_refused_from_the_header(monkeypatch):
    png = make_image(size=(400, 300), fmt="PNG")
    assert load_image(png, max_decode_pixels=120_000).size == (400, 300)
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: pytest.fail("decoded the pixels"))
    with pytest.raises(ImageTooLargeError) as caught:
        load_image(png, max_decode_pixels=100_000)
    assert "400x300" in str(caught.value) and "0.1 megapixels" in str(caught.value)
    assert "Resize it" in str(caught.value)


def test_a_jpeg_over_the_decode_limit_is_decoded_at_a_reduced_scale_instead():
    jpeg = make_image(size=(1600, 1600), fmt="JPEG")
    # 2.56 MP in the file; at 1/8 scale only 200x200 pixels are decoded.
    img = load_image(jpeg, min_side=200, max_decode_pixels=50_000)
    assert img.size == (200, 200)
    with pytest.raises(ImageTooLargeError):
        load_image(jpeg, max_decode_pixels=50_000)  # no min_side: full decode, refused


def test_encoder_returns_unit_float32_rows_of_model_dimension(tiny_checkpoint):
    enc = ClipEncoder(TINY_MODEL_NAME, str(tiny_checkpoint))
    imgs = [load_image(make_image(c)) for c in [(255, 0, 0), (0, 255, 0), (0, 0, 255)]]
    iv = enc.encode_images(imgs)
    tv = enc.encode_texts(["red shirt", "green shirt"])
    assert iv.shape == (3, enc.dim) and tv.shape == (2, enc.dim) and enc.dim == 32
    assert iv.dtype == np.float32 and tv.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(iv, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(enc.encode_images(imgs[:1]), iv[:1], rtol=1e-5, atol=1e-6)
    assert enc.encode_texts([]).shape == (0, 32)


def test_model_id_changes_when_the_checkpoint_changes(tiny_checkpoint, tmp_path):
    import shutil

    copy = tmp_path / "copy.pt"
    shutil.copy(tiny_checkpoint, copy)
    a = ClipEncoder(TINY_MODEL_NAME, str(tiny_checkpoint)).model_id
    assert ClipEncoder(TINY_MODEL_NAME, str(copy)).model_id == a.replace("tiny.pt", "copy.pt")
    with open(copy, "ab") as fh:
        fh.write(b"\0")
    assert ClipEncoder(TINY_MODEL_NAME, str(copy)).model_id.split("@")[1] != a.split("@")[1]


def test_missing_checkpoint_path_gives_an_actionable_error(tmp_path):
    enc = ClipEncoder(TINY_MODEL_NAME, str(tmp_path / "nope.pt"))
    with pytest.raises(ModelLoadError, match="EMBEDDINGS_PRETRAINED"):
        enc.encode_texts(["x"])


def test_serving_processes_use_the_configured_thread_counts(settings):
    import faiss
    import torch

    from embeddings import runtime

    before = torch.get_num_threads()
    settings.EMBEDDINGS_TORCH_THREADS = 1
    settings.EMBEDDINGS_FAISS_THREADS = 1
    runtime.reset()
    try:
        runtime.get_encoder()
        assert torch.get_num_threads() == 1
        assert faiss.omp_get_max_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_a_large_photo_is_decoded_and_shrunk_only_as_far_as_the_model_needs(
    tiny_checkpoint, tmp_path
):
    """JPEG DCT scaling and a box reduction make big query photos cheap; the vector of the big
    photo stays that of the same picture at a modest size."""
    import io

    from PIL import Image

    from embeddings import runtime
    from embeddings.encoder import load_image

    encoder = runtime.get_encoder()
    side = encoder.decode_side
    assert side == 4 * encoder.image_size
    big = Image.new("RGB", (1600, 1200), (200, 30, 30))
    big.paste((20, 20, 220), (400, 300, 1200, 900))
    buf = io.BytesIO()
    big.save(buf, "JPEG", quality=95)
    decoded = load_image(buf.getvalue(), min_side=side)
    assert min(decoded.size) >= side and decoded.size[0] < 1600, decoded.size
    assert load_image(buf.getvalue()).size == (1600, 1200), "without min_side: full size"
    small = big.resize((4 * side * 4 // 3, 4 * side))
    a = encoder.encode_images([decoded])[0]
    b = encoder.encode_images([small])[0]
    assert float(a @ b) > 0.98


def test_a_convolutional_tower_runs_channels_last_with_the_same_embeddings(tmp_path):
    """timm (convolutional) image towers are run with channels-last tensors, about 2x faster on
    CPU; the embeddings must be the model's own."""
    import json

    import open_clip
    import torch

    from embeddings.encoder import ClipEncoder, register_model_config

    name = "test-tiny-mobilenet"
    cfg = {
        "embed_dim": 32,
        "vision_cfg": {
            "timm_model_name": "mobilenetv2_050",
            "timm_model_pretrained": False,
            "timm_pool": "avg",
            "timm_proj": "mlp",
            "image_size": 64,
        },
        "text_cfg": {
            "context_length": 16,
            "vocab_size": 49408,
            "width": 32,
            "heads": 2,
            "layers": 1,
        },
    }
    register_model_config(name, cfg)
    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=None)
    model.eval()
    path = tmp_path / "mobile.pt"
    torch.save({"state_dict": model.state_dict()}, path)
    (tmp_path / "mobile.pt.json").write_text(json.dumps({"model_name": name, "model_cfg": cfg}))
    colours = [(200, 30, 30), (30, 180, 40), (30, 60, 220)]
    images = [Image.open(io.BytesIO(make_image(c))) for c in colours]
    with torch.no_grad():
        direct = model.encode_image(torch.stack([preprocess(i.convert("RGB")) for i in images]))
    direct = torch.nn.functional.normalize(direct, dim=-1).numpy()

    encoder = ClipEncoder(name, str(path), batch_size=2)
    got = encoder.encode_images(images)
    assert encoder._channels_last is True
    assert next(p for p in encoder._model.visual.parameters() if p.ndim == 4).is_contiguous(
        memory_format=torch.channels_last
    )
    np.testing.assert_allclose(got, direct, atol=1e-4)
