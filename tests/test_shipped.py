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
