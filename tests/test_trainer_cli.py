"""One smoke run per entry point: faceedit train / sample / reconstruct / pca."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from faceedit.bundle import load_bundle
from faceedit.cli import main
from test_trainer import make_cache

TINY = ["--channels", "8", "16", "--latent-dim", "4", "--norm", "none", "--batch-size", "8",
        "--epochs", "2", "--max-minutes", "0", "--threads", "1", "--no-progress", "--device", "cpu"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    cache = make_cache(root / "cache", n=48, size=16, val=8)
    assert main(["train", "--cache", str(cache), "--out", str(root / "bundle"), *TINY]) == 0
    return root, cache


def test_train_writes_a_bundle_with_its_provenance(trained):
    root, cache = trained
    b = load_bundle(root / "bundle")
    assert b.config.image_size == 16 and b.config.channels == (8, 16)  # size from the cache
    assert b.meta["cache"] == "test-0" and b.meta["training"]["epochs"] == 2
    assert b.meta["metrics"]["step"] == 10 and "val_psnr" in b.meta["metrics"]
    log = root / "bundle-log"
    assert len((log / "metrics.jsonl").read_text().splitlines()) == 3
    assert (log / "figures" / "samples_e002.png").is_file()
    assert (log / "figures" / "samples_fitted.png").is_file()
    assert b.meta["prior"]["fitted_on"] == "train" and b.meta["prior"]["images"] == 40
    # the fitted prior is the training codes' Gaussian, not N(0, I)
    assert not torch.equal(b.model.prior_scale_tril, torch.eye(4))
    mu, _ = b.model.encode(torch.rand(2, 3, 16, 16))
    assert mu.shape == (2, 4)


def test_train_refuses_a_log_dir_that_is_a_file_before_training(trained, tmp_path, capsys):
    # `faceedit train --out runs/x > runs/x-log` must not end in a worker's traceback after a while
    _, cache = trained
    (tmp_path / "vae-log").write_text("shell output\n")
    assert main(["train", "--cache", str(cache), "--out", str(tmp_path / "vae"), *TINY]) == 2
    err = capsys.readouterr().err
    assert f"--log-dir {tmp_path / 'vae-log'}: exists and is not a folder" in err
    assert (tmp_path / "vae-log").read_text() == "shell output\n"  # left as it was
    assert not (tmp_path / "vae").exists()


def test_sample_writes_a_grid(trained, tmp_path):
    root, _ = trained
    out = tmp_path / "grid.png"
    assert main(["sample", "--bundle", str(root / "bundle"), "-n", "6", "--out", str(out)]) == 0
    w, h = Image.open(out).size
    assert (w, h) == (3 * 18 + 2, 2 * 18 + 2)  # 6 faces of 16 px, 3 columns, 2 px gaps
    standard = tmp_path / "standard.png"
    assert main(["sample", "--bundle", str(root / "bundle"), "-n", "6", "--prior", "standard",
                 "--out", str(standard)]) == 0
    assert not np.array_equal(np.asarray(Image.open(out)), np.asarray(Image.open(standard)))


def test_sample_rejects_a_bad_temperature(trained, tmp_path, capsys):
    root, _ = trained
    assert main(["sample", "--bundle", str(root / "bundle"), "--temperature", "0",
                 "--out", str(tmp_path / "g.png")]) == 2
    assert "--temperature 0.0: expected > 0" in capsys.readouterr().err


def test_reconstruct_photos(trained, tmp_path, capsys):
    root, _ = trained
    photos = []
    for i, size in enumerate([(178, 218), (40, 40)]):
        p = tmp_path / f"p{i}.png"
        Image.fromarray(np.full((size[1], size[0], 3), 60 * (i + 1), np.uint8)).save(p)
        photos.append(str(p))
    out = tmp_path / "rec.png"
    assert main(["reconstruct", "--bundle", str(root / "bundle"), *photos, "--out", str(out)]) == 0
    assert Image.open(out).size == (2 * 18 + 2, 2 * 18 + 2)
    assert "PSNR" in capsys.readouterr().out


def test_reconstruct_a_non_image_is_a_clear_error(trained, tmp_path, capsys):
    root, _ = trained
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    assert main(["reconstruct", "--bundle", str(root / "bundle"), str(bad), "--out", str(tmp_path / "x.png")]) == 2
    assert "bad.jpg" in capsys.readouterr().err


def test_sample_from_a_missing_bundle_is_a_clear_error(tmp_path, capsys):
    assert main(["sample", "--bundle", str(tmp_path / "none"), "--out", str(tmp_path / "g.png")]) == 2
    assert "no such bundle folder" in capsys.readouterr().err


def test_pca_command_prints_its_psnr(trained, tmp_path, capsys):
    _, cache = trained
    assert main(["pca", "--cache", str(cache), "--latent-dim", "4", "--out", str(tmp_path / "p")]) == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert figures["latent_dim"] == 4 and 5 < figures["val_psnr"] < 60
    assert load_bundle(tmp_path / "p").kind == "pca"
