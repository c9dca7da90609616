"""The Gradio page of the face editor: a thin shell over `faceedit.editor.Editor`.

Each handler turns page values into library calls and library errors into `gr.Error`, and is also a
named API endpoint for `gradio_client`: /encode (a photo file, align on/off, which face), /example (an example's index),
/sample (a seed), /edit (strengths as {attribute: alpha}, a method, compare on/off; it also
returns the edit pasted back into the uploaded photo),
/interpolate (face B's file or seed, steps) and /download. The encoded z is kept per session in a
`gr.State`, so an edit only decodes; so is the uploaded photo with its alignment (in memory only:
nothing from an upload is written to disk except what is downloaded).

Images go to the page inside the answer (data: URLs, `data_url` and `_postprocess_inline`), at the size the page shows
them: nothing is written for them and the page makes no second request. /edit, the slider's
event, is not queued: the page sends one POST and gets one answer (bench/bench_editor.py,
BENCHMARKS.md). What is kept, and for how long: KEEP_MINUTES, README "What the editor keeps".
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import io
import json
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from gradio.data_classes import ImageData
from PIL import Image

from faceedit.attributes import ATTRIBUTES, FEATURED
from faceedit.editor import (COMPARE_METHODS, MAX_STEPS, STRENGTH_LIMIT, Editor, Placement, png_bytes,
                             save_downloads, upscale)
from faceedit.files import atomic_write_bytes

MAX_FILE_SIZE = "20mb"  # uploads above this are refused by the server before any handler runs
KEEP_MINUTES = 60  # uploads, results, downloads and session state are deleted after this long
SESSION_CAP = 1000  # sessions whose state is kept at once; the oldest go first beyond it
LOOPBACK = ("127.0.0.1", "localhost", "::1")
CONCURRENCY = 4  # requests decoded at once; the rest wait in the queue
MAX_QUEUE = 256
IMAGE_TYPES = [".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif"]
MORE = tuple(a for a in ATTRIBUTES if a not in FEATURED)
SLIDER_ORDER = (*FEATURED, *MORE)  # the order of the slider components, and of the packing below
PER_ROW = 4
STRIP_ZOOM = 2  # /interpolate returns the strip enlarged this many times
SHOWN_SIDE = 640  # the pasted-back photo is shown at most this large, twice its height on the page
# (downloaded at full size)
ALIGN_CHOICES = ("align the face (detect it)", "centre crop (no detection)")
MAX_SEED = 2**63 - 1  # torch.Generator's seeds
MAX_FACES = 99  # the face number a photo with several faces may ask for

CSS = """
.face img { image-rendering: auto; object-fit: contain; }
.gradio-container { max-width: 1280px !important; }
.sliders .block { min-width: 150px; }
#examples .grid-container { grid-template-columns: repeat(3, minmax(0, 1fr)) !important; }
"""

# Runs in the browser: the slider values, in SLIDER_ORDER, as {attribute: alpha} (no server trip).
PACK_JS = "(...v) => Object.fromEntries(%s.map((name, i) => [name, v[i]]))" % json.dumps(list(SLIDER_ORDER))
ZEROS_JS = "() => %s" % json.dumps([0] * len(SLIDER_ORDER))


def _label(attr: str) -> str:
    return attr.replace("_", " ")


def _fail(e: Exception) -> gr.Error:
    """A library error as a message on the page (and a clean error for API clients)."""
    return gr.Error(str(e), title="Cannot do that")


def _sentences(what: str):
    """Wrap a handler so that every error a page or API client sees is a sentence about its input:
    ValueErrors (which name the value and what was expected) as they are; anything else as a
    sentence without the server's internals, logged by its type alone (nothing of a photo)."""
    def wrap(fn):
        @functools.wraps(fn)
        def run(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except gr.Error:
                raise
            except ValueError as e:
                raise _fail(e) from None
            except Exception as e:  # a server fault: the caller learns no more than that
                print(f"faceedit serve: {what} failed: {type(e).__name__}", file=sys.stderr)
                raise gr.Error(f"Could not {what} with the values sent; check them against the API "
                               "page (or reload the page) and try again.", title="Cannot do that") from None
        return run
    return wrap


def inside(folder: Path, name: str) -> Path:
    """folder / name, refusing any name that would leave `folder` (absolute, `..`, a separator)."""
    path = (folder / name).resolve()
    if path.parent != folder.resolve() or not name or name in (".", ".."):
        raise ValueError(f"refusing to write outside {folder}: {name!r}")
    return path


def whole(value: Any, what: str, low: int, high: int) -> int:
    """A whole number from a page or API value, or a ValueError that says what was expected."""
    try:
        number = float(value if value is not None else low)
        if number != int(number):
            raise ValueError
        number = int(number)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{what} {value!r}: expected a whole number from {low} to {high}") from None
    if not low <= number <= high:
        raise ValueError(f"{what} {number}: expected a whole number from {low} to {high}")
    return number


def data_url(image: np.ndarray | None, jpeg: bool = False) -> str | None:
    """An image for the page, inside the answer: a data: URL of its PNG (exact pixels; the faces are
    64 px) or, for a photo, its JPEG (quality 90: a PNG of a photo costs tens of ms to encode and
    ten times the bytes). Nothing is written to disk and the page makes no second request."""
    if image is None:
        return None
    if not jpeg:
        return "data:image/png;base64," + base64.b64encode(png_bytes(image)).decode("ascii")
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=90)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _postprocess_inline(self: gr.Image, value: Any) -> ImageData | None:
    """gr.Image.postprocess that also takes a data: URL (`data_url`) and passes it to the page as it
    is: Gradio would write a returned image to its cache, and the page fetch it in a second request.
    Installed on the class: Gradio rebuilds components per session from their arguments (so a
    per-instance override is lost), and a gr.Image subclass makes it write a .pyi copy of this
    module. Any other value, and so any other gr.Image, is handled as before."""
    if isinstance(value, str) and value.startswith("data:image/"):
        return ImageData(url=value, mime_type=value[5:value.index(";")], orig_name="faceedit.png")
    return _IMAGE_POSTPROCESS(self, value)


_IMAGE_POSTPROCESS = getattr(gr.Image.postprocess, "plain", gr.Image.postprocess)  # Gradio's own
_postprocess_inline.plain = _IMAGE_POSTPROCESS  # type: ignore[attr-defined]  (a reload finds it here)
gr.Image.postprocess = _postprocess_inline  # type: ignore[method-assign]


@dataclass(frozen=True)
class PhotoState:
    """An uploaded photo's placement (for the full-size download) and the same at the size the page
    shows it (every edit is pasted into this one: at most SHOWN_SIDE px)."""

    full: Placement
    shown: Placement


def shown_placement(placement: Placement, side: int) -> Placement:
    """The placement of the photo shrunk to at most `side` px (BOX): its transform scaled to match."""
    h, w = placement.photo.shape[:2]
    k = side / max(h, w)
    if k >= 1:
        return placement
    small = np.asarray(Image.fromarray(placement.photo).resize((round(w * k), round(h * k)),
                                                              Image.Resampling.BOX))
    sx, sy = small.shape[1] / w, small.shape[0] / h
    matrix = np.array(placement.alignment.matrix, dtype=np.float64)  # photo -> aligned frame
    matrix[:, 0] /= sx  # small photo pixel (x k) -> frame: the linear part divided by the scale
    matrix[:, 1] /= sy
    alignment = dataclasses.replace(placement.alignment, matrix=matrix)
    return dataclasses.replace(placement, photo=small, alignment=alignment)


def prune_older(folder: Path, keep_s: float) -> None:
    """Remove the entries of `folder` (files, or folders with their files) older than keep_s."""
    cutoff = time.time() - keep_s
    for p in list(folder.iterdir()) if folder.is_dir() else []:
        try:
            if p.lstat().st_mtime < cutoff:
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
        except FileNotFoundError:  # pruned by another request at the same moment
            pass


class Handlers:
    """The page's callbacks; each is a plain function of page values (testable without a server)."""

    def __init__(self, editor: Editor, download_dir: str | Path | None = None,
                 keep_s: float = KEEP_MINUTES * 60.0):
        self.editor, self.keep_s = editor, keep_s
        self.own_work = download_dir is None  # a temporary folder of ours: removed by close()
        self.work = Path(download_dir or tempfile.mkdtemp(prefix="faceedit-ui-"))
        self.download_dir, self.png = self.work / "downloads", data_url

    def close(self) -> None:
        """Delete what this page wrote (its temporary folder; or, for a given folder, its files)."""
        if self.own_work:
            shutil.rmtree(self.work, ignore_errors=True)
        else:
            shutil.rmtree(self.download_dir, ignore_errors=True)

    @_sentences("read that photo")
    def encode(self, photo: str | None, align: str = ALIGN_CHOICES[0], face: float | None = 0):
        """Photo file, alignment choice, face number -> (z, crop preview, original, reconstruction,
        edited = reconstruction, placement, pasted = the photo, message)."""
        if not photo:
            raise gr.Error("No photo: upload a JPEG, PNG or WebP face photo.", title="Cannot do that")
        try:
            enc = self.editor.encode(photo, align=align != ALIGN_CHOICES[1],
                                     face=whole(face or 0, "face number", 0, MAX_FACES))
        except ValueError as e:
            # Messages name the server's temporary copy; show the name the user uploaded instead.
            msg = str(e).replace(str(photo), Path(photo).name)
            if "no face found" in msg:
                msg += f" (choose \"{ALIGN_CHOICES[1]}\" to edit the photo's centre as it is)"
            raise _fail(ValueError(msg)) from None
        state, pasted = None, None
        if enc.placement is not None:
            state = PhotoState(enc.placement, shown_placement(enc.placement, SHOWN_SIDE))
            pasted = self.png(state.shown.photo, jpeg=True)
        return (*self._faces(enc.z, enc.preview, enc.face, enc.reconstruction), state, pasted, enc.message)

    def reencode(self, photo: str | None, align: str, face: float | None):
        """The framing or the face number changed: encode the photo again (nothing without one)."""
        if not photo:
            return tuple(gr.skip() for _ in range(8))
        return self.encode(photo, align, face)

    def _faces(self, z, preview, face, reconstruction):
        png = self.png
        return z.numpy(), png(preview), png(face), png(reconstruction), png(reconstruction)

    def _no_photo(self, *outputs):
        """After an example or a prior sample: no photo to paste into."""
        return (*outputs, None, None, "")

    @_sentences("show that example")
    def example(self, index: float | None):
        """Index of an example face -> same outputs as encode."""
        last = max(0, len(self.editor.example_rows) - 1)
        enc = self.editor.encode_example(whole(index if index is not None else -1, "example", 0, last))
        return self._no_photo(*self._faces(enc.z, enc.preview, enc.face, enc.reconstruction))

    @_sentences("draw a face")
    def sample(self, seed: float | None):
        """Seed -> a face from the prior (no photo: no crop preview; original = the sample)."""
        z, image = self.editor.sample(whole(seed or 0, "seed", 0, MAX_SEED))
        return self._no_photo(*self._faces(z, None, image, image))

    @_sentences("edit the face")
    def edit(self, z: Any, strengths: dict | None, method: str, compare: bool, placement: Any = None):
        """-> (edited, naive, balanced, pasted): naive and balanced only when compare is on (else left
        as they are); pasted: the edit put back into the uploaded photo (none for other faces)."""
        try:
            edited = self.editor.edit(z, strengths or {}, method)
            pasted = (self.png(self.editor.paste(_shown(placement), edited), jpeg=True)
                      if placement is not None else None)
            if not compare:
                return self.png(edited), gr.skip(), gr.skip(), pasted
            both = self.editor.compare(z, strengths or {}, COMPARE_METHODS)
        except ValueError as e:
            raise _fail(e) from None
        return self.png(edited), self.png(both["naive"]), self.png(both["balanced"]), pasted

    @_sentences("interpolate")
    def interpolate(self, z: Any, photo_b: str | None, seed_b: float | None, steps: float):
        """Strip from the current face to face B (a photo, or a prior sample with seed_b), enlarged
        STRIP_ZOOM times: uint8 (Z*S, Z*steps*S, 3) as a PNG file."""
        try:
            if photo_b:
                z_b = self.editor.encode(photo_b).z
            else:
                z_b, _ = self.editor.sample(whole(seed_b or 0, "seed of face B", 0, MAX_SEED))
            strip = self.editor.interpolate(self.editor.check_z(z), z_b, whole(steps, "steps", 2, MAX_STEPS))
            return self.png(upscale(strip, STRIP_ZOOM))  # a 64 px strip is too small on a page
        except ValueError as e:
            msg = str(e).replace(str(photo_b), Path(photo_b).name) if photo_b else str(e)
            raise _fail(ValueError(msg)) from None

    @_sentences("make the download")
    def download(self, z: Any, strengths: dict | None, method: str, placement: Any = None):
        """The edited face as PNG files: model resolution and upscaled; and, for an uploaded photo,
        the photo with the edit pasted back at its own resolution."""
        try:
            image = self.editor.edit(z, strengths or {}, method)
            pasted = self.editor.paste(_full(placement), image) if placement is not None else None
        except ValueError as e:
            raise _fail(e) from None
        # A folder named here, never from the request (a client chooses its session hash).
        self.download_dir.mkdir(parents=True, exist_ok=True)
        prune_older(self.download_dir, self.keep_s)
        folder = inside(self.download_dir, uuid.uuid4().hex)
        paths = [str(p) for p in save_downloads(image, folder, stem=f"faceedit-{method}")]
        if pasted is not None:
            path = folder / f"faceedit-{method}-photo.png"
            atomic_write_bytes(path, png_bytes(pasted))
            paths.append(str(path))
        return paths


def _shown(placement: PhotoState | Placement) -> Placement:
    return placement.shown if isinstance(placement, PhotoState) else placement


def _full(placement: PhotoState | Placement) -> Placement:
    return placement.full if isinstance(placement, PhotoState) else placement


def _selected(event: gr.SelectData) -> tuple[int, None]:
    """The picked example's index; the photo box is cleared (it no longer shows the face edited)."""
    return event.index, None


def _face(label: str, elem_id: str, height: int = 240) -> gr.Image:
    return gr.Image(label=label, elem_id=elem_id, type="filepath", format="png", height=height,
                    interactive=False, elem_classes=["face"], buttons=["download", "fullscreen"])


def _slider_rows(names: tuple[str, ...]) -> list[gr.Slider]:
    sliders = []
    for i in range(0, len(names), PER_ROW):
        with gr.Row(elem_classes=["sliders"]):
            for attr in names[i:i + PER_ROW]:
                sliders.append(gr.Slider(-STRENGTH_LIMIT, STRENGTH_LIMIT, value=0.0, step=0.1,
                                         label=_label(attr), elem_id=f"s-{attr}", min_width=150))
    return sliders


def kept_line(keep_minutes: float) -> str:
    """The page's one line on what the server keeps, and for how long."""
    return (f"Privacy: a photo you upload, the faces made from it and your downloads are kept on this "
            f"server only for you, and deleted within {_minutes(keep_minutes)} (your session's state "
            "too); nothing of a photo is logged.")


def _minutes(m: float) -> str:
    return f"{m:g} minute{'s' if m != 1 else ''}" if m < 120 else f"{m / 60:g} hours"


def build_app(editor: Editor, download_dir: str | Path | None = None,
              keep_minutes: float = KEEP_MINUTES, models: dict[str, str] | None = None) -> gr.Blocks:
    """The editor page over a loaded Editor. Everything it stores (uploads, rendered faces,
    downloads, session state) is deleted `keep_minutes` after it was made; `demo.handlers.close()`
    removes its temporary folder (launch does, when the server stops). models: {label: url} of
    the pages serving other models ("" for this page's), shown as a switch at the top."""
    if not keep_minutes > 0:
        raise ValueError(f"keep_minutes {keep_minutes}: expected a positive number of minutes")
    keep_s = keep_minutes * 60.0
    h = Handlers(editor, download_dir, keep_s)
    # Gradio's cache (uploads and the files handed to the page): checked every keep_s / 6 (at least
    # a minute), so nothing stays much longer than keep_s.
    with gr.Blocks(title="faceedit", delete_cache=(max(60, int(keep_s // 6)), int(keep_s))) as demo:
        z = gr.State(None, time_to_live=keep_s)
        placement = gr.State(None, time_to_live=keep_s)  # the uploaded photo and its alignment (memory only)
        strengths = gr.JSON(value={}, visible=False)
        gr.Markdown("## faceedit: edit a face along attribute vectors\n"
                    "Upload a face photo or pick a held-out face; the face is found, aligned like "
                    "the training faces (CelebA's geometry) and encoded once; the edit is also put "
                    "back into your photo. Each slider adds its attribute vector "
                    "(in units of the vector's length) to the code, and the face is decoded again.")
        gr.Markdown(kept_line(keep_minutes), elem_id="privacy")
        if models:
            gr.Markdown(model_switch(models), elem_id="models")
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=280):
                photo = gr.File(label="Face photo (JPEG, PNG or WebP)", file_types=IMAGE_TYPES,
                                type="filepath", elem_id="photo", height=130)
                with gr.Row():
                    align = gr.Radio(list(ALIGN_CHOICES), value=ALIGN_CHOICES[0], label="framing",
                                     elem_id="align", scale=3)
                    face_no = gr.Number(value=0, precision=0, minimum=0, label="face (0 = largest)",
                                        elem_id="face-no", scale=1, min_width=80)
                crop = gr.Image(label="Detected face (yellow), landmarks, crop (blue) | aligned face",
                                elem_id="crop", type="filepath", format="png", height=220, interactive=False)
                found = gr.Markdown("", elem_id="found")
                gallery = gr.Gallery(value=[im for im, _ in editor.examples()], elem_id="examples",
                                     label="or a held-out face (val split)", columns=3, height=220,
                                     allow_preview=False, object_fit="cover",
                                     visible=bool(editor.example_rows))
                example_index = gr.Number(visible=False, precision=0)
                with gr.Row():
                    seed = gr.Number(value=0, precision=0, label="seed", min_width=80, scale=1)
                    random_btn = gr.Button("Random face", elem_id="random", scale=2)
            with gr.Column(scale=3):
                with gr.Row():
                    original = _face("Original (aligned crop)", "original")
                    recon = _face("Reconstruction", "reconstruction")
                    edited = _face("Edited", "edited")
                pasted = gr.Image(label="The edit pasted back into your photo (downloaded at full size)",
                                  elem_id="pasted", type="filepath", format="png", height=320,
                                  interactive=False, elem_classes=["face"], buttons=["download", "fullscreen"])
                with gr.Row(visible=False) as compare_row:
                    naive_img = _face("same edit, naive vector", "naive")
                    balanced_img = _face("same edit, balanced vector (White 2016, Fig. 7)", "balanced")
                with gr.Row(equal_height=True):
                    method = gr.Radio(list(editor.methods), value=editor.methods[0], label="Vector method",
                                      elem_id="method", scale=3)
                    compare = gr.Checkbox(value=False, label="naive vs balanced side by side",
                                          elem_id="compare", scale=2)
                    reset = gr.Button("Reset sliders", elem_id="reset", scale=1)
                sliders = _slider_rows(FEATURED)
                with gr.Accordion("more attributes", open=False, elem_id="more"):
                    sliders += _slider_rows(MORE)
                with gr.Row(equal_height=False):
                    download_btn = gr.Button("Download the edited face", elem_id="download", scale=1)
                    files = gr.File(label="Edited face: model resolution and 4x upscaled (PNG)",
                                    file_count="multiple", interactive=False, scale=3, visible=False,
                                    elem_id="files")
        with gr.Accordion("Interpolate to another face (slerp)", open=False, elem_id="interp"):
            with gr.Row():
                photo_b = gr.File(label="Face B (a photo; empty: a random face)", file_types=IMAGE_TYPES,
                                  type="filepath", height=100)
                seed_b = gr.Number(value=1, precision=0, label="seed of the random face B")
                steps = gr.Slider(2, MAX_STEPS, value=8, step=1, label="steps")
                interp_btn = gr.Button("Interpolate", elem_id="interpolate")
            strip = gr.Image(label="current face -> face B", elem_id="strip", type="filepath", format="png",
                             interactive=False)
        with gr.Accordion("Loaded model and vectors", open=False, elem_id="info"):
            gr.Markdown(editor.describe())

        faces = [z, crop, original, recon, edited, placement, pasted, found]
        edit_io = dict(inputs=[z, strengths, method, compare, placement],
                       outputs=[edited, naive_img, balanced_img, pasted])

        def then_edit(dep):  # after a new face: apply the current sliders to it (no extra endpoint)
            return dep.then(h.edit, api_visibility="private", show_progress="hidden", **edit_io)

        # /edit first, so that the private re-edits after a new face do not take its name.
        gr.on([s.release for s in sliders] + [method.change, compare.change], None, sliders, strengths,
              js=PACK_JS, queue=False, api_visibility="private"
              ).then(h.edit, api_name="edit", show_progress="hidden", queue=False, **edit_io)
        then_edit(photo.upload(h.encode, [photo, align, face_no], faces, api_name="encode"))
        then_edit(gr.on([align.change, face_no.submit], h.reencode, [photo, align, face_no], faces,
                        api_visibility="private"))
        then_edit(gallery.select(_selected, None, [example_index, photo], queue=False,
                                 api_visibility="private")
                  .then(h.example, example_index, faces, api_name="example"))
        then_edit(random_btn.click(h.sample, seed, faces, api_name="sample"))
        random_btn.click(lambda: None, None, photo, queue=False, api_visibility="private")
        then_edit(reset.click(None, None, sliders, js=ZEROS_JS, queue=False, api_visibility="private")
                  .then(None, sliders, strengths, js=PACK_JS, queue=False, api_visibility="private"))
        compare.change(lambda on: gr.update(visible=on), compare, compare_row, queue=False,
                       api_visibility="private")
        interp_btn.click(h.interpolate, [z, photo_b, seed_b, steps], strip, api_name="interpolate")
        download_btn.click(h.download, [z, strengths, method, placement], files, api_name="download").then(
            lambda: gr.update(visible=True), None, files, queue=False, api_visibility="private")
    demo.queue(default_concurrency_limit=CONCURRENCY, max_size=MAX_QUEUE)
    demo.handlers = h  # type: ignore[attr-defined]
    return demo


def check_exposure(host: str, share: bool, auth: tuple[str, str] | None, no_auth: bool) -> None:
    """Serving beyond this machine needs a login, or the explicit choice of none."""
    if (host not in LOOPBACK or share) and auth is None and not no_auth:
        where = "a public gradio.live link" if share else f"--host {host}"
        raise ValueError(f"{where} exposes the editor (and the photos sent to it) beyond this machine: "
                         "pass --auth USER:PASSWORD to require a login, or --no-auth to expose it "
                         "without one")


def parse_auth(text: str | None) -> tuple[str, str] | None:
    """'user:password' -> (user, password); ValueError naming what is wrong."""
    if text is None:
        return None
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise ValueError("--auth: expected USER:PASSWORD (both non-empty, separated by a colon)")
    return user, password


def model_switch(models: dict[str, str]) -> str:
    """One markdown line: the model this page edits with, and links to the pages of the others."""
    here = [label for label, url in models.items() if not url]
    others = [f"[{label}]({url})" for label, url in models.items() if url]
    return f"**Model:** {here[0] if here else 'this page'}. Switch to: " + ", ".join(others)


def launch(editor: Editor, host: str = "127.0.0.1", port: int = 7860, share: bool = False,
           block: bool = True, quiet: bool = False, auth: tuple[str, str] | None = None,
           no_auth: bool = False, keep_minutes: float = KEEP_MINUTES,
           models: dict[str, str] | None = None) -> gr.Blocks:
    """Build the page and serve it. block=False returns at once (tests); close with `close(demo)`.
    A non-loopback host or share=True needs `auth` (user, password) or no_auth=True."""
    check_exposure(host, share, auth, no_auth)
    demo = build_app(editor, keep_minutes=keep_minutes, models=models)
    try:
        demo.launch(server_name=host, server_port=port, share=share, max_file_size=MAX_FILE_SIZE,
                    show_error=True, prevent_thread_lock=not block, quiet=quiet, css=CSS,
                    footer_links=["api"], auth=auth, state_session_capacity=SESSION_CAP)
    finally:
        if block:  # served until interrupted: delete what it kept
            close(demo)
    return demo


def close(demo: gr.Blocks) -> None:
    """Stop the server and delete its temporary files (its folder and Gradio's cache of it)."""
    from gradio.route_utils import delete_files_created_by_app

    demo.close()
    demo.handlers.close()
    delete_files_created_by_app(demo, age=None)  # uploads and served files, whatever their age


def serve(bundle: str | Path, bank: str | Path, host: str = "127.0.0.1", port: int = 7860,
          share: bool = False, cache: str | Path | None = None, auth: tuple[str, str] | None = None,
          no_auth: bool = False, keep_minutes: float = KEEP_MINUTES,
          allow_bank_mismatch: bool = False, cvae: str | Path | None = None,
          also_shipped: str = "") -> None:
    """Load bundle and bank (and a conditional VAE: method "conditional"), then serve until
    interrupted. also_shipped (a label for this model):
    also serve the real-face model shipped with faceedit on port + 1, each page linking to the other."""
    check_exposure(host, share, auth, no_auth)
    editor = Editor.load(bundle, bank, cache=cache, allow_bank_mismatch=allow_bank_mismatch, cvae=cvae)
    models, other = None, None
    if also_shipped:
        from faceedit.shipped import LABEL, shipped_paths

        here, there = f"http://{host}:{port}/", f"http://{host}:{port + 1}/"
        other = launch(Editor.load(*shipped_paths()), host=host, port=port + 1, block=False, quiet=True,
                       auth=auth, no_auth=no_auth, keep_minutes=keep_minutes,
                       models={LABEL: "", also_shipped: here})
        models = {also_shipped: "", LABEL: there}
    try:
        launch(editor, host=host, port=port, share=share, auth=auth, no_auth=no_auth,
               keep_minutes=keep_minutes, models=models)
    finally:
        if other is not None:
            close(other)
