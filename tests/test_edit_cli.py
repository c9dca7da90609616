"""`faceedit vectors` and `faceedit edit` end to end on a tiny bundle and cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from faceedit.bank import AttributeBank, bundle_digest
from faceedit.bundle import save_bundle
from faceedit.cli import main
from faceedit.edit import parse_strengths

from test_vectors_bank import tiny_vae, write_tiny_cache

pytestmark = pytest.mark.filterwarnings("ignore::faceedit.vectors.TinyCellWarning")


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    cache = write_tiny_cache(root / "cache")
    save_bundle(root / "bundle", tiny_vae(), {"note": "untrained, for tests"})
    rc = main(["vectors", "--bundle", str(root / "bundle"), "--cache", str(cache.root),
               "--out", str(root / "bank"), "--quiet", "--cap", "1"])
    assert rc == 0
    photo = np.random.default_rng(0).integers(0, 256, size=(50, 40, 4), dtype=np.uint8)
    Image.fromarray(photo, "RGBA").save(root / "photo.png")  # any size, with alpha
    return root


def test_vectors_command_writes_a_bank(made):
    bank = AttributeBank.load(made / "bank")
    assert bank.info["settings"]["cap"] == 1
    assert bank.info["source"]["bundle_hash"] == bundle_digest(made / "bundle")
    assert bank.dim == 8
    # cap 1 = no replication: every balanced vector is the naive one, and the capped ones are listed.
    torch.testing.assert_close(bank.matrix("balanced"), bank.matrix("naive"), rtol=1e-4, atol=1e-6)
    assert "Smiling" in bank.info["capped_vectors"] and bank.info["per_attribute"]["Smiling"]["capped"]
    assert bank.info["per_attribute"]["Smiling"]["ess"]["positive"] == sum(
        c["count"] for c in bank.info["per_attribute"]["Smiling"]["cells"] if c["values"]["Smiling"] == 1)


def test_edit_command_writes_three_faces(made, capsys):
    out = made / "edit.png"
    rc = main(["edit", "--bundle", str(made / "bundle"), "--bank", str(made / "bank"), str(made / "photo.png"), "--centre-crop",
               "--set", "Smiling=+1.5", "--set", "Eyeglasses=-1", "--method", "projection", "--scale", "1",
               "--out", str(out)])
    assert rc == 0 and f"wrote {out}" in capsys.readouterr().out
    img = Image.open(out)
    assert img.mode == "RGB" and img.width >= 3 * 16 and img.height >= 16


def test_edit_command_strip(made):
    out = made / "strip.png"
    rc = main(["edit", "--bundle", str(made / "bundle"), "--bank", str(made / "bank"), str(made / "photo.png"), "--centre-crop",
               "--strip", "Smiling", "--strengths", "-2", "0", "2", "--out", str(out)])
    assert rc == 0
    small = Image.open(out)
    rc = main(["edit", "--bundle", str(made / "bundle"), "--bank", str(made / "bank"), str(made / "photo.png"), "--centre-crop",
               "--strip", "Smiling", "--strip-methods", "naive", "balanced", "projection", "boundary",
               "--out", str(out)])
    assert rc == 0 and Image.open(out).height > small.height and Image.open(out).width > small.width


@pytest.mark.parametrize("args, message", [
    (["--set", "Smiling+1"], "expected ATTRIBUTE=STRENGTH"),
    (["--set", "Smile=1"], "unknown attribute 'Smile'; expected one of: 5_o_Clock_Shadow"),
    (["--set", "Smiling=lots"], "not a number"),
    (["--set", "Smiling=1", "--method", "svm"], "unknown method 'svm'; expected one of: naive, balanced"),
    (["--strip", "Smiley"], "unknown attribute 'Smiley'"),
    ([], "give either --set"),
    (["--set", "Smiling=1", "--strip", "Smiling"], "give either --set"),
])
def test_edit_command_errors(made, capsys, args, message):
    rc = main(["edit", "--bundle", str(made / "bundle"), "--bank", str(made / "bank"), str(made / "photo.png"), "--centre-crop",
               "--out", str(made / "bad.png"), *args])
    assert rc == 2
    assert message in capsys.readouterr().err
    assert not (made / "bad.png").exists()


def test_edit_command_refuses_a_non_image(made, capsys):
    (made / "notes.txt").write_text("not a picture")
    rc = main(["edit", "--bundle", str(made / "bundle"), "--bank", str(made / "bank"), str(made / "notes.txt"),
               "--set", "Smiling=1", "--out", str(made / "bad.png")])
    assert rc == 2 and "notes.txt" in capsys.readouterr().err


def test_edit_command_on_real_photos(made, real_faces, tmp_path):
    for photo in real_faces:  # different sizes, CelebA-style crops and others
        out = tmp_path / f"{photo.stem}.png"
        assert main(["edit", "--bundle", str(made / "bundle"), "--bank", str(made / "bank"), str(photo),
                     "--set", "Young=-1", "--out", str(out)]) == 0
        assert Image.open(out).width > 3 * 16


def test_edit_command_aligns_and_pastes_back(made, real_faces, tmp_path, capsys):
    photo = real_faces[0]
    out, pasted = tmp_path / "grid.png", tmp_path / "pasted.png"
    assert main(["edit", "--bundle", str(made / "bundle"), "--bank", str(made / "bank"), str(photo),
                 "--set", "Smiling=2", "--out", str(out), "--pasted", str(pasted)]) == 0
    original, result = np.asarray(Image.open(photo).convert("RGB")), np.asarray(Image.open(pasted))
    assert result.shape == original.shape  # the user's photo, its own size
    changed = np.abs(result.astype(int) - original.astype(int)).max(axis=2) > 0
    assert changed.any() and not changed[0].any() and not changed[-1].any()  # the face, not the edges
    # a photo without a face: a clear error that says what to do, and nothing written
    rc = main(["edit", "--bundle", str(made / "bundle"), "--bank", str(made / "bank"), str(made / "photo.png"),
               "--set", "Smiling=1", "--out", str(tmp_path / "none.png")])
    err = capsys.readouterr().err
    assert rc == 2 and "photo.png: no face found in the 40x50 photo" in err and "--centre-crop" in err
    assert not (tmp_path / "none.png").exists()
    # the files are written in the format their names ask for; a name no image format has is refused
    jpg = tmp_path / "pasted.jpg"
    assert main(["edit", "--bundle", str(made / "bundle"), "--bank", str(made / "bank"), str(photo),
                 "--set", "Smiling=2", "--out", str(tmp_path / "grid.webp"), "--pasted", str(jpg)]) == 0
    assert Image.open(jpg).format == "JPEG" and Image.open(jpg).size == Image.open(photo).size
    assert Image.open(tmp_path / "grid.webp").format == "WEBP"
    rc = main(["edit", "--bundle", str(made / "bundle"), "--bank", str(made / "bank"), str(photo),
               "--set", "Smiling=2", "--out", str(tmp_path / "grid.txt")])
    assert rc == 2 and "grid.txt: cannot write a '.txt' image" in capsys.readouterr().err
    assert not (tmp_path / "grid.txt").exists()


def test_parse_strengths():
    assert parse_strengths(["Smiling=+1.5", "Eyeglasses=-1", " Male = 0"]) == \
        {"Smiling": 1.5, "Eyeglasses": -1.0, "Male": 0.0}
    with pytest.raises(ValueError, match="set twice"):
        parse_strengths(["Smiling=1", "Smiling=2"])
    with pytest.raises(ValueError, match="finite"):
        parse_strengths(["Smiling=inf"])


def test_edit_command_on_cache_faces(made, capsys):
    out = made / "val.png"
    base = ["edit", "--bundle", str(made / "bundle"), "--bank", str(made / "bank"), "--out", str(out)]
    assert main([*base, "--cache", str(made / "cache"), "--val-faces", "0", "3", "--strip", "Male",
                 "--scale", "1"]) == 0
    two = Image.open(out)
    assert main([*base, "--cache", str(made / "cache"), "--val-faces", "0", "--strip", "Male", "--scale", "1"]) == 0
    assert two.height > Image.open(out).height  # one row per face and method
    assert main([*base, "--cache", str(made / "cache"), "--val-faces", "99", "--set", "Male=1"]) == 2
    assert "the val split of" in capsys.readouterr().err
    assert main([*base, str(made / "photo.png"), "--centre-crop", "--cache", str(made / "cache"), "--set", "Male=1"]) == 2
    assert "either a photo" in capsys.readouterr().err
