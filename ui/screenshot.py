"""A screenshot of the editor in use, taken with headless Chromium (for the README).

    .venv/bin/python -m ui.screenshot [--bundle B --bank K] [--photo P] [--example 0 --attr Smiling] \\
        --out docs/editor.png

Without --bundle/--bank it serves the real-face model shipped with faceedit (`faceedit serve`'s
default). Without --photo it makes one: a rendered face (faceedit.synth; real photos may not be
committed) tilted and off-centre in a larger picture, so the page shows the detection, the aligned
crop and the edit pasted back. Serves the page on a free loopback port, uploads the photo (then picks an example face if asked),
turns on the naive-vs-balanced view, drags one attribute's slider like a person would, waits for
the edited face to change, and saves the whole page. Playwright drives Debian's Chromium
(`playwright install` cannot download one here).
"""

from __future__ import annotations

import argparse
import math
import socket
import tempfile
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


def settle(page) -> None:
    """Wait until every image on the page has decoded (they arrive inside the answers as data: URLs
    and change the layout as they do): a drag measured before that can miss its slider."""
    page.wait_for_function("() => [...document.images].every(i => i.complete)", timeout=WAIT_MS)
    page.wait_for_timeout(300)


def slide(page, attr: str, fraction: float) -> str:
    """Drag `attr`'s slider like a person would and wait for the page's answer: /edit is not
    queued, so the release sends one POST (gradio_api/run/predict) and its answer carries the
    images. -> the edited face's new src."""
    before = page.locator("#edited img").get_attribute("src")
    number = page.locator(f"#s-{attr} input[type=number]")
    old = number.input_value()
    settle(page)
    with page.expect_response(lambda r: r.request.method == "POST" and r.url.endswith("/run/predict"),
                              timeout=WAIT_MS) as answer:
        drag(page, f"#s-{attr} input[type=range]", fraction)
    if not answer.value.ok:
        raise RuntimeError(f"the page's edit failed: HTTP {answer.value.status} from {answer.value.url}")
    if number.input_value() == old:
        raise RuntimeError(f"dragging the {attr} slider did not move it (still {old})")
    return wait_for_new_src(page, "#edited img", before)


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
    if not page.locator("#examples").is_visible():
        raise RuntimeError("the page has no example faces (the model was served without its cache): "
                           "leave out --example")
    page.locator("#examples button.thumbnail-item").nth(index).click()
    return wait_for_new_src(page, "#reconstruction img", before)


def rendered_photo(out: Path, person: int = 1, seed: int = 3, angle: float = 14.0, scale: float = 2.0,
                   size: tuple[int, int] = (760, 560), offset: tuple[int, int] = (330, 40)) -> Path:
    """Write a JPEG at `out`: rendered face `person` of `sample_labels(.., seed)`, turned by `angle`
    degrees and enlarged `scale` times at `offset` on a plain gradient background of `size`."""
    import cv2
    import numpy as np
    from PIL import Image

    from faceedit.synth import render_face, sample_labels

    face = np.asarray(render_face(sample_labels(person + 1, seed)[person], person).convert("RGB"))
    a = math.radians(angle)
    m = np.array([[scale * math.cos(a), -scale * math.sin(a), offset[0]],
                  [scale * math.sin(a), scale * math.cos(a), offset[1]]])
    w, h = size
    t = np.linspace(0, 1, w, dtype=np.float32)[None, :, None]
    background = ((1 - t) * np.array([150, 170, 160], np.float32) + t * np.array([95, 110, 140], np.float32))
    canvas = np.broadcast_to(background, (h, w, 3)).astype(np.uint8)
    moved = cv2.warpAffine(face, m, size, flags=cv2.INTER_LINEAR)
    inside = cv2.warpAffine(np.ones(face.shape[:2], np.float32), m, size, flags=cv2.INTER_LINEAR)[..., None]
    photo = (inside * moved + (1 - inside) * canvas + 0.5).astype(np.uint8)
    Image.fromarray(photo).save(out, quality=92)
    return out


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
            slide(page, attr, fraction)
            settle(page)  # the side-by-side and pasted-back images of the same answer
            out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(out), full_page=True)
        finally:
            browser.close()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", type=Path, default=None, help="default: the shipped real-face model")
    p.add_argument("--bank", type=Path, default=None, help="default: the shipped real-face model's bank")
    p.add_argument("--photo", type=Path, default=None, help="default: a rendered face, tilted, in a larger picture")
    p.add_argument("--out", type=Path, default=Path("runs/editor.png"))
    p.add_argument("--example", type=int, default=None, help="then pick this example face")
    p.add_argument("--attr", default="Smiling", help="the slider to drag (an attribute name)")
    p.add_argument("--fraction", type=float, default=0.83, help="where to drag it: 0 = -3, 1 = +3")
    args = p.parse_args()
    from faceedit.editor import Editor
    from faceedit.shipped import model_or_shipped
    from ui.app import launch

    try:
        args.bundle, args.bank = model_or_shipped(args.bundle, args.bank)
    except ValueError as e:
        p.error(str(e))
    demo = launch(Editor.load(args.bundle, args.bank), port=free_port(), block=False, quiet=True)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            photo = args.photo or rendered_photo(Path(tmp) / "rendered.jpg")
            print(take(demo.local_url, photo, args.out, args.attr, args.fraction, args.example))
    finally:
        demo.close()


if __name__ == "__main__":
    main()
