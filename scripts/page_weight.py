"""Page weight: the bytes a desktop Chromium downloads for a page of a running shop.

    python scripts/page_weight.py http://127.0.0.1:8000/ [--path "/?q=shirt"] [--json]

For each path, a fresh browser context (empty cache, 1280 x 900, device scale 1) loads the page
and waits until the network is idle: "first view" is what a shopper downloads without scrolling
(the grid's images below the fold are lazy). Then it scrolls to the end and waits again:
"scrolled" counts every image of the page. Bytes are response bodies as received (HTML, images,
CSS/JS, other), summed per kind. Uses the system Chromium (/usr/bin/chromium), as the browser
tests do. Run it against `make demo` (the demo catalog) before and after a change to compare.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from urllib.parse import urljoin

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]


def kind_of(resource_type: str) -> str:
    if resource_type == "document":
        return "html"
    if resource_type == "image":
        return "images"
    if resource_type in {"stylesheet", "script", "font"}:
        return "css/js"
    return "other"


def measure(browser, url: str, *, width: int, height: int) -> dict:
    context = browser.new_context(
        viewport={"width": width, "height": height}, device_scale_factor=1
    )
    page = context.new_page()
    sizes: dict[str, int] = defaultdict(int)
    counts: dict[str, int] = defaultdict(int)
    largest: list[tuple[int, str]] = []

    def on_response(response) -> None:
        if response.status in (301, 302, 303, 304, 307, 308):
            return
        try:
            size = len(response.body())
        except Exception:  # a body the browser did not keep (aborted): nothing downloaded
            return
        kind = kind_of(response.request.resource_type)
        sizes[kind] += size
        counts[kind] += 1
        if kind == "images":
            largest.append((size, response.url))

    page.on("response", on_response)
    page.goto(url, wait_until="networkidle")
    first = {"bytes": dict(sizes), "requests": dict(counts)}
    page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
    page.wait_for_load_state("networkidle")
    page.wait_for_function("() => [...document.images].every(img => img.complete)", timeout=30_000)
    page.wait_for_timeout(300)  # responses of the last images reach the handler
    shown = page.eval_on_selector_all(
        ".results .card img",
        "imgs => imgs.map(i => [i.currentSrc, i.naturalWidth, i.getBoundingClientRect().width])",
    )
    context.close()
    return {
        "url": url,
        "viewport": f"{width}x{height}",
        "first_view": first,
        "scrolled": {"bytes": dict(sizes), "requests": dict(counts)},
        "grid_images": len(shown),
        "grid_image_example": shown[0] if shown else None,
        "largest_images": sorted(largest, reverse=True)[:3],
    }


def total(part: dict) -> int:
    return sum(part["bytes"].values())


def report(result: dict) -> str:
    lines = [f"{result['url']} at {result['viewport']} ({result['grid_images']} grid images)"]
    for label in ("first_view", "scrolled"):
        part = result[label]
        by_kind = ", ".join(
            f"{kind} {part['bytes'].get(kind, 0) / 1024:.1f} KiB ({part['requests'].get(kind, 0)})"
            for kind in ("html", "images", "css/js", "other")
        )
        lines.append(f"  {label:10} total {total(part) / 1024:8.1f} KiB: {by_kind}")
    if result["grid_image_example"]:
        src, natural, shown = result["grid_image_example"]
        lines.append(f"  first grid image: {src} ({natural} px file shown at {shown:.0f} px)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("base_url", help="the running shop, e.g. http://127.0.0.1:8000/")
    parser.add_argument(
        "--path",
        action="append",
        help='a page to measure (repeatable); default: "/" (the first page of the catalog)',
    )
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=900)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    options = parser.parse_args(argv)

    from playwright.sync_api import sync_playwright

    results = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        for path in options.path or ["/"]:
            url = urljoin(options.base_url, path)
            results.append(measure(browser, url, width=options.width, height=options.height))
        browser.close()
    if options.json:
        json.dump(results, sys.stdout, indent=2)
        print()
    else:
        print("\n".join(report(r) for r in results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
