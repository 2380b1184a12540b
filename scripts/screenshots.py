"""Screenshots of the main pages for the README, at desktop (1280x900) and phone (390x844) widths.

    .venv/bin/python scripts/screenshots.py                 # throwaway server, demo catalog
    .venv/bin/python scripts/screenshots.py --url http://127.0.0.1:8000 --user admin --password admin

Without --url it starts the app as the browser tests and `make demo` do: a throwaway DATA_DIR
under /tmp, `manage.py migrate`, a staff user, `load_demo_catalog`, `rebuild_index` and
`runserver --noreload` on a free port; the server and the folder are removed at the end. Pages:
a text search with facets and a sort, a photo search (a catalog photo uploaded), a product page,
and the admin's index health, catalog map and search analytics report. Each is saved as a JPEG
(quality 80, the viewport only) into docs/screenshots/, so the set stays well under 2 MB.

Playwright drives the system Chromium (/usr/bin/chromium), as the browser tests do.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync"]
VIEWPORTS = {"desktop": (1280, 900), "phone": (390, 844)}
USER, PASSWORD = "shots", "shots-pw-12345"
MORE_QUERIES = ("blue hoodie", "tote bag with a cat", "striped t-shirt")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def manage(env: dict[str, str], *args: str) -> None:
    print("+ manage.py", " ".join(args), flush=True)
    subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True)


def wait_until_up(url: str, server: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"runserver exited with status {server.returncode} before answering")
        with contextlib.suppress(OSError):
            urllib.request.urlopen(url + "/", timeout=5).close()
            return
        time.sleep(0.5)
    raise SystemExit(f"{url} did not answer within {seconds:.0f} s")


@contextlib.contextmanager
def throwaway_server(demo_source: str | None, keep: bool) -> Iterator[str]:
    data_dir = Path(tempfile.mkdtemp(prefix="shopsearch-shots-"))
    env = {**os.environ, "DATA_DIR": str(data_dir), "DEBUG": "1"}
    # SQLite inside the throwaway folder and tasks run inline: never a shared database or queue.
    for name in ("DATABASE_URL", "CELERY_BROKER_URL"):
        env.pop(name, None)
    print(f"DATA_DIR={data_dir}", flush=True)
    server: subprocess.Popen | None = None
    try:  # a failed set-up step removes the folder too
        manage(env, "migrate", "--noinput", "-v", "0")
        manage(
            env,
            "shell",
            "-v",
            "0",
            "-c",
            "from django.contrib.auth import get_user_model; get_user_model().objects"
            f".create_superuser({USER!r}, 'shots@example.com', {PASSWORD!r})",
        )
        manage(env, "load_demo_catalog", *(["--source", demo_source] if demo_source else []))
        manage(env, "rebuild_index")
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = subprocess.Popen(
            [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until_up(url, server)
        yield url
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
        if keep:
            print(f"kept {data_dir}")
        else:
            shutil.rmtree(data_dir, ignore_errors=True)


def a_catalog_photo(page, url: str, folder: Path) -> Path:
    """The first result's photo, fetched as the shopper's own photo for the photo search."""
    page.goto(url + "/")
    src = page.locator(".results .card img").first.get_attribute("src")
    with urllib.request.urlopen(urllib.parse.urljoin(url + "/", src), timeout=30) as response:
        data = response.read()
    path = folder / ("shopper-photo" + (Path(src.split("?")[0]).suffix or ".jpg"))
    path.write_bytes(data)
    return path


def take(
    browser, url: str, out: Path, query: str, facet: str, user: str, password: str, tmp: Path
) -> list[Path]:
    saved: list[Path] = []
    for label, (width, height) in VIEWPORTS.items():
        context = browser.new_context(
            viewport={"width": width, "height": height}, device_scale_factor=1
        )
        context.set_default_timeout(30_000)
        page = context.new_page()

        def shot(name: str, page=page, label=label) -> None:
            path = out / f"{name}-{label}.jpg"
            page.screenshot(path=str(path), type="jpeg", quality=80)
            saved.append(path)
            print(f"  {path}  {path.stat().st_size // 1024} KB", flush=True)

        # Text search narrowed by a facet value and sorted by price, the facet sidebar beside it.
        params = {"q": query, **dict([facet.split("=", 1)] if facet else []), "sort": "price"}
        page.goto(f"{url}/?{urllib.parse.urlencode(params)}")
        page.wait_for_selector(".results .card")
        shot("search")

        # Photo search: a catalog photo uploaded through the page's own form.
        photo = a_catalog_photo(page, url, tmp)
        page.goto(url + "/")
        page.click("summary:has-text('Search with a photo')")
        page.set_input_files("#photo-input", str(photo))
        page.locator("[data-cropper] canvas").wait_for(state="visible")
        page.click("button:has-text('Search by photo')")
        page.wait_for_url("**qi=*")
        page.wait_for_selector(".results .card")
        shot("photo-search")

        # The product page of the first text result.
        page.goto(f"{url}/?{urllib.parse.urlencode({'q': query})}")
        page.locator(".results .card a").first.click()
        page.wait_for_url(re.compile(r"/products/\d+/"))
        page.wait_for_load_state("networkidle")
        shot("product")

        # Staff pages.
        page.goto(url + "/admin/login/")
        page.fill("#id_username", user)
        page.fill("#id_password", password)
        page.click("input[type=submit]")
        page.wait_for_url("**/admin/")
        page.goto(url + "/admin/catalog/productimage/index-health/")
        shot("admin-index-health")
        page.goto(url + "/admin/catalog/productimage/catalog-map/")
        page.wait_for_selector("#catalog-map[data-ready='1']")
        shot("admin-catalog-map")
        for words in MORE_QUERIES:  # a few more searches, so the report has rows to show
            page.goto(f"{url}/?{urllib.parse.urlencode({'q': words})}")
        page.goto(url + "/admin/embeddings/searchevent/?period=24h")
        shot("admin-search-analytics")
        context.close()
    return saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="A running server (default: start a throwaway one)")
    parser.add_argument("--user", default=USER, help="Staff login for --url")
    parser.add_argument("--password", default=PASSWORD, help="Staff password for --url")
    parser.add_argument("--query", default="t-shirt", help="The text query shown")
    parser.add_argument(
        "--facet",
        default="colour=red",
        help="attribute=value the search is narrowed by ('' for none)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    parser.add_argument(
        "--demo-source",
        default=os.environ.get("DEMO_CATALOG"),
        help="load_demo_catalog --source (default: the drawn demo catalog)",
    )
    parser.add_argument("--keep", action="store_true", help="Keep the throwaway DATA_DIR")
    args = parser.parse_args()

    if not os.access(CHROMIUM, os.X_OK):
        raise SystemExit(f"{CHROMIUM} is missing: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    args.out.mkdir(parents=True, exist_ok=True)
    server = (
        contextlib.nullcontext(args.url.rstrip("/"))
        if args.url
        else throwaway_server(args.demo_source, args.keep)
    )
    user, password = (args.user, args.password) if args.url else (USER, PASSWORD)
    with server as url, tempfile.TemporaryDirectory() as tmp, sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            saved = take(browser, url, args.out, args.query, args.facet, user, password, Path(tmp))
        finally:
            browser.close()
    total = sum(p.stat().st_size for p in saved)
    print(f"{len(saved)} screenshots, {total / 1024:.0f} KB in {args.out}")


if __name__ == "__main__":
    main()
