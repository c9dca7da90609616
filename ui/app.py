"""The Gradio page of the face editor: a thin shell over `faceedit.editor.Editor`.

Each handler turns page values into library calls and library errors into `gr.Error`, and is also a
named API endpoint for `gradio_client`: /encode (a photo file), /example (an example's index),
/sample (a seed), /edit (strengths as {attribute: alpha}, a method, compare on/off),
/interpolate (face B's file or seed, steps) and /download. The encoded z is kept per session in a
`gr.State`, so an edit only decodes.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np

from faceedit.attributes import ATTRIBUTES, FEATURED
from faceedit.editor import (COMPARE_METHODS, MAX_STEPS, STRENGTH_LIMIT, Editor, png_bytes,
                             save_downloads, upscale)
from faceedit.files import atomic_write_bytes

MAX_FILE_SIZE = "20mb"  # uploads above this are refused by the server before any handler runs
CONCURRENCY = 4  # requests decoded at once; the rest wait in the queue
MAX_QUEUE = 256
IMAGE_TYPES = [".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif"]
MORE = tuple(a for a in ATTRIBUTES if a not in FEATURED)
SLIDER_ORDER = (*FEATURED, *MORE)  # the order of the slider components, and of the packing below
PER_ROW = 4
STRIP_ZOOM = 2  # /interpolate returns the strip enlarged this many times

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


class ImageFiles:
    """Images handed to Gradio as PNG files written atomically, one per distinct content.

    Gradio 6.31 saves a returned numpy image to `<cache>/<content hash>/image.png` with a plain
    write, so two sessions that produce the same picture at once (the same example face, say) can
    serve each other a half-written file. A file path is instead copied into its cache under a
    temporary name and renamed. Files older than `keep_s` are removed as new ones are written.
    """

    def __init__(self, folder: Path, keep_s: float = 600.0):
        self.folder, self.keep_s = folder, keep_s
        self.folder.mkdir(parents=True, exist_ok=True)
        self._writes, self._lock = 0, threading.Lock()

    def __call__(self, image: np.ndarray | None) -> str | None:
        if image is None:
            return None
        data = png_bytes(image)
        path = self.folder / f"{hashlib.sha256(data).hexdigest()[:32]}.png"
        if not path.exists():
            atomic_write_bytes(path, data)
            with self._lock:
                self._writes += 1
                prune = self._writes % 200 == 0
            if prune:
                self._prune()
        return str(path)

    def _prune(self) -> None:
        cutoff = time.time() - self.keep_s
        for p in self.folder.glob("*.png"):
            try:
                if p.stat().st_mtime < cutoff:
                    p.unlink()
            except FileNotFoundError:  # pruned by another request at the same moment
                pass


class Handlers:
    """The page's callbacks; each is a plain function of page values (testable without a server)."""

    def __init__(self, editor: Editor, download_dir: str | Path | None = None):
        self.editor = editor
        work = Path(download_dir or tempfile.mkdtemp(prefix="faceedit-ui-"))
        self.download_dir, self.png = work / "downloads", ImageFiles(work / "images")

    def encode(self, photo: str | None):
        """Photo file -> (z, crop preview, original, reconstruction, edited = reconstruction)."""
        if not photo:
            raise gr.Error("No photo: upload a JPEG, PNG or WebP face photo.", title="Cannot do that")
        try:
            enc = self.editor.encode(photo)
        except ValueError as e:
            # Messages name the server's temporary copy; show the name the user uploaded instead.
            raise _fail(ValueError(str(e).replace(str(photo), Path(photo).name))) from None
        return self._faces(enc.z, enc.preview, enc.face, enc.reconstruction)

    def _faces(self, z, preview, face, reconstruction):
        png = self.png
        return z.numpy(), png(preview), png(face), png(reconstruction), png(reconstruction)

    def example(self, index: float | None):
        """Index of an example face -> same outputs as encode."""
        try:
            enc = self.editor.encode_example(int(index if index is not None else -1))
        except ValueError as e:
            raise _fail(e) from None
        return self._faces(enc.z, enc.preview, enc.face, enc.reconstruction)

    def sample(self, seed: float | None):
        """Seed -> a face from the prior (no photo: no crop preview; original = the sample)."""
        z, image = self.editor.sample(int(seed or 0))
        return self._faces(z, None, image, image)

    def edit(self, z: Any, strengths: dict | None, method: str, compare: bool):
        """-> (edited, naive, balanced); the last two only when compare is on (else left as they are)."""
        try:
            edited = self.editor.edit(z, strengths or {}, method)
            if not compare:
                return self.png(edited), gr.skip(), gr.skip()
            both = self.editor.compare(z, strengths or {}, COMPARE_METHODS)
        except ValueError as e:
            raise _fail(e) from None
        return self.png(edited), self.png(both["naive"]), self.png(both["balanced"])

    def interpolate(self, z: Any, photo_b: str | None, seed_b: float | None, steps: float):
        """Strip from the current face to face B (a photo, or a prior sample with seed_b), enlarged
        STRIP_ZOOM times: uint8 (Z*S, Z*steps*S, 3) as a PNG file."""
        try:
            if photo_b:
                z_b = self.editor.encode(photo_b).z
            else:
                z_b, _ = self.editor.sample(int(seed_b or 0))
            strip = self.editor.interpolate(self.editor.check_z(z), z_b, int(steps))
            return self.png(upscale(strip, STRIP_ZOOM))  # a 64 px strip is too small on a page
        except ValueError as e:
            msg = str(e).replace(str(photo_b), Path(photo_b).name) if photo_b else str(e)
            raise _fail(ValueError(msg)) from None

    def download(self, z: Any, strengths: dict | None, method: str, request: gr.Request | None = None):
        """The edited face as PNG files: model resolution and upscaled."""
        try:
            image = self.editor.edit(z, strengths or {}, method)
        except ValueError as e:
            raise _fail(e) from None
        session = getattr(request, "session_hash", None) or uuid.uuid4().hex
        folder = self.download_dir / str(session)[:32]
        return [str(p) for p in save_downloads(image, folder, stem=f"faceedit-{method}")]


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


def build_app(editor: Editor, download_dir: str | Path | None = None) -> gr.Blocks:
    """The editor page over a loaded Editor."""
    h = Handlers(editor, download_dir)
    with gr.Blocks(title="faceedit", delete_cache=(3600, 3600)) as demo:
        z = gr.State(None)
        strengths = gr.JSON(value={}, visible=False)
        gr.Markdown("## faceedit: edit a face along attribute vectors\n"
                    "Upload a face photo or pick a held-out face; it is cropped like the training "
                    "faces and encoded once. Each slider adds its attribute vector "
                    "(in units of the vector's length) to the code, and the face is decoded again.")
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=280):
                photo = gr.File(label="Face photo (JPEG, PNG or WebP)", file_types=IMAGE_TYPES,
                                type="filepath", elem_id="photo", height=130)
                crop = gr.Image(label="Crop (yellow box: what the model sees)", elem_id="crop",
                                type="filepath", format="png", height=220, interactive=False)
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
                    original = _face("Original (crop)", "original")
                    recon = _face("Reconstruction", "reconstruction")
                    edited = _face("Edited", "edited")
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

        faces = [z, crop, original, recon, edited]
        edit_io = dict(inputs=[z, strengths, method, compare], outputs=[edited, naive_img, balanced_img])

        def then_edit(dep):  # after a new face: apply the current sliders to it (no extra endpoint)
            return dep.then(h.edit, api_visibility="private", show_progress="hidden", **edit_io)

        # /edit first, so that the private re-edits after a new face do not take its name.
        gr.on([s.release for s in sliders] + [method.change, compare.change], None, sliders, strengths,
              js=PACK_JS, queue=False, api_visibility="private"
              ).then(h.edit, api_name="edit", show_progress="hidden", **edit_io)
        then_edit(photo.upload(h.encode, photo, faces, api_name="encode"))
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
        download_btn.click(h.download, [z, strengths, method], files, api_name="download").then(
            lambda: gr.update(visible=True), None, files, queue=False, api_visibility="private")
    demo.queue(default_concurrency_limit=CONCURRENCY, max_size=MAX_QUEUE)
    return demo


def launch(editor: Editor, host: str = "127.0.0.1", port: int = 7860, share: bool = False,
           block: bool = True, quiet: bool = False) -> gr.Blocks:
    """Build the page and serve it. block=False returns at once (tests); close with demo.close()."""
    demo = build_app(editor)
    demo.launch(server_name=host, server_port=port, share=share, max_file_size=MAX_FILE_SIZE,
                show_error=True, prevent_thread_lock=not block, quiet=quiet, css=CSS,
                footer_links=["api"])
    return demo


def serve(bundle: str | Path, bank: str | Path, host: str = "127.0.0.1", port: int = 7860,
          share: bool = False, cache: str | Path | None = None) -> None:
    """Load bundle and bank, then serve until interrupted."""
    launch(Editor.load(bundle, bank, cache=cache), host=host, port=port, share=share)
