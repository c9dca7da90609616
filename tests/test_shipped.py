"""The real-face model shipped as package data: it loads, it is what config.json says it is."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from faceedit.bundle import load_bundle
from faceedit.images import face_array
from faceedit.metrics import psnr
from faceedit.shipped import SAMPLE_FILES, shipped_paths, shipped_record


def test_the_shipped_model_loads_small_and_with_its_bank():
    from safetensors import safe_open

    from faceedit.editor import Editor

    bundle, bank = shipped_paths()
    weights = bundle / "model.safetensors"
    assert weights.stat().st_size < 8 * 2**20  # a few MB: fp16
    with safe_open(str(weights), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}
    made = shipped_record()
    assert made["command"] == "./run.sh --data ../shared/data/celeba" and made["cache_hash"].startswith("sha256:")
    assert abs(made["val_psnr_fp16"] - made["val_psnr_recorded"]) < 0.05  # fp16 costs nothing visible
    editor = Editor.load(bundle, bank, threads=1)  # the bank was built from this model: accepted
    assert editor.size == 64 and "balanced" in editor.methods
    z, face = editor.sample(0)
    assert face.shape == (64, 64, 3)


def test_the_shipped_model_reconstructs_real_faces_as_recorded(real_celeba):
    made = shipped_record()
    files = made["sample_files"]
    assert len(files) == SAMPLE_FILES
    x = torch.from_numpy(np.stack([face_array(Image.open(real_celeba / "img_align_celeba" / f), 64)
                                   for f in files])).float() / 255  # (N, 3, 64, 64)
    model = load_bundle(shipped_paths()[0]).model
    with torch.no_grad():
        got = float(psnr(model.reconstruct(x), x).mean())
    assert got == pytest.approx(made["sample_psnr_fp16"], abs=0.05)  # the same faces, the same model
    assert got == pytest.approx(made["val_psnr_recorded"], abs=0.5)  # and the run's recorded val PSNR
    assert got > 20  # a trained real-face model


def test_serve_without_a_bundle_serves_the_shipped_model(monkeypatch, capsys):
    import ui.app
    from faceedit.cli import main

    served = {}
    monkeypatch.setattr(ui.app, "serve", lambda bundle, bank, **kw: served.update(bundle=bundle, bank=bank))
    assert main(["serve"]) == 0
    assert (served["bundle"], served["bank"]) == shipped_paths()
    assert "shipped with faceedit" in capsys.readouterr().out


def test_a_rendered_run_links_its_editor_to_the_shipped_model(monkeypatch):
    """`./run.sh` on rendered faces serves its model and the shipped real-face one, linked."""
    import ui.app
    from faceedit.shipped import LABEL

    pages = []
    monkeypatch.setattr(ui.app, "launch", lambda editor, **kw: pages.append((editor, kw)) or object())
    monkeypatch.setattr(ui.app, "close", lambda demo: None)
    bundle, bank = shipped_paths()
    ui.app.serve(bundle, bank, port=7000, also_shipped="this run's model (rendered faces)")
    (shipped, side), (run, main_page) = pages
    assert side["port"] == 7001 and main_page["port"] == 7000
    assert main_page["models"] == {"this run's model (rendered faces)": "", LABEL: "http://127.0.0.1:7001/"}
    assert side["models"][LABEL] == "" and side["models"]["this run's model (rendered faces)"] == "http://127.0.0.1:7000/"
    line = ui.app.model_switch(main_page["models"])
    assert line.startswith("**Model:** this run's model") and "(http://127.0.0.1:7001/)" in line
    page = ui.app.build_app(run, models=main_page["models"])
    try:
        assert line in [b.value for b in page.blocks.values() if hasattr(b, "value") and isinstance(b.value, str)]
    finally:
        page.handlers.close()


def test_edit_without_a_bundle_edits_with_the_shipped_model(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    from faceedit.cli import main

    photo = tmp_path / "photo.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (80, 80, 3), dtype=np.uint8)).save(photo)
    out = tmp_path / "grid.png"
    assert main(["edit", str(photo), "--centre-crop", "--set", "Smiling=1", "--out", str(out)]) == 0
    assert "shipped with faceedit" in capsys.readouterr().out
    width, height = Image.open(out).size
    assert width >= 3 * 64 * 2 and height >= 64 * 2  # original | reconstruction | edit, 64x64 at x2
    # one of the two is not a model: refused, naming both options
    assert main(["edit", str(photo), "--centre-crop", "--set", "Smiling=1", "--out", str(out),
                 "--bundle", str(shipped_paths()[0])]) == 2
    assert "give both --bundle and --bank" in capsys.readouterr().err
