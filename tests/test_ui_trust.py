"""The editor server writes only where it chose, keeps nothing longer than it says, and is not exposed
without a login by accident (issue 27)."""

from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from faceedit.bank import AttributeBank, BankConfig, BankError, BankMismatch, build_bank
from faceedit.bundle import save_bundle
from faceedit.cache import Cache
from faceedit.editor import Editor
from faceedit.model import VAE, VAEConfig
from test_ui import free_port, write_cache

gr = pytest.importorskip("gradio")

from ui.app import (ALIGN_CHOICES, KEEP_MINUTES, Handlers, build_app, check_exposure, close, inside, kept_line,  # noqa: E402
                    launch, parse_auth, prune_older)

CENTRE = ALIGN_CHOICES[1]  # the photo's centre crop, without face detection
CFG = VAEConfig(image_size=16, latent_dim=8, channels=(4, 8), blocks=0, groups=2)


def tiny_model(seed: int) -> VAE:
    torch.manual_seed(seed)
    return VAE(CFG).eval()


@pytest.fixture(scope="module")
def paths(tmp_path_factory) -> dict[str, Path]:
    """A bundle, its bank, and a second bundle of another model (the bank does not fit it)."""
    root = tmp_path_factory.mktemp("trust")
    cache = Cache.open(write_cache(root / "cache", n=64, size=16))
    model = tiny_model(0)
    bundle = save_bundle(root / "bundle", model, {"cache": cache.hash})
    other = save_bundle(root / "other", tiny_model(1), {"cache": cache.hash})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bank = build_bank(model, cache, BankConfig(batch_size=64), progress=False).save(root / "bank")
    return {"root": root, "cache": cache.root, "bundle": bundle, "other": other, "bank": bank}


@pytest.fixture(scope="module")
def photo(paths) -> Path:
    """A flat picture (no face in it: it is sent with CENTRE, the page's no-alignment choice)."""
    from PIL import Image

    path = paths["root"] / "my-face-4f2a.png"
    Image.fromarray(np.full((40, 32, 3), 120, np.uint8)).save(path)
    return path


# ---------------------------------------------------------------------------- where it writes

def test_inside_refuses_names_that_leave_the_folder(tmp_path):
    assert inside(tmp_path, "abc") == (tmp_path / "abc").resolve()
    for name in ("/etc/x", "../x", "a/../../x", "a/b", "..", ".", ""):
        with pytest.raises(ValueError, match="outside"):
            inside(tmp_path, name)


def test_download_folder_is_the_servers_choice(paths, tmp_path):
    h = Handlers(Editor.load(paths["bundle"], paths["bank"], threads=1), tmp_path / "work")
    z, _ = h.editor.sample(0)
    files = [Path(p) for p in h.download(z.numpy(), {"Smiling": 1.0}, "balanced")]
    assert all(p.resolve().parent.parent == (tmp_path / "work" / "downloads").resolve() for p in files)


def test_hostile_session_hashes_write_nothing_outside(paths, photo, tmp_path):
    """Every endpoint that writes, called with session hashes that name other places."""
    from gradio_client import Client, handle_file

    import shutil
    import uuid

    editor = Editor.load(paths["bundle"], paths["bank"], cache=paths["cache"], threads=1)
    demo = launch(editor, port=free_port(), block=False, quiet=True)
    # short enough to survive the [:32] the download folder name was cut to
    targets = [Path("/tmp") / f"fe27-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    hostile = [str(targets[0]), "../" * 5 + str(targets[1]).lstrip("/")]
    assert all(len(h) <= 32 for h in hostile)
    try:
        for session in hostile:
            client = Client(demo.local_url, verbose=False)
            client.session_hash = session
            client.predict(handle_file(str(photo)), CENTRE, 0, api_name="/encode")
            client.predict(0, api_name="/example")
            client.predict(3, api_name="/sample")
            client.predict({"Smiling": 1.5}, "balanced", True, api_name="/edit")
            client.predict(None, 2, 3, api_name="/interpolate")
            files = client.predict({"Smiling": 1.5}, "balanced", api_name="/download")
            assert len(files) == 2
    finally:
        close(demo)
        escaped = [t for t in targets if t.exists()]
        for t in escaped:
            shutil.rmtree(t)
    assert not escaped, "a client chose where the server writes"


# ---------------------------------------------------------------------------- what it keeps

def test_downloads_and_images_are_pruned_and_removed_on_close(paths, tmp_path):
    h = Handlers(Editor.load(paths["bundle"], paths["bank"], threads=1), keep_s=3600)
    z, _ = h.editor.sample(0)
    first = Path(h.download(z.numpy(), {}, "balanced")[0]).parent
    old = time.time() - 7200
    os.utime(first, (old, old))
    second = Path(h.download(z.numpy(), {"Male": 1.0}, "balanced")[0]).parent
    assert not first.exists() and second.exists(), "a download older than keep_s is deleted"
    h.edit(z.numpy(), {"Smiling": 1.0}, "balanced", True)  # rendered faces go inline, not to disk
    h.sample(3)
    assert [p.name for p in h.work.iterdir()] == ["downloads"]
    prune_older(h.download_dir, 0)
    assert list(h.download_dir.iterdir()) == []
    work = h.work
    assert work.is_dir()
    h.close()
    assert not work.exists(), "the temporary folder goes when the page closes"


def test_page_says_what_is_kept_and_state_expires(paths):
    editor = Editor.load(paths["bundle"], paths["bank"], threads=1)
    demo = build_app(editor, keep_minutes=30)
    try:
        texts = [b.value for b in demo.blocks.values() if isinstance(b, gr.Markdown)]
        assert kept_line(30) in texts and "30 minutes" in kept_line(30)
        states = [b for b in demo.blocks.values() if isinstance(b, gr.State)]
        assert states and all(s.time_to_live == 30 * 60 for s in states)
        assert demo.delete_cache[1] == 30 * 60 and demo.delete_cache[0] <= 30 * 60
    finally:
        demo.handlers.close()
    assert KEEP_MINUTES == 60
    with pytest.raises(ValueError, match="keep_minutes"):
        build_app(editor, keep_minutes=0)


def test_nothing_of_a_photo_is_logged(paths, photo, capfd):
    from gradio_client import Client, handle_file

    editor = Editor.load(paths["bundle"], paths["bank"], threads=1)
    demo = launch(editor, port=free_port(), block=False, quiet=True)
    try:
        client = Client(demo.local_url, verbose=False)
        client.predict(handle_file(str(photo)), CENTRE, 0, api_name="/encode")
        with pytest.raises(Exception):
            client.predict(handle_file(str(paths["bank"] / "bank.json")), api_name="/encode")
    finally:
        close(demo)
    out, err = capfd.readouterr()
    assert photo.stem not in out + err and "bank.json" not in out + err


# ---------------------------------------------------------------------------- exposure

def test_exposing_beyond_loopback_needs_auth_or_no_auth():
    check_exposure("127.0.0.1", False, None, False)
    for host, share in (("0.0.0.0", False), ("192.168.1.5", False), ("127.0.0.1", True)):
        with pytest.raises(ValueError, match="--auth USER:PASSWORD"):
            check_exposure(host, share, None, False)
        check_exposure(host, share, ("u", "p"), False)
        check_exposure(host, share, None, True)
    assert parse_auth("ann:s3cr:et") == ("ann", "s3cr:et")
    for bad in ("ann", ":pw", "ann:"):
        with pytest.raises(ValueError, match="USER:PASSWORD"):
            parse_auth(bad)


def test_serve_command_refuses_an_open_network_bind(paths, capsys):
    from faceedit.cli import main

    code = main(["serve", "--bundle", str(paths["bundle"]), "--bank", str(paths["bank"]),
                 "--host", "0.0.0.0", "--port", str(free_port())])
    assert code == 2 and "--no-auth" in capsys.readouterr().err


def test_auth_is_required_when_given(paths):
    import urllib.error
    import urllib.request

    editor = Editor.load(paths["bundle"], paths["bank"], threads=1)
    demo = launch(editor, port=free_port(), block=False, quiet=True, auth=("ann", "pw"))
    try:
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(demo.local_url + "gradio_api/info", timeout=10)
        assert e.value.code in (401, 403)
    finally:
        close(demo)


# ---------------------------------------------------------------------------- the bank's bundle

def test_a_bank_of_another_model_is_refused_unless_allowed(paths):
    with pytest.raises(BankMismatch, match="another model.*--allow-bank-mismatch"):
        Editor.load(paths["other"], paths["bank"], threads=1)
    with pytest.warns(UserWarning, match="another model"):
        Editor.load(paths["other"], paths["bank"], threads=1, allow_bank_mismatch=True)
    Editor.load(paths["bundle"], paths["bank"], threads=1)  # its own bundle: fine


def test_edit_and_audit_refuse_a_mismatched_bank(paths, photo, tmp_path, capsys):
    from faceedit.audit import AuditConfig, load_inputs
    from faceedit.cli import main

    args = ["edit", str(photo), "--centre-crop", "--bundle", str(paths["other"]), "--bank", str(paths["bank"]),
            "--set", "Smiling=1", "--out", str(tmp_path / "e.png")]
    assert main(args) == 2 and "another model" in capsys.readouterr().err
    assert not (tmp_path / "e.png").exists()
    with pytest.warns(UserWarning):
        assert main(args + ["--allow-bank-mismatch"]) == 0
    with pytest.raises(BankMismatch):
        load_inputs(str(paths["other"]), str(paths["bank"]), str(paths["cache"]), str(paths["other"]),
                    AuditConfig(pca=False), progress=False)


def test_a_bank_recording_no_model_is_refused(paths, tmp_path):
    import shutil

    bank = shutil.copytree(paths["bank"], tmp_path / "bank")
    info = json.loads((bank / "bank.json").read_text())
    info["source"] = {"cache_hash": info["source"]["cache_hash"]}
    (bank / "bank.json").write_text(json.dumps(info))
    with pytest.raises(BankMismatch, match="does not record"):
        Editor.load(paths["bundle"], bank, threads=1)


def test_invalid_bank_json_names_the_file(paths, tmp_path):
    import shutil

    bank = shutil.copytree(paths["bank"], tmp_path / "bank")
    (bank / "bank.json").write_text('{"format": 1, "methods": [')
    with pytest.raises(BankError, match=f"{bank / 'bank.json'}: not valid JSON"):
        AttributeBank.load(bank)


# ---------------------------------------------------------------------------- errors are sentences

def test_malformed_api_values_get_sentences_about_them(paths):
    h = Handlers(Editor.load(paths["bundle"], paths["bank"], cache=paths["cache"], threads=1))
    z = h.editor.sample(0)[0].numpy().tolist()
    calls = [
        (h.edit, (5, {}, "balanced", False), "latent of shape ()"),
        (h.edit, ("abc", {}, "balanced", False), "latent of type str"),
        (h.edit, (z, 5, "balanced", False), "strengths of type int"),
        (h.edit, (z, {"Smiling": [1]}, "balanced", False), "strength of Smiling"),
        (h.edit, (z, {"Smiling": "lots"}, "balanced", False), "strength of Smiling"),
        (h.edit, (z, {"Smiling": 1e400}, "balanced", False), "strength of Smiling"),
        (h.edit, (z, {"Smiling": 1}, ["balanced"], False), "method"),
        (h.sample, (1e30,), "seed"),
        (h.sample, ("abc",), "seed"),
        (h.sample, (-1,), "seed"),
        (h.example, ("first",), "example"),
        (h.example, (10**30,), "example"),
        (h.interpolate, (z, None, 1e300, 3), "seed of face B"),
        (h.interpolate, (z, None, 1, 1e9), "steps"),
        (h.interpolate, (z, None, 1, [2]), "steps"),
        (h.download, (None, {}, "balanced"), "no face encoded yet"),
    ]
    try:
        for fn, args, phrase in calls:
            with pytest.raises(gr.Error) as e:
                fn(*args)
            message = e.value.message
            assert phrase in message, (fn.__name__, args, message)
            assert "expected" in message or "upload" in message, message
            for internal in ("object", "unpacking", "invalid literal", "Traceback", "NoneType"):
                assert internal not in message, (fn.__name__, args, message)
    finally:
        h.close()


def test_an_unexpected_fault_is_a_sentence_and_logs_only_its_type(paths, capsys):
    h = Handlers(Editor.load(paths["bundle"], paths["bank"], threads=1))
    h.editor.decode = lambda z: (_ for _ in ()).throw(RuntimeError("secret internals /srv/x"))
    try:
        with pytest.raises(gr.Error) as e:
            h.sample(1)
    finally:
        h.close()
    assert "secret" not in e.value.message and "Could not draw a face" in e.value.message
    err = capsys.readouterr().err
    assert "RuntimeError" in err and "secret" not in err


# ---------------------------------------------------------------------------- a fast editor

def decoded(url: str) -> Image.Image:
    import base64
    import io

    assert url.startswith("data:image/")
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))


def test_edits_answer_inline_at_the_size_shown(paths, real_faces, tmp_path):
    """The slider's /edit is one unqueued request whose images are inside the answer; a large
    photo's pasted-back edit is rendered at the size the page shows (the download: full size)."""
    import ui.app as app

    editor = Editor.load(paths["bundle"], paths["bank"], threads=1)
    demo = build_app(editor)
    try:
        edit = next(fn for fn in demo.fns.values() if fn.api_name == "edit")
        assert edit.queue is False
    finally:
        demo.handlers.close()
    assert not Path(app.__file__).with_suffix(".pyi").exists(), "Gradio wrote a stub beside the app"
    big = tmp_path / "big.png"
    face = Image.open(real_faces[0])
    face.resize((face.width * 6, face.height * 6), Image.Resampling.BICUBIC).save(big)
    h = Handlers(editor, tmp_path / "work")
    try:
        z, _, _, _, _, state, pasted, _ = h.encode(str(big))
        assert max(decoded(pasted).size) == app.SHOWN_SIDE
        edited, naive, balanced, pasted = h.edit(z, {"Smiling": 2.0}, "balanced", False, state)
        assert decoded(edited).size == (16, 16) and max(decoded(pasted).size) == app.SHOWN_SIDE
        assert decoded(pasted).format == "JPEG" and decoded(edited).format == "PNG"
        files = h.download(z, {"Smiling": 2.0}, "balanced", state)
        assert Image.open(files[2]).size == (face.width * 6, face.height * 6)
        assert [p.name for p in (tmp_path / "work").iterdir()] == ["downloads"]
    finally:
        h.close()
