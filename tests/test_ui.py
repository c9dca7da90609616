"""The face editor: library handlers, the Gradio server through gradio_client, a real browser
(headless Chromium driven by Playwright), and a bounded load test.

Everything runs on a tiny untrained VAE and a bank built from it on a tiny cache written here, through
the real save_bundle / build_bank APIs; uploads are the real photos of ../shared/data/real_faces.
"""

from __future__ import annotations

import base64
import io
import socket
import statistics
import struct
import time
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from faceedit.attributes import ATTRIBUTES, FEATURED
from faceedit.bank import BankConfig, build_bank
from faceedit.bundle import save_bundle
from faceedit.cache import Cache, write_arrays
from faceedit.editor import Editor, save_downloads, upscale
from faceedit.model import VAE, VAEConfig

SIZE, DIM, N = 32, 16, 160
REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


# ---------------------------------------------------------------------------- fixtures

def picture(value) -> Image.Image:
    """An image output of the API: sent inline as a data: URL (ui/app.py data_url), or a file."""
    if isinstance(value, dict):
        value = value["url"]
    if isinstance(value, str) and value.startswith("data:image/"):
        return Image.open(io.BytesIO(base64.b64decode(value.split(",", 1)[1])))
    return Image.open(value)


def write_cache(root: Path, n: int = N, size: int = SIZE, seed: int = 0) -> Path:
    """A tiny cache in the format of faceedit/cache.py whose pictures show their labels.

    Each attribute lights one (colour, block) of a 4x4 grid over random noise, and Smiling is
    confounded with Male as in CelebA (80% of faces: Smiling = not Male), so the naive and the
    balanced smile vectors differ.
    """
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, len(ATTRIBUTES))) < 0.5).astype(np.int8)
    male, smile = ATTRIBUTES.index("Male"), ATTRIBUTES.index("Smiling")
    labels[:, smile] = np.where(rng.random(n) < 0.8, 1 - labels[:, male], labels[:, smile])
    lit = np.zeros((n, 3, 4, 4))
    for k in range(len(ATTRIBUTES)):  # attribute k lights colour k % 3 of block k // 3
        lit[:, k % 3, (k // 3) // 4, (k // 3) % 4] += labels[:, k]
    low = np.clip(rng.integers(0, 80, (n, 3, 4, 4)) + 170 * lit, 0, 255).astype(np.uint8)
    images = low.repeat(size // 4, axis=2).repeat(size // 4, axis=3)  # (N, 3, 4, 4) -> (N, 3, S, S)
    return write_arrays(root, images, labels, f"test-{seed}-{n}-{size}", val=n - n * 3 // 4,
                        source="test fixture")  # the last quarter is val


@pytest.fixture(scope="session")
def tiny_paths(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(bundle, bank, cache) folders side by side, as `faceedit run` lays them out."""
    root = tmp_path_factory.mktemp("ui")
    cache = Cache.open(write_cache(root / "cache"))
    torch.manual_seed(0)
    model = VAE(VAEConfig(image_size=SIZE, latent_dim=DIM, channels=(8, 16), blocks=0, groups=4)).eval()
    with torch.no_grad():  # untrained, but with codes that spread and a decoder that answers them
        model.encoder.head.weight.mul_(20.0)  # like a trained model's (no training time spent)
        model.decoder.head.weight.mul_(20.0)
    bundle = save_bundle(root / "bundle", model, {"cache": cache.hash, "metrics": {"val_loss": 1.5}})
    with warnings.catch_warnings():  # 160 random faces make tiny cells; the bank warns, rightly
        warnings.simplefilter("ignore")
        bank = build_bank(model, cache, BankConfig(batch_size=64), progress=False).save(root / "bank")
    return bundle, bank, cache.root


@pytest.fixture(scope="session")
def editor(tiny_paths) -> Editor:
    bundle, bank, _ = tiny_paths
    return Editor.load(bundle, bank, threads=1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def server(editor, tmp_path_factory):
    """The app served on 127.0.0.1 at a free port, for the whole session -> its URL."""
    from ui.app import launch

    demo = launch(editor, port=free_port(), block=False, quiet=True)
    yield demo.local_url
    demo.close()


# ---------------------------------------------------------------------------- bad files

def png_bomb(side: int = 20000) -> bytes:
    """A complete, valid side x side 1-bit PNG (all black): ~50 KB on disk, `side`^2 pixels decoded."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))
    row = b"\x00" * (1 + (side + 7) // 8)  # filter byte + packed bits
    z = zlib.compressobj(9)
    body = b"".join(z.compress(row) for _ in range(side)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # 1-bit greyscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (40, 40), c) for c in ("red", "blue", "green")]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buf.getvalue()


def png16(photo: Path) -> bytes:
    grey = np.asarray(Image.open(photo).convert("L"), dtype=np.uint16) * 257  # 8 -> 16 bit
    buf = io.BytesIO()
    Image.fromarray(grey.astype(np.uint16)).save(buf, format="PNG")
    assert Image.open(io.BytesIO(buf.getvalue())).mode.startswith("I;16")
    return buf.getvalue()


@pytest.fixture(scope="session")
def bad_files(tmp_path_factory, real_faces) -> dict[str, tuple[Path, str]]:
    """name -> (file, a phrase the error message must contain)."""
    d = tmp_path_factory.mktemp("bad")
    jpeg = real_faces[0].read_bytes()
    files = {
        "not_an_image.jpg": (b"%PDF-1.4 this is not an image\n" * 20, "not an image"),
        "empty.png": (b"", "empty"),
        "truncated.jpg": (jpeg[: len(jpeg) // 3], "truncated"),
        "bomb.png": (png_bomb(), "too large"),
        "animated.gif": (animated_gif(), "animated"),
    }
    out = {}
    for name, (data, phrase) in files.items():
        (d / name).write_bytes(data)
        out[name] = (d / name, phrase)
    return out


# ---------------------------------------------------------------------------- library handlers

def test_encode_real_photos(editor, real_faces):
    for photo in real_faces:
        enc = editor.encode(photo)
        assert enc.face.shape == enc.reconstruction.shape == (SIZE, SIZE, 3)
        assert enc.face.dtype == enc.reconstruction.dtype == np.uint8
        assert enc.z.shape == (DIM,) and torch.isfinite(enc.z).all()
        h, w, _ = enc.preview.shape  # the photo (at most 256 px) beside the aligned frame
        assert h <= 256 and w <= 256 + 4 + round(178 * h / 218) + 1 and enc.preview.dtype == np.uint8
        # the detected face's box is drawn in the preview's highlight colour
        assert ((enc.preview == (255, 196, 0)).all(axis=2)).sum() > min(h, w)
        assert enc.placement is not None and enc.placement.photo.shape[:2] == Image.open(photo).size[::-1]
    # the same bytes give the same code (encoding is deterministic: z = mu)
    assert torch.equal(editor.encode(real_faces[0].read_bytes()).z, editor.encode(real_faces[0]).z)


def test_edit_zero_is_reconstruction_and_nonzero_changes(editor, real_faces):
    enc = editor.encode(real_faces[0])
    for method in editor.methods:
        assert np.array_equal(editor.edit(enc.z, {}, method), enc.reconstruction)
        zeros = {a: 0.0 for a in ATTRIBUTES}
        assert np.array_equal(editor.edit(enc.z, zeros, method), enc.reconstruction)
        moved = editor.edit(enc.z, {"Smiling": 2.0}, method)
        assert np.abs(moved.astype(int) - enc.reconstruction).max() > 0
    # a strength moves z by exactly alpha * v (decode only: z itself is not re-encoded)
    v = editor.bank.vector("Smiling", "balanced")
    assert torch.allclose(editor.edit_z(enc.z, {"Smiling": 1.5}, "balanced"), enc.z + 1.5 * v)


def test_compare_naive_balanced(editor, real_faces):
    z = editor.encode(real_faces[1]).z
    both = editor.compare(z, {"Smiling": 2.5})
    assert set(both) == {"naive", "balanced"}
    assert np.array_equal(both["balanced"], editor.edit(z, {"Smiling": 2.5}, "balanced"))
    assert not np.array_equal(both["naive"], both["balanced"])  # different vectors, different faces
    # the fixture confounds Smiling with Male: balancing removes most of that from the smile vector
    male = editor.bank.vector("Male", "naive")
    cos = {m: float(torch.cosine_similarity(editor.bank.vector("Smiling", m), male, dim=0))
           for m in ("naive", "balanced")}
    assert abs(cos["balanced"]) < abs(cos["naive"]), cos


def test_bad_strengths_and_methods(editor):
    z, _ = editor.sample(0)
    with pytest.raises(ValueError, match="Smiling"):
        editor.edit(z, {"Smilling": 1.0}, "balanced")  # the message lists the valid names
    with pytest.raises(ValueError, match="-3..3"):
        editor.edit(z, {"Smiling": 7.0}, "balanced")
    with pytest.raises(ValueError, match="offers"):
        editor.edit(z, {"Smiling": 1.0}, "magic")
    with pytest.raises(ValueError, match="no face"):
        editor.edit(None, {"Smiling": 1.0}, "balanced")
    with pytest.raises(ValueError, match=f"expected {DIM}"):
        editor.edit(np.zeros(DIM + 1), {}, "balanced")


def test_sample_and_interpolate(editor):
    z1, x1 = editor.sample(1)
    z1b, x1b = editor.sample(1)
    z2, x2 = editor.sample(2)
    assert torch.equal(z1, z1b) and np.array_equal(x1, x1b) and not torch.equal(z1, z2)
    strip = editor.interpolate(z1, z2, 5)
    assert strip.shape == (SIZE, 5 * SIZE, 3)
    assert np.array_equal(strip[:, :SIZE], x1)  # slerp endpoints are the two faces
    assert np.abs(strip[:, -SIZE:].astype(int) - x2).max() <= 1  # float rounding of slerp at t=1
    with pytest.raises(ValueError, match="steps"):
        editor.interpolate(z1, z2, 1)


def test_examples_come_from_the_val_split(editor, tiny_paths):
    cache = Cache.open(tiny_paths[2])
    val = set(cache.indices("val").tolist())
    assert editor.example_rows and set(editor.example_rows) <= val
    image, name = editor.examples()[0]
    assert np.array_equal(image, np.asarray(cache.images[editor.example_rows[0]]).transpose(1, 2, 0))
    assert name == cache.names[editor.example_rows[0]]
    enc = editor.encode_example(0)
    assert np.array_equal(enc.face, image)
    with pytest.raises(ValueError, match="example"):
        editor.encode_example(len(editor.example_rows))


def test_describe_names_bundle_bank_data_and_metrics(editor, tiny_paths):
    text = editor.describe()
    bundle, bank, cache = tiny_paths
    for needle in (str(bundle), str(bank), str(cache), "test fixture", "val_loss", "ROC AUC"):
        assert needle in text


def test_downloads(editor, tmp_path):
    z, image = editor.sample(3)
    small, big = save_downloads(editor.edit(z, {"Young": 1.0}), tmp_path, stem="x")
    a, b = np.asarray(Image.open(small)), np.asarray(Image.open(big))
    assert a.shape == (SIZE, SIZE, 3) and b.shape == (4 * SIZE, 4 * SIZE, 3)
    assert np.array_equal(a, editor.edit(z, {"Young": 1.0}))
    assert np.abs(upscale(a)[::4, ::4].astype(int) - a).mean() < 40  # same picture, larger


def test_bad_files_clear_errors(editor, bad_files):
    for name, (path, phrase) in bad_files.items():
        with pytest.raises(ValueError, match=phrase) as info:
            editor.encode(path)
        assert name in str(info.value), str(info.value)  # the message names the file


def test_unusual_but_valid_photos(editor, real_faces, tmp_path):
    """16-bit, greyscale, RGBA and WebP photos are converted, not refused."""
    img = Image.open(real_faces[2])
    rgba = img.convert("RGBA")
    variants = {"g16.png": png16(real_faces[2])}
    for name, im, fmt in (("grey.png", img.convert("L"), "PNG"), ("alpha.png", rgba, "PNG"),
                          ("photo.webp", img, "WEBP")):
        buf = io.BytesIO()
        im.save(buf, format=fmt)
        variants[name] = buf.getvalue()
    for name, data in variants.items():
        (tmp_path / name).write_bytes(data)
        enc = editor.encode(tmp_path / name)
        assert enc.face.shape == (SIZE, SIZE, 3), name


def test_examples_absent_without_the_training_cache(tiny_paths, tmp_path):
    bundle, bank, _ = tiny_paths
    import shutil
    shutil.copytree(bundle, tmp_path / "alone" / "bundle")  # no cache beside this copy
    ed = Editor.load(tmp_path / "alone" / "bundle", bank, threads=1)
    assert ed.example_rows == [] and ed.examples() == []
    assert "not on this machine" in ed.describe()


def test_page_handlers_directly(editor, real_faces, bad_files, tmp_path):
    """The Gradio callbacks without a server: PNG files out, gr.Error with the user's file name."""
    import gradio as gr

    from ui.app import Handlers

    h = Handlers(editor, tmp_path)
    z, crop, face, recon, edited, placement, pasted, found = h.encode(str(real_faces[0]))
    assert z.shape == (DIM,) and recon == edited  # same pixels, same file
    assert "1 face found" in found
    same, _, _, same_pasted = h.edit(z, {"Smiling": 0.0}, "balanced", False, placement)
    assert same == recon  # all-zero strengths: exactly the reconstruction
    assert same_pasted == pasted  # and the photo exactly as uploaded
    moved, naive, balanced, moved_pasted = h.edit(z, {"Smiling": 2.0}, "balanced", True, placement)
    assert moved != recon and moved == balanced and naive != balanced and moved_pasted != pasted
    files = h.download(z, {"Smiling": 2.0}, "balanced", placement)
    assert len(files) == 3 and Image.open(files[2]).size == Image.open(real_faces[0]).size
    for name, (path, phrase) in bad_files.items():
        hidden = tmp_path / "upload-3f2a" / name  # how Gradio stores an upload: a temporary folder
        hidden.parent.mkdir(exist_ok=True)
        hidden.write_bytes(path.read_bytes())
        with pytest.raises(gr.Error, match=phrase) as info:
            h.encode(str(hidden))
        assert name in str(info.value) and "upload-3f2a" not in str(info.value)
    with pytest.raises(gr.Error, match="no face"):
        h.edit(None, {"Smiling": 1.0}, "balanced", False)
    with pytest.raises(gr.Error, match="No photo"):
        h.encode(None)


# ---------------------------------------------------------------------------- the CLI

def test_serve_without_bundle_says_what_to_run(tmp_path, capsys):
    from faceedit.cli import main

    code = main(["serve", "--bundle", str(tmp_path / "nothing"), "--bank", str(tmp_path / "nobank")])
    err = capsys.readouterr().err
    assert code == 2
    assert "./run.sh" in err and "faceedit run" in err and "Traceback" not in err


def test_serve_command_serves_the_page(tiny_paths):
    """`faceedit serve` as a user runs it: a process that binds 127.0.0.1 and answers the page."""
    import subprocess
    import sys
    import urllib.request

    bundle, bank, _ = tiny_paths
    port = free_port()
    cmd = [sys.executable, "-m", "faceedit.cli", "serve", "--bundle", str(bundle), "--bank", str(bank),
           "--port", str(port)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline, page = time.monotonic() + 90, ""
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).read().decode()
                break
            except OSError:
                time.sleep(0.5)
        assert proc.poll() is None, proc.stdout.read().decode()
        assert "faceedit" in page
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_serve_defaults_are_loopback_without_share():
    from faceedit.cli import build_parser

    args = build_parser().parse_args(["serve", "--bundle", "b", "--bank", "k"])
    assert args.host == "127.0.0.1" and args.port == 7860 and args.share is False


# ---------------------------------------------------------------------------- the server via gradio_client

def test_api_encode_edit(server, real_faces, editor):
    from gradio_client import Client, handle_file

    from ui.app import STRIP_ZOOM

    client = Client(server, verbose=False)
    names = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert {"/encode", "/edit", "/sample", "/interpolate", "/example", "/download"} <= names
    crop, original, recon, edited, pasted, found = client.predict(handle_file(str(real_faces[0])),
                                                                   api_name="/encode")
    assert picture(pasted).size == Image.open(real_faces[0]).size and "1 face found" in found
    recon_px = np.asarray(picture(recon))
    assert recon_px.shape == (SIZE, SIZE, 3)
    assert np.array_equal(recon_px, editor.encode(real_faces[0]).reconstruction)
    same, _, _, _ = client.predict({a: 0.0 for a in FEATURED}, "balanced", False, api_name="/edit")
    assert np.array_equal(np.asarray(picture(same)), recon_px)
    moved, naive, balanced, _ = client.predict({"Smiling": 2.0}, "balanced", True, api_name="/edit")
    moved_px = np.asarray(picture(moved))
    assert not np.array_equal(moved_px, recon_px)
    assert np.array_equal(moved_px, np.asarray(picture(balanced)))
    assert not np.array_equal(np.asarray(picture(naive)), moved_px)
    small, big, photo = client.predict({"Smiling": 2.0}, "balanced", api_name="/download")
    assert Image.open(photo).size == Image.open(real_faces[0]).size
    assert np.array_equal(np.asarray(Image.open(small)), moved_px)
    assert Image.open(big).size == (4 * SIZE, 4 * SIZE)
    strip = client.predict(None, 5, 4, api_name="/interpolate")
    assert picture(strip).size == (4 * SIZE * STRIP_ZOOM, SIZE * STRIP_ZOOM)
    _, _, sample, _, no_photo, _ = client.predict(7, api_name="/sample")
    assert no_photo is None  # a prior sample has no photo to paste into
    assert np.array_equal(np.asarray(picture(sample)), editor.sample(7)[1])
    _, face, recon_ex, _, _, _ = client.predict(0, api_name="/example")
    assert np.array_equal(np.asarray(picture(face)), editor.examples()[0][0])
    assert np.array_equal(np.asarray(picture(recon_ex)), editor.encode_example(0).reconstruction)


def test_api_bad_files_are_clean_errors_and_server_keeps_serving(server, bad_files, real_faces):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    client = Client(server, verbose=False)
    for name, (path, phrase) in bad_files.items():
        with pytest.raises(AppError, match=phrase) as info:
            client.predict(handle_file(str(path)), api_name="/encode")
        assert name in str(info.value) and "/tmp/gradio" not in str(info.value)
    with pytest.raises(AppError, match="no face"):  # a new session has no face yet
        Client(server, verbose=False).predict({"Smiling": 1.0}, "balanced", False, api_name="/edit")
    out = client.predict(handle_file(str(real_faces[1])), api_name="/encode")  # still serving
    assert picture(out[2]).size == (SIZE, SIZE)


def test_upload_size_is_capped_by_the_server(server, tmp_path):
    """The server itself refuses an upload over MAX_FILE_SIZE (not only well-behaved clients)."""
    import httpx

    from ui.app import MAX_FILE_SIZE

    limit = int(MAX_FILE_SIZE.removesuffix("mb")) * 2**20
    body = b"\xff\xd8" + b"\x00" * limit  # a "JPEG" just over the cap
    r = httpx.post(server.rstrip("/") + "/gradio_api/upload",
                   files={"files": ("big.jpg", body, "image/jpeg")}, timeout=60)
    assert r.status_code == 413, (r.status_code, r.text[:200])
    assert httpx.get(server, timeout=30).status_code == 200  # and it keeps serving


def test_load_20_clients_200_edits(server, real_faces):
    from gradio_client import Client, handle_file

    def session(i: int) -> list[float]:
        client = Client(server, verbose=False)
        client.predict(handle_file(str(real_faces[i % len(real_faces)])), api_name="/encode")
        times = []
        for k in range(10):
            start = time.perf_counter()
            client.predict({"Smiling": (k - 5) / 2, "Male": i / 10}, "balanced", False, api_name="/edit")
            times.append(time.perf_counter() - start)
        return times

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(session, range(20)))  # raises if any request failed
    times = sorted(t for r in results for t in r)
    assert len(times) == 200
    p50, p95 = statistics.median(times), times[int(0.95 * len(times)) - 1]
    print(f"\nload: 20 clients, 200 edits, 0 errors; "
          f"round trip p50 {p50 * 1e3:.0f} ms, p95 {p95 * 1e3:.0f} ms")


# ---------------------------------------------------------------------------- a real browser

def test_browser_upload_slide_edit(server, real_faces, tilted_photo, tmp_path):
    pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not installed (Debian package chromium; ./test.sh installs it)")
    from playwright.sync_api import sync_playwright

    from ui.screenshot import drag, upload, wait_for_new_src

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1360, "height": 1000})
            page.goto(server)
            upload(page, real_faces[0])
            page.wait_for_selector("#edited img", timeout=30_000)
            assert page.locator("#crop img").count() == 1  # the crop preview is shown
            before = page.locator("#edited img").get_attribute("src")
            drag(page, "#s-Smiling input[type=range]", 0.9)
            after = wait_for_new_src(page, "#edited img", before)
            assert after != before
            assert float(page.locator("#s-Smiling input[type=number]").input_value()) > 1.0
            # reset puts every slider back to 0 and the edited face back to the reconstruction
            page.click("#reset")
            reset_src = wait_for_new_src(page, "#edited img", after)
            assert reset_src == page.locator("#reconstruction img").get_attribute("src")  # same pixels
            assert float(page.locator("#s-Smiling input[type=number]").input_value()) == 0.0
            shot = tmp_path / "editor.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            # a bad file in the browser: the message shows on the page, and the page keeps working
            bad = tmp_path / "bad.jpg"
            bad.write_bytes(b"not an image at all")
            page.locator("#photo button[aria-label=Clear]").click()
            page.locator("#photo input[type=file]").set_input_files(str(bad))
            page.wait_for_selector("text=not an image", timeout=30_000)
            upload(page, real_faces[1])
            # a tilted, off-centre photo: aligned, edited, and the edit pasted back into it
            before = page.locator("#pasted img").get_attribute("src")
            upload(page, tilted_photo)
            pasted = wait_for_new_src(page, "#pasted img", before)
            assert page.locator("#crop img").count() == 1  # detection, landmarks and the aligned face
            assert page.locator("#found").inner_text().startswith("1 face found")
            shown = page.locator("#pasted img").evaluate("i => [i.naturalWidth, i.naturalHeight]")
            assert shown == [420, 460]  # the user's own photo, at its own size
            drag(page, "#s-Smiling input[type=range]", 0.1)
            assert wait_for_new_src(page, "#pasted img", pasted) != pasted  # the edit, pasted back
        finally:
            browser.close()


# ---------------------------------------------------------------------------- photos aligned and pasted back

def misaligned(photo: Path, angle: float = 15.0, scale: float = 1.6, size=(420, 460)) -> np.ndarray:
    """A CelebA-style photo turned by `angle` degrees, enlarged and shifted inside a larger canvas
    with a mirrored border: a face nothing like CelebA's framing. -> uint8 (H, W, 3)."""
    import math

    from faceedit.align import warp

    a = math.radians(angle)
    m = np.array([[scale * math.cos(a), -scale * math.sin(a), 0.0],
                  [scale * math.sin(a), scale * math.cos(a), 0.0]])
    m[:, 2] = np.array(size) / 2 - m[:, :2] @ np.array([89.0, 130.0]) + [25, -10]  # face off-centre
    return warp(np.asarray(Image.open(photo).convert("RGB")), m, size)


@pytest.fixture(scope="session")
def tilted_photo(real_faces, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tilted") / "tilted.jpg"
    Image.fromarray(misaligned(real_faces[1])).save(path, quality=95)
    return path


def test_aligned_photo_is_edited_and_pasted_back(editor, real_faces, tilted_photo):
    enc = editor.encode(tilted_photo)
    photo = np.asarray(Image.open(tilted_photo))
    assert enc.placement is not None and enc.placement.photo.shape == photo.shape
    # the tilted photo's aligned crop is the upright original's aligned crop, near enough
    upright = editor.encode(real_faces[1]).face.astype(float)
    mse = ((enc.face.astype(float) - upright) ** 2).mean()
    assert 10 * np.log10(255 ** 2 / mse) > 20
    # the centre crop of the tilted photo (the old behaviour) is far from it
    centre = editor.encode(tilted_photo, align=False)
    assert centre.placement is None and ((centre.face.astype(float) - upright) ** 2).mean() > 4 * mse
    # an unedited face pastes back to the photo exactly; an edit changes only the face's region
    assert np.array_equal(editor.paste(enc.placement, enc.reconstruction), photo)
    edited = editor.edit(enc.z, {"Smiling": 2.5})
    pasted = editor.paste(enc.placement, edited)
    changed = np.abs(pasted.astype(int) - photo.astype(int)).max(axis=2) > 0
    assert pasted.shape == photo.shape and changed.any()
    ys, xs = np.nonzero(changed)
    box = enc.placement.alignment.face.box  # the detected face
    cx, cy = box[0] + box[2] / 2, box[1] + box[3] / 2
    assert abs(np.median(xs) - cx) < box[2] / 2 and abs(np.median(ys) - cy) < box[3] / 2
    assert not changed[:10].any() and not changed[:, :10].any()  # the photo's edges untouched
    face_mode = editor.paste(enc.placement, edited, mode="face")
    assert not np.array_equal(face_mode, pasted)


def test_no_face_several_faces_and_small_faces(editor, real_faces, tmp_path):
    import gradio as gr

    from faceedit.align import AlignError
    from ui.app import ALIGN_CHOICES, Handlers

    noise = tmp_path / "wall.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (240, 300, 3), dtype=np.uint8)).save(noise)
    with pytest.raises(AlignError, match=r"wall.png: no face found in the 300x240 photo"):
        editor.encode(noise)
    assert editor.encode(noise, align=False).face.shape == (SIZE, SIZE, 3)  # only when asked for
    h = Handlers(editor, tmp_path / "ui")
    with pytest.raises(gr.Error, match="centre crop"):
        h.encode(str(noise))
    assert h.encode(str(noise), ALIGN_CHOICES[1])[7] == "centre crop of the photo, not aligned"
    # two faces: the larger by default, the other by number
    face = Image.open(real_faces[1]).convert("RGB")
    group = Image.new("RGB", (520, 300), (120, 140, 160))
    group.paste(face.resize((160, 196)), (10, 50))
    group.paste(face.transpose(Image.Transpose.FLIP_LEFT_RIGHT).resize((220, 270)), (280, 15))
    group.save(tmp_path / "two.jpg", quality=95)
    big, small = editor.encode(tmp_path / "two.jpg"), editor.encode(tmp_path / "two.jpg", face=1)
    assert big.message.startswith("2 faces found") and "editing face 0" in big.message
    assert big.placement.alignment.face.box[0] > 250 and small.placement.alignment.face.box[0] < 200
    with pytest.raises(AlignError, match=r"face 2: the photo has 2 face\(s\)"):
        editor.encode(tmp_path / "two.jpg", face=2)
    # a face too small to use
    tiny = Image.new("RGB", (500, 400), (200, 200, 200))
    tiny.paste(face.resize((48, 59)), (200, 150))  # its box: about 32 px tall
    tiny.save(tmp_path / "tiny.jpg", quality=95)
    with pytest.raises(gr.Error, match=r"tiny.jpg: the face is too small to use: \d+ px across"):
        h.encode(str(tmp_path / "tiny.jpg"))
