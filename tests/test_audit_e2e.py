"""End to end through the console command: a tiny rendered set and a slice of the real faces ->
cache -> tiny VAE bundle -> bank -> judge -> `faceedit audit` -> report folder."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

from faceedit.attributes import ATTRIBUTES
from faceedit.cli import main

SIZE = 16


def build_inputs(data: Path, root: Path, limit: int | None = None) -> dict[str, Path]:
    """cache, an untrained tiny VAE bundle (the pipeline, not the model, is under test), its bank,
    and a tiny judge (one epoch)."""
    from faceedit.bank import BankConfig, build_bank
    from faceedit.bundle import save_bundle
    from faceedit.cache import Cache
    from faceedit.judge import JudgeConfig, save_judge, train_judge
    from faceedit.model import VAE, VAEConfig
    from faceedit.prepare import prepare
    from faceedit.trainer import TrainConfig

    paths = {k: root / k for k in ("cache", "bundle", "bank", "judge")}
    cache = Cache.open(prepare(data, paths["cache"], size=SIZE, limit=limit, progress=False, workers=1))
    torch.manual_seed(0)
    vae = VAE(VAEConfig(image_size=SIZE, latent_dim=8, channels=(8, 16), blocks=0)).eval()
    save_bundle(paths["bundle"], vae, {})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tiny and empty cells of a tiny set
        build_bank(vae, cache, BankConfig(empty_cells="drop"), progress=False).save(paths["bank"])
    judge = train_judge(cache, JudgeConfig(image_size=SIZE, width=4, stages=2),
                        TrainConfig(epochs=1, batch_size=32, progress=False))
    save_judge(paths["judge"], judge)
    return paths


def run_audit_cli(paths: dict[str, Path], out: Path, *extra: str) -> dict:
    argv = ["audit", "--bundle", str(paths["bundle"]), "--bank", str(paths["bank"]),
            "--cache", str(paths["cache"]), "--judge", str(paths["judge"]), "--out", str(out),
            "--quiet", "--faces", "4", "--batch-size", "8", "--strips", "1", *extra]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(argv) == 0
    return json.loads((out / "report.json").read_text())


def test_audit_of_a_rendered_set(tmp_path, capsys):
    from faceedit import synth

    data = synth.render_dataset(tmp_path / "data", 120, seed=0, workers=1)
    paths = build_inputs(data, tmp_path)
    doc = run_audit_cli(paths, tmp_path / "report", "--strengths", "2", "--methods", "naive", "balanced")
    # The rendered attributes by default: every one the renderer draws, not Attractive.
    assert doc["attributes"] == list(synth.RENDERED) and "Attractive" not in doc["attributes"]
    assert set(doc["latents"]) == {"vae", "pca"}
    s = doc["latents"]["vae"]["edits"]["Smiling"]["balanced"]["+2"]
    assert 0 < s["faces"] == doc["faces"]["per_attribute"]["Smiling"]["without"] <= 4
    assert set(s["leakage"]) == set(ATTRIBUTES)
    assert set(doc["bias"]["vectors"]["Smiling"]["confounders"]) == {"Male", "Mouth_Slightly_Open"}
    assert doc["inputs"]["cache_content_hash"].startswith("sha256:")
    names = {p.name for p in (tmp_path / "report").iterdir()}
    assert {"report.html", "leakage.csv", "heatmap_vae_naive.png", "heatmap_pca_balanced.png",
            "efficacy_leakage.png"} <= names
    assert any(n.startswith("strip_") for n in names)
    assert "faces_per_s" in capsys.readouterr().out
    assert doc["judge"]["members"] == 1


def test_audit_with_a_committee_of_judges(tmp_path):
    from faceedit import synth
    from faceedit.cache import Cache
    from faceedit.judge import JudgeConfig, save_judge, train_judge
    from faceedit.trainer import TrainConfig

    data = synth.render_dataset(tmp_path / "data", 120, seed=0, workers=1)
    paths = build_inputs(data, tmp_path)
    second = train_judge(Cache.open(paths["cache"]), JudgeConfig(image_size=SIZE, width=4, stages=2),
                         TrainConfig(epochs=1, batch_size=32, progress=False, seed=1))
    save_judge(tmp_path / "judge2", second)
    argv_judges = [str(paths["judge"]), str(tmp_path / "judge2")]
    out = tmp_path / "report"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["audit", "--bundle", str(paths["bundle"]), "--bank", str(paths["bank"]),
                     "--cache", str(paths["cache"]), "--judge", *argv_judges, "--out", str(out),
                     "--quiet", "--faces", "4", "--batch-size", "8", "--strips", "1", "--no-pca",
                     "--attributes", "Smiling", "--strengths", "2", "--methods", "naive"]) == 0
    doc = json.loads((out / "report.json").read_text())
    assert doc["judge"]["members"] == 2
    assert doc["inputs"]["judge"] == "judge,judge2" and "," in doc["inputs"]["judge_weights_sha256"]
    assert "A committee of 2 image classifiers" in (out / "report.html").read_text()


def test_audit_of_real_faces_regenerates_identically(real_celeba, tmp_path):
    paths = build_inputs(real_celeba, tmp_path, limit=300)
    args = ("--attributes", "Smiling", "Male", "--strengths", "-2", "2", "--no-pca", "--methods",
            "naive", "balanced")
    a = tmp_path / "a"
    doc = run_audit_cli(paths, a, *args)
    b = tmp_path / "b"
    run_audit_cli(paths, b, *args)
    assert doc["attributes"] == ["Smiling", "Male"] and set(doc["latents"]) == {"vae"}
    assert doc["faces"]["per_attribute"]["Smiling"]["without"] > 0
    for f in sorted(a.iterdir()):
        assert f.read_bytes() == (b / f.name).read_bytes(), f.name


def test_audit_cli_names_a_missing_input(tmp_path, capsys):
    code = main(["audit", "--bundle", str(tmp_path), "--bank", str(tmp_path), "--cache",
                 str(tmp_path / "nope"), "--judge", str(tmp_path), "--out", str(tmp_path / "r")])
    assert code == 2
    assert f"{tmp_path / 'nope'}: no such cache folder" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
