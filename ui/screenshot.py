"""A screenshot of the editor in use, taken with headless Chromium (for the README).

    .venv/bin/python -m ui.screenshot --bundle runs/bundle-real64 --bank runs/bank-real64 \\
        --photo ../shared/data/real_faces/119900.jpg [--example 0 --attr Smiling] --out runs/editor.png

Serves the page on a free loopback port, uploads the photo (then picks an example face if asked),
turns on the naive-vs-balanced view, drags one attribute's slider like a person would, waits for
the edited face to change, and saves the whole page. Playwright drives Debian's Chromium
(`playwright install` cannot download one here).
"""

from __future__ import annotations

import argparse
import socket
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
WAIT_MS = 30_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def drag(page, selector: str, fraction: float) -> None:
    """Drag a range input's thumb from its centre to `fraction` of its width."""
    page.locator(selector).scroll_into_view_if_needed()  # mouse events land only inside the viewport
    box = page.locator(selector).bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] / 2, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * fraction, y, steps=8)
    page.mouse.up()


def wait_for_new_src(page, selector: str, before: str | None) -> str:
    """Wait until the image at `selector` shows a different file than `before`; its new src."""
    page.wait_for_function(
        "([sel, before]) => { const i = document.querySelector(sel);"
        " return i && i.src && i.src !== before; }",
        arg=[selector, before], timeout=WAIT_MS)
    return page.locator(selector).get_attribute("src")


def upload(page, photo: Path) -> str:
    """Upload a photo into the page (clearing a previous one); the reconstruction's src."""
    before = page.locator("#reconstruction img").get_attribute("src") if page.locator(
        "#reconstruction img").count() else None
    clear = page.locator("#photo button[aria-label=Clear]")
    if clear.count():
        clear.click()
    page.locator("#photo input[type=file]").set_input_files(str(photo))
    return wait_for_new_src(page, "#reconstruction img", before)


def pick_example(page, index: int) -> str:
    """Click the index-th example face; the reconstruction's new src."""
    before = page.locator("#reconstruction img").get_attribute("src") if page.locator(
        "#reconstruction img").count() else None
    page.locator("#examples button.thumbnail-item").nth(index).click()
    return wait_for_new_src(page, "#reconstruction img", before)


def take(url: str, photo: Path, out: Path, attr: str = "Smiling", fraction: float = 0.83,
         example: int | None = None, width: int = 1360) -> Path:
    """Drive the page at `url` (upload `photo`, then pick example `example` if given, drag the
    `attr` slider to `fraction` of its range) and save a full-page screenshot at `out`."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": 1000})
            page.goto(url)
            upload(page, photo)
            if example is not None:
                pick_example(page, example)
            page.wait_for_selector("#edited img", timeout=WAIT_MS)
            page.locator("#compare input").check()
            page.wait_for_selector("#balanced img", timeout=WAIT_MS)
            before = page.locator("#edited img").get_attribute("src")
            drag(page, f"#s-{attr} input[type=range]", fraction)
            wait_for_new_src(page, "#edited img", before)
            page.wait_for_timeout(500)  # let the side-by-side images settle
            out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(out), full_page=True)
        finally:
            browser.close()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", type=Path, required=True)
    p.add_argument("--bank", type=Path, required=True)
    p.add_argument("--photo", type=Path, required=True)
    p.add_argument("--out", type=Path, default=Path("runs/editor.png"))
    p.add_argument("--example", type=int, default=None, help="then pick this example face")
    p.add_argument("--attr", default="Smiling", help="the slider to drag (an attribute name)")
    p.add_argument("--fraction", type=float, default=0.83, help="where to drag it: 0 = -3, 1 = +3")
    args = p.parse_args()
    from faceedit.editor import Editor
    from ui.app import launch

    demo = launch(Editor.load(args.bundle, args.bank), port=free_port(), block=False, quiet=True)
    try:
        print(take(demo.local_url, args.photo, args.out, args.attr, args.fraction, args.example))
    finally:
        demo.close()


if __name__ == "__main__":
    main()
