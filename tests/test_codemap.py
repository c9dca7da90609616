"""The map of the codes: the loop records the val faces' codes every epoch; one GIF frame each."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from faceedit.cache import Cache
from faceedit.codemap import load_codes, project, projection, write_map_for_cache
from faceedit.model import VAE
from faceedit.objective import VAEObjective
from faceedit.trainer import fit
from test_trainer import FAST, TINY, make_cache


def test_one_frame_per_epoch_on_one_fixed_projection(tmp_path):
    cache = Cache.open(make_cache(tmp_path / "cache"))
    torch.manual_seed(0)
    objective = VAEObjective(TINY, map_faces=10)
    result = fit(VAE(TINY), objective, cache, replace(FAST, epochs=3), tmp_path / "log")
    epochs, codes = load_codes(tmp_path / "log")
    assert epochs == (0, 1, 2, 3) and codes.shape == (4, 10, TINY.latent_dim)
    # the last frame is the trained model's mu of the first 10 val faces, in order
    rows = cache.indices("val")[:10]
    with torch.no_grad():
        mu = result.model.encode(torch.from_numpy(cache.images[rows]).float() / 255)[0]
    np.testing.assert_allclose(codes[-1], mu.numpy(), atol=2e-2)  # recorded under bf16 autocast
    assert not np.allclose(codes[0], codes[-1])  # the codes moved while training

    done = write_map_for_cache(tmp_path / "log", cache, "Smiling")
    gif = Image.open(done.gif)
    assert gif.n_frames == 4 == len(done.epochs)
    assert Image.open(done.final).size == gif.size

    mean, axes = projection(codes[-1])
    np.testing.assert_allclose(axes @ axes.T, np.eye(2), atol=1e-10)
    flat = project(codes, mean, axes)
    assert flat.shape == (4, 10, 2)
    with pytest.raises(ValueError, match="unknown attribute"):
        write_map_for_cache(tmp_path / "log", cache, "Smiles")


def test_no_records_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no codes_eNNN.npy"):
        load_codes(tmp_path)


def test_training_a_recipe_draws_the_map_into_its_log(tmp_path):
    from faceedit.objective import VAERecipe
    from faceedit.recipe import train_bundle

    cache = Cache.open(make_cache(tmp_path / "cache"))
    train_bundle(cache, tmp_path / "vae", VAERecipe(TINY, "Male"), replace(FAST, epochs=2), tmp_path / "log")
    assert Image.open(tmp_path / "log" / "figures" / "codemap.gif").n_frames == 3  # epochs 0, 1, 2
    train_bundle(cache, tmp_path / "vae2", VAERecipe(TINY, ""), replace(FAST, epochs=1), tmp_path / "log2")
    assert not (tmp_path / "log2" / "figures" / "codemap.gif").exists()
    with pytest.raises(ValueError, match="unknown attribute"):
        VAERecipe(TINY, "Smiles")


def test_the_bundle_points_to_its_map_and_the_audit_report_shows_it(tmp_path):
    import base64
    import json

    from faceedit.bundle import load_bundle
    from faceedit.codemap import read_bundle_map
    from faceedit.objective import VAERecipe
    from faceedit.recipe import train_bundle
    from faceedit.report import render_html
    from test_audit import audit, write_world  # the audit's constructed world

    cache = Cache.open(make_cache(tmp_path / "cache"))
    train_bundle(cache, tmp_path / "vae", VAERecipe(TINY, "Male"), replace(FAST, epochs=2), tmp_path / "log")
    meta = load_bundle(tmp_path / "vae").meta
    assert meta["codemap"]["attribute"] == "Male" and meta["codemap"]["epochs"] == 3
    figure = read_bundle_map(meta)
    assert figure is not None
    assert figure.gif == (tmp_path / "log" / "figures" / "codemap.gif").read_bytes()
    # a bundle whose log is gone (copied, shipped) has no map, and a run without one records none
    (tmp_path / "log" / "figures" / "codemap.gif").unlink()
    assert read_bundle_map(meta) is None
    train_bundle(cache, tmp_path / "vae2", VAERecipe(TINY, ""), replace(FAST, epochs=1), tmp_path / "log2")
    assert "codemap" not in json.loads((tmp_path / "vae2" / "config.json").read_text())

    from faceedit.codemap import MapFigure
    from faceedit.report import write_report
    result = audit(write_world(tmp_path / "world" / "cache"))
    shown = MapFigure(figure.gif, "Male", 3, 10)
    out = write_report(tmp_path / "r", result, {"test": "constructed"}, codemap=shown)
    page = (out / "report.html").read_text()
    assert "The map of the codes during training" in page
    assert base64.b64encode(figure.gif).decode("ascii") in page
    assert (out / "codemap.gif").read_bytes() == figure.gif
    assert "map of the codes" not in render_html(result, {"test": "constructed"}, {}, [])
