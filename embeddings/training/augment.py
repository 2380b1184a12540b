"""Phone-photo-like views of studio catalog shots, for training an image tower that also
understands what shoppers photograph.

A catalog photo is a product centred on white; a shopper's photo is the same kind of product
on a bed, floor or hanger, off-centre, tilted, in room light, blurred, noisy and JPEG'd.
:func:`phone_view` turns one into something like the other:

- background: the near-white studio background is replaced (p=0.6) by a texture (a
  patch of a real room photo when given, else a random smooth colour field with grain),
- geometry: random scale/crop, rotation up to 20 degrees, mild perspective, horizontal flip,
- light: brightness, contrast and a small white-balance shift - a little, because colour is a
  query attribute ("red dress") and must survive,
- camera: Gaussian blur, sensor noise, JPEG re-compression.

Everything is plain PIL/numpy on uint8 arrays, so cache builders can call it in worker
processes.
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image, ImageFilter


def _texture(rng: np.random.Generator, size: int, patches: np.ndarray | None) -> np.ndarray:
    """A ``(size, size, 3)`` uint8 background: a random crop of a room photo, else a smooth
    random colour field with grain."""
    if patches is not None and len(patches) and rng.random() < 0.7:
        src = patches[int(rng.integers(len(patches)))]
        h, w = src.shape[:2]
        crop = int(rng.integers(max(8, min(h, w) // 3), min(h, w) + 1))
        y, x = int(rng.integers(0, h - crop + 1)), int(rng.integers(0, w - crop + 1))
        img = Image.fromarray(np.ascontiguousarray(src[y : y + crop, x : x + crop]))
        return np.asarray(img.resize((size, size), Image.BILINEAR), dtype=np.uint8)
    base = rng.uniform(50, 220, size=3)
    grid = rng.normal(0, 14, size=(4, 4, 3))
    field = np.asarray(
        Image.fromarray(np.clip(grid + 128, 0, 255).astype(np.uint8)).resize(
            (size, size), Image.BICUBIC
        ),
        dtype=np.float32,
    )
    field = field - 128 + base
    field += rng.normal(0, rng.uniform(2, 10), size=(size, size, 1))
    return np.clip(field, 0, 255).astype(np.uint8)


def _foreground_mask(img: np.ndarray) -> np.ndarray:
    """Float ``(H, W, 1)`` in [0, 1]: 0 on the near-white studio background (the bright region
    reached from the image border, so a white product inside it is kept), feathered.

    The reach is grown on a quarter-size grid by repeated 4-neighbour dilation within the
    bright pixels (a flood fill in numpy, a few milliseconds)."""
    h, w = img.shape[:2]
    small = np.asarray(Image.fromarray(img).resize((max(1, w // 4), max(1, h // 4)), Image.BOX))
    bright = small.min(axis=2) >= 232
    reach = np.zeros_like(bright)
    reach[0, :], reach[-1, :], reach[:, 0], reach[:, -1] = (
        bright[0, :],
        bright[-1, :],
        bright[:, 0],
        bright[:, -1],
    )
    while True:
        grown = reach.copy()
        grown[1:, :] |= reach[:-1, :]
        grown[:-1, :] |= reach[1:, :]
        grown[:, 1:] |= reach[:, :-1]
        grown[:, :-1] |= reach[:, 1:]
        grown &= bright
        if (grown == reach).all():
            break
        reach = grown
    fg = Image.fromarray(np.where(reach, 0, 255).astype(np.uint8)).resize((w, h), Image.BILINEAR)
    # Shrink the product by a pixel so the white fringe of the cut-out goes too, then feather.
    fg = fg.filter(ImageFilter.MinFilter(5)).filter(ImageFilter.GaussianBlur(0.8))
    return (np.asarray(fg, dtype=np.float32) / 255.0)[..., None]


def phone_view(
    img: np.ndarray,
    out_size: int,
    rng: np.random.Generator,
    *,
    backgrounds: np.ndarray | None = None,
    studio: bool = True,
) -> np.ndarray:
    """One phone-photo-like view of ``img`` (uint8 ``(H, W, 3)``), as uint8
    ``(out_size, out_size, 3)``. ``studio=False`` (a photo already taken by a shopper) skips the
    background swap."""
    h, w = img.shape[:2]
    arr = img
    if studio and rng.random() < 0.6:
        mask = _foreground_mask(arr)
        # Swap only when the background is a plausible share of the frame: above ~82% the
        # flood fill has usually run into a white product through its pale edge.
        if 0.18 < mask.mean() < 0.95:
            bg = _texture(rng, max(h, w), backgrounds)[:h, :w].astype(np.float32)
            arr = (arr.astype(np.float32) * mask + bg * (1 - mask)).astype(np.uint8)
    pil = Image.fromarray(arr)
    fill = tuple(int(v) for v in arr[0, 0])
    # Geometry: zoom out a little (a product smaller in the frame) or crop in, rotate, tilt.
    if rng.random() < 0.7:
        angle = float(rng.uniform(-20, 20))
        pil = pil.rotate(angle, resample=Image.BILINEAR, expand=False, fillcolor=fill)
    if rng.random() < 0.4:
        d = 0.12 * min(h, w)
        src = [(0, 0), (w, 0), (w, h), (0, h)]
        dst = [(x + rng.uniform(-d, d), y + rng.uniform(-d, d)) for x, y in src]
        pil = pil.transform(
            (w, h),
            Image.PERSPECTIVE,
            _perspective_coeffs(dst, src),
            resample=Image.BILINEAR,
            fillcolor=fill,
        )
    area = rng.uniform(0.45, 1.0)
    ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
    cw = min(w, int(round(w * math.sqrt(area * ratio))))
    ch = min(h, int(round(h * math.sqrt(area / ratio))))
    x0 = int(rng.integers(0, w - cw + 1))
    y0 = int(rng.integers(0, h - ch + 1))
    pil = pil.crop((x0, y0, x0 + cw, y0 + ch)).resize((out_size, out_size), Image.BICUBIC)
    if rng.random() < 0.5:
        pil = pil.transpose(Image.FLIP_LEFT_RIGHT)
    out = np.asarray(pil, dtype=np.float32)
    # Light: exposure, contrast, a slight white-balance cast; hue is never rotated.
    out = (out - 128) * rng.uniform(0.8, 1.1) + 128
    out = out * rng.uniform(0.75, 1.15) * rng.uniform(0.94, 1.06, size=3)
    if rng.random() < 0.3:
        out += rng.normal(0, rng.uniform(2, 8), size=out.shape)
    pil = Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))
    if rng.random() < 0.3:
        pil = pil.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.4, 1.4))))
    if rng.random() < 0.6:
        buf = io.BytesIO()
        pil.save(buf, format="JPEG", quality=int(rng.integers(30, 90)))
        buf.seek(0)
        pil = Image.open(buf).convert("RGB")
    return np.asarray(pil, dtype=np.uint8)


def _perspective_coeffs(dst, src) -> tuple[float, ...]:
    """PIL's 8 perspective coefficients mapping output points ``src`` to input points ``dst``."""
    a = []
    b = []
    for (x, y), (u, v) in zip(src, dst, strict=True):
        a.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        a.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        b.extend([u, v])
    return tuple(np.linalg.solve(np.asarray(a, float), np.asarray(b, float)).tolist())
