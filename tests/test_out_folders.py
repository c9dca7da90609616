"""--out never deletes a user's files: a folder is replaced only when faceedit wrote it (its marker, or
a recognised manifest from before markers) or with --overwrite; interrupted runs' temporaries are
cleaned up on the next run (issue 27)."""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from faceedit.attributes import ATTRIBUTES
from faceedit.bank import BankConfig, build_bank
from faceedit.bundle import load_bundle, save_bundle
from faceedit.cache import Cache, write_arrays
from faceedit.cli import WRITES_FOLDER, main
from faceedit.files import MARKER, OutputExists, atomic_dir, clean_stale, foreign_entries
from faceedit.model import VAE, VAEConfig


def user_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "thesis.tex").write_text("\\chapter{Four years}")
    (path / "figures").mkdir()
    (path / "figures" / "plot.pdf").write_bytes(b"%PDF")
    return path


def intact(path: Path) -> bool:
    return ((path / "thesis.tex").read_text() == "\\chapter{Four years}"
            and (path / "figures" / "plot.pdf").read_bytes() == b"%PDF")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    """(cache, bundle) of an untrained 16 px VAE on 64 random faces."""
    root = tmp_path_factory.mktemp("out")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (64, 3, 16, 16), dtype=np.uint8)
    labels = (rng.random((64, len(ATTRIBUTES))) < 0.5).astype(np.int8)
    cache = write_arrays(root / "cache", images, labels, "out-test", val=16)
    torch.manual_seed(0)
    model = VAE(VAEConfig(image_size=16, latent_dim=4, channels=(4, 8), blocks=0, groups=2))
    bundle = save_bundle(root / "bundle", model, {"cache": Cache.open(cache).hash})
    return cache, bundle


# Every subcommand that writes a folder, with arguments that parse (the refusal comes before any
# input is opened, so the inputs need not exist).
COMMANDS = {
    "run": ["--data", "nowhere", "--no-serve"],
    "prepare": ["--data", "nowhere"],
    "synth": ["-n", "4"],
    "vectors": ["--bundle", "b", "--cache", "c"],
    "judge": ["--cache", "c"],
    "audit": ["--bundle", "b", "--bank", "k", "--cache", "c", "--judge", "j"],
    "audit-classifier": ["--classifier", "m.pt2", "--output", "0", "--bundle", "b", "--bank", "k",
                         "--cache", "c"],
    "train": ["--cache", "c"],
    "pca": ["--cache", "c"],
}


def test_every_folder_command_is_covered():
    assert set(COMMANDS) == set(WRITES_FOLDER)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_cli_refuses_a_user_folder_as_out(command, tmp_path, capsys):
    home = user_folder(tmp_path / "home")
    out = home if command != "run" else tmp_path / "runs"
    if command == "run":  # `run` writes one folder per stage under --out: a user's "bundle" there
        home = user_folder(out / "bundle")
    code = main([command, *COMMANDS[command], "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert "holds files faceedit did not write" in err and "--overwrite" in err
    assert "thesis.tex" in err
    assert intact(home)


def test_library_writers_refuse_a_user_folder(tiny, tmp_path):
    cache, bundle = tiny
    model = load_bundle(bundle).model
    home = user_folder(tmp_path / "home")
    with pytest.raises(OutputExists, match="thesis.tex"):
        save_bundle(home, model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bank = build_bank(model, Cache.open(cache), BankConfig(batch_size=64), progress=False)
    with pytest.raises(OutputExists, match="thesis.tex"):
        bank.save(home)
    assert intact(home)
    assert [p.name for p in tmp_path.iterdir()] == ["home"], "no temporary folder left beside it"


def test_own_folders_are_replaced_but_not_once_a_user_adds_a_file(tiny, tmp_path):
    cache, bundle = tiny
    model = load_bundle(bundle).model
    out = save_bundle(tmp_path / "b", model)
    assert (out / MARKER).is_file() and foreign_entries(out) == []
    save_bundle(out, model)  # its own folder: replaced
    (out / "notes.txt").write_text("mine")
    assert foreign_entries(out) == ["notes.txt"]
    with pytest.raises(OutputExists, match="notes.txt"):
        save_bundle(out, model)
    assert (out / "notes.txt").read_text() == "mine"


def test_folders_from_before_markers_are_recognised(tiny, tmp_path):
    cache, bundle = tiny
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    for f in bundle.iterdir():
        if f.name != MARKER:
            (legacy / f.name).write_bytes(f.read_bytes())
    assert foreign_entries(legacy) == []
    fake = tmp_path / "fake"  # a user's config.json that is not a bundle's is not a manifest
    fake.mkdir()
    (fake / "config.json").write_text('{"theme": "dark"}')
    assert foreign_entries(fake) == ["config.json"]


def test_overwrite_replaces_a_user_folder_when_asked(tiny, tmp_path, capsys):
    cache, bundle = tiny
    home = user_folder(tmp_path / "home")
    code = main(["pca", "--cache", str(cache), "--latent-dim", "4", "--out", str(home), "--overwrite"])
    assert code == 0, capsys.readouterr().err
    assert not (home / "thesis.tex").exists()
    assert load_bundle(home).kind == "pca"


def test_interrupted_runs_leave_no_temporaries_behind(tmp_path):
    out = tmp_path / "bank"
    dead = tmp_path / ".bank.99999999-abcd.tmp"  # a process id that is not running
    dead.mkdir()
    (dead / "vectors.safetensors").write_bytes(b"x" * 1000)
    old_style = tmp_path / ".bank.k3j4h5.tmp"  # written before owner ids: cleaned when stale
    old_style.mkdir()
    os.utime(old_style, (time.time() - 7200, time.time() - 7200))
    running = tmp_path / f".bank.{os.getpid()}-zzzz.tmp"  # a live writer's: kept
    running.mkdir()
    unrelated = tmp_path / ".banker.1-a.tmp"
    unrelated.mkdir()
    with atomic_dir(out) as tmp:
        (tmp / "bank.json").write_text("{}")
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(["bank", running.name, unrelated.name])
    assert clean_stale(out) == []


def test_a_killed_writer_leaves_its_temporary_for_the_next_run_to_remove(tmp_path):
    import subprocess
    import sys

    code = ("import os, sys\nfrom faceedit.files import atomic_dir\n"
            "with atomic_dir(sys.argv[1]) as tmp:\n    (tmp / 'x').write_text('x')\n    os._exit(9)\n")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    assert subprocess.run([sys.executable, "-c", code, str(tmp_path / "cache")], env=env).returncode == 9
    assert len(list(tmp_path.glob(".cache.*.tmp"))) == 1  # what a killed prepare leaves
    with atomic_dir(tmp_path / "cache") as tmp:
        (tmp / "manifest.json").write_text("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]
