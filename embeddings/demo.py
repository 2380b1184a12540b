"""A generated demo catalog: drawn t-shirts, hoodies and tote bags with prints, titles that say
what is on them, categories and prices. Plain Python + Pillow (no Django).

``demo_catalog_write(folder, count=96)`` writes ``folder/images/*.png`` and ``folder/manifest.csv``
in the same layout as the shared Myntra sets (path, product_id, title, articleType, ...), so the
demo goes through exactly the import path a real catalog takes. The output is deterministic:
a second run writes the same files (same SKUs, same bytes), so importing it again changes nothing.
"""

from __future__ import annotations

import csv
import math
import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

SIZE = 224

COLOURS: dict[str, tuple[int, int, int]] = {
    "Red": (200, 30, 40),
    "Navy": (25, 35, 90),
    "White": (245, 245, 240),
    "Black": (25, 25, 25),
    "Yellow": (245, 205, 40),
    "Green": (40, 140, 60),
    "Pink": (240, 140, 180),
    "Grey": (140, 140, 145),
    "Orange": (240, 130, 30),
    "Sky blue": (120, 180, 235),
}
# Print colour that reads well on each body colour.
CONTRAST = {
    "Red": "White",
    "Navy": "White",
    "White": "Red",
    "Black": "Yellow",
    "Yellow": "Black",
    "Green": "White",
    "Pink": "Navy",
    "Grey": "Black",
    "Orange": "Navy",
    "Sky blue": "White",
}
GARMENTS = {
    # garment key -> (category, title noun, price range)
    "tshirt": ("T-shirts", "t-shirt", (12, 29)),
    "hoodie": ("Hoodies", "hoodie", (35, 69)),
    "tote": ("Tote bags", "tote bag", (9, 24)),
}
PRINTS = ["plain", "stripes", "dots", "star", "heart", "circle", "triangle", "cat", "sun", "tree"]
# The pattern attribute of a print (a facet value): the motifs are all "graphic".
PATTERNS = {"plain": "plain", "stripes": "striped", "dots": "dotted"}


@dataclass(frozen=True)
class DemoProduct:
    sku: str
    title: str
    category: str
    price: str
    description: str
    garment: str
    colour: str
    print_: str
    accent: str

    @property
    def filename(self) -> str:
        return f"{self.sku.lower()}.png"

    @property
    def pattern(self) -> str:
        return PATTERNS.get(self.print_, "graphic")


def _title(garment: str, colour: str, print_: str, accent: str) -> str:
    noun = GARMENTS[garment][1]
    a = accent.lower()
    if print_ == "plain":
        return f"Plain {colour.lower()} {noun}"
    if print_ == "stripes":
        return f"{colour} striped {noun}"
    if print_ == "dots":
        return f"{colour} {noun} with {a} dots"
    if print_ in {"cat", "sun", "tree"}:
        return f"{colour} {noun} with a {print_} print"
    return f"{colour} {noun} with a {a} {print_}"


def demo_products(count: int = 96, *, seed: int = 7) -> list[DemoProduct]:
    """``count`` distinct products (garment x colour x print), the same list for the same seed."""
    rng = random.Random(seed)
    combos = [(g, c, p) for g in GARMENTS for c in COLOURS for p in PRINTS]
    rng.shuffle(combos)
    products = []
    for n, (garment, colour, print_) in enumerate(combos[:count], start=1):
        accent = CONTRAST[colour]
        category, noun, (lo, hi) = GARMENTS[garment]
        price = f"{rng.randint(lo, hi)}.{rng.choice(['00', '50', '99'])}"
        title = _title(garment, colour, print_, accent)
        description = (
            f"A {colour.lower()} {noun}"
            + ("" if print_ == "plain" else f" with a {accent.lower()} {print_} print")
            + ". Soft organic cotton, regular fit."
        )
        products.append(
            DemoProduct(
                f"DEMO-{n:04d}",
                title,
                category,
                price,
                description,
                garment,
                colour,
                print_,
                accent,
            )
        )
    return products


# -- drawing --------------------------------------------------------------------------------------
def _tshirt_outline(long_sleeves: bool) -> list[tuple[float, float]]:
    s = SIZE / 224
    sleeve_end = 150 if long_sleeves else 95
    pts = [
        (80, 30),
        (95, 40),
        (112, 44),
        (129, 40),
        (144, 30),  # collar
        (190, 55),
        (205, sleeve_end),
        (178, sleeve_end + 8),  # right sleeve
        (168, 85),
        (168, 200),
        (56, 200),
        (56, 85),  # body
        (46, sleeve_end + 8),
        (19, sleeve_end),
        (34, 55),  # left sleeve
    ]
    return [(x * s, y * s) for x, y in pts]


def _star(cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    pts = []
    for i in range(10):
        rad = r if i % 2 == 0 else r * 0.45
        ang = -math.pi / 2 + i * math.pi / 5
        pts.append((cx + rad * math.cos(ang), cy + rad * math.sin(ang)))
    return pts


def _heart(cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    pts = []
    for i in range(60):
        t = 2 * math.pi * i / 60
        x = 16 * math.sin(t) ** 3
        y = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
        pts.append((cx + x * r / 16, cy - y * r / 16))
    return pts


def _draw_print(
    draw: ImageDraw.ImageDraw, print_: str, box: tuple[int, int, int, int], ink, body
) -> None:
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    r = min(x1 - x0, y1 - y0) / 2.6
    if print_ == "stripes":
        for y in range(y0, y1, 18):
            draw.rectangle((x0, y, x1, y + 8), fill=ink)
    elif print_ == "dots":
        for row, y in enumerate(range(y0 + 8, y1 - 4, 22)):
            for x in range(x0 + 8 + (row % 2) * 11, x1 - 4, 22):
                draw.ellipse((x - 5, y - 5, x + 5, y + 5), fill=ink)
    elif print_ == "star":
        draw.polygon(_star(cx, cy, r), fill=ink)
    elif print_ == "heart":
        draw.polygon(_heart(cx, cy, r), fill=ink)
    elif print_ == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=ink)
    elif print_ == "triangle":
        draw.polygon([(cx, cy - r), (cx + r, cy + r * 0.8), (cx - r, cy + r * 0.8)], fill=ink)
    elif print_ == "cat":
        head = r * 0.8
        draw.polygon(
            [
                (cx - head, cy - head * 0.3),
                (cx - head * 0.8, cy - head * 1.4),
                (cx - head * 0.2, cy - head * 0.8),
            ],
            fill=ink,
        )
        draw.polygon(
            [
                (cx + head, cy - head * 0.3),
                (cx + head * 0.8, cy - head * 1.4),
                (cx + head * 0.2, cy - head * 0.8),
            ],
            fill=ink,
        )
        draw.ellipse((cx - head, cy - head, cx + head, cy + head), fill=ink)
        for ex in (-0.4, 0.4):
            draw.ellipse((cx + ex * head - 5, cy - 8, cx + ex * head + 5, cy + 2), fill=body)
        draw.polygon([(cx - 4, cy + 8), (cx + 4, cy + 8), (cx, cy + 13)], fill=body)
    elif print_ == "sun":
        for i in range(12):
            ang = i * math.pi / 6
            draw.line(
                (
                    cx + r * 0.6 * math.cos(ang),
                    cy + r * 0.6 * math.sin(ang),
                    cx + r * math.cos(ang),
                    cy + r * math.sin(ang),
                ),
                fill=ink,
                width=5,
            )
        draw.ellipse((cx - r * 0.5, cy - r * 0.5, cx + r * 0.5, cy + r * 0.5), fill=ink)
    elif print_ == "tree":
        draw.rectangle((cx - 5, cy + r * 0.3, cx + 5, cy + r), fill=ink)
        draw.polygon(
            [(cx, cy - r), (cx + r * 0.8, cy + r * 0.4), (cx - r * 0.8, cy + r * 0.4)], fill=ink
        )


def demo_image(product: DemoProduct, *, size: int = SIZE) -> Image.Image:
    """The product drawn on a light background, centred, ``size`` x ``size`` pixels."""
    img = Image.new("RGB", (SIZE, SIZE), (236, 236, 232))
    draw = ImageDraw.Draw(img)
    body, ink = COLOURS[product.colour], COLOURS[product.accent]
    outline = (60, 60, 60)
    if product.garment == "tote":
        draw.arc((70, 20, 154, 110), 180, 360, fill=outline, width=8)
        draw.rectangle((45, 62, 179, 204), fill=body, outline=outline, width=2)
        box = (60, 80, 164, 190)
    else:
        hoodie = product.garment == "hoodie"
        if hoodie:
            draw.ellipse((78, 10, 146, 62), fill=body, outline=outline, width=2)
        draw.polygon(_tshirt_outline(long_sleeves=hoodie), fill=body, outline=outline)
        if hoodie:
            draw.rectangle((80, 160, 144, 190), outline=outline, width=2)  # front pocket
            box = (70, 70, 154, 150)
        else:
            box = (70, 70, 154, 185)
    if product.print_ != "plain":
        _draw_print(draw, product.print_, box, ink, body)
    return img if size == SIZE else img.resize((size, size), Image.Resampling.LANCZOS)


MANIFEST_COLUMNS = [
    "path",
    "product_id",
    "title",
    "articleType",
    "price",
    "description",
    "baseColour",
    "pattern",
]
# (attribute, manifest column) the demo import maps: colour, pattern and type to facet on.
DEMO_ATTRIBUTE_COLUMNS = (("colour", "baseColour"), ("pattern", "pattern"), ("type", "articleType"))


def demo_catalog_write(
    folder: Path, *, count: int = 96, seed: int = 7, progress: bool = False
) -> Path:
    """Writes the images and ``manifest.csv`` under ``folder``; returns the manifest's path.

    Images that already exist are not redrawn, so a second run is fast and byte-identical.
    """
    from tqdm import tqdm

    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    products = demo_products(count, seed=seed)
    manifest = folder / "manifest.csv"
    with manifest.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(MANIFEST_COLUMNS)
        for product in tqdm(
            products, desc="Drawing demo products", unit="img", disable=not progress
        ):
            rel = f"images/{product.filename}"
            target = folder / rel
            if not target.exists():
                demo_image(product).save(target, format="PNG", optimize=True)
            writer.writerow(
                [
                    rel,
                    product.sku,
                    product.title,
                    product.category,
                    product.price,
                    product.description,
                    product.colour,
                    product.pattern,
                ]
            )
    return manifest
