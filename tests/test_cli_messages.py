"""What the command line says when interrupted, and files it reads as users' editors save them
(issue 27)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from faceedit.attributes import ATTRIBUTES
from faceedit.cache import Cache, write_arrays
from faceedit.celeba import list_celeba
from faceedit.cli import build_parser, interrupted
from test_data_celeba import write_celeba

REPO = Path(__file__).resolve().parents[1]


def tiny_cache(root: Path) -> Path:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (64, 3, 16, 16), dtype=np.uint8)
    labels = (rng.random((64, len(ATTRIBUTES))) < 0.5).astype(np.int8)
    return write_arrays(root / "cache", images, labels, "ctrl-c", val=16)


def test_ctrl_c_during_training_says_what_was_saved(tmp_path):
    cache = tiny_cache(tmp_path)
    out, log = tmp_path / "vae", tmp_path / "vae-log"
    cmd = [sys.executable, "-m", "faceedit.cli", "train", "--cache", str(cache), "--out", str(out),
           "--latent-dim", "4", "--channels", "4", "8", "--groups", "2",
           "--epochs", "100000", "--batch-size", "8", "--max-minutes", "5"]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + 90
        while not (log / "metrics.jsonl").is_file() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert (log / "metrics.jsonl").is_file(), proc.stderr.read() if proc.poll() is not None else "no metrics"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "faceedit train: interrupted. Nothing was saved" in err and "--workers 1" in err
    assert str(log) in err and "Traceback" not in err
    assert not out.exists()


def test_interrupted_ray_training_names_its_checkpoints_and_how_to_resume(tmp_path):
    from workers.train import default_run_name

    cache = tiny_cache(tmp_path)
    argv = ["train", "--cache", str(cache), "--out", str(tmp_path / "vae"), "--workers", "2",
            "--storage", str(tmp_path / "ray"), "--latent-dim", "4"]
    args = build_parser(only="train").parse_args(argv)
    assert "No checkpoint was made yet" in interrupted(args)
    from faceedit.cli import dataclass_from_args
    from faceedit.model import VAEConfig
    from faceedit.trainer import TrainConfig
    name = default_run_name(args.out, Cache.open(cache).hash,
                            dataclass_from_args(VAEConfig, args, image_size=16),
                            dataclass_from_args(TrainConfig, args), 2)
    for step in (10, 20):
        (tmp_path / "ray" / name / f"checkpoint_step{step:08d}").mkdir(parents=True)
    message = interrupted(args)
    assert f"2 checkpoint(s) of run {name!r}" in message and "checkpoint_step00000020" in message
    assert "Run the same command again to resume" in message


def test_other_commands_say_nothing_half_written(tmp_path):
    args = build_parser(only="vectors").parse_args(["vectors", "--bundle", "b", "--cache", "c",
                                                    "--out", str(tmp_path / "bank")])
    assert interrupted(args) == f"Nothing was written to {tmp_path / 'bank'} (it appears only when complete)."


def test_a_label_file_with_a_byte_order_mark_reads_like_one_without(tmp_path):
    labels = write_celeba(tmp_path / "plain", n=4)
    write_celeba(tmp_path / "bom", n=4)
    attr = tmp_path / "bom" / "list_attr_celeba.txt"
    attr.write_bytes(b"\xef\xbb\xbf" + attr.read_bytes())  # what Notepad writes as "UTF-8"
    plain, bom = list_celeba(tmp_path / "plain"), list_celeba(tmp_path / "bom")
    assert np.array_equal(plain.labels, bom.labels) and len(bom) == 4
    assert labels.shape == (4, len(ATTRIBUTES))
