"""The main job: stage skipping by content hash, and a smoke run of `faceedit run --profile tiny`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from faceedit.pipeline import STAMP, Pipeline, Stage


def _counting_stage(name: str, out: Path, settings: dict, inputs: dict, calls: list[str]) -> Stage:
    def build(p: Path) -> None:
        calls.append(name)
        p.mkdir(parents=True, exist_ok=True)
        (p / "result.txt").write_text(json.dumps(settings))
    return Stage(name, out, settings, lambda: dict(inputs), build)


def test_stage_runs_once_then_skips_until_settings_or_inputs_change(tmp_path):
    calls: list[str] = []
    inputs = {"upstream": "hash-1"}
    make = lambda settings: Pipeline([_counting_stage("a", tmp_path / "a", settings, inputs, calls)],
                                     log=lambda _: None)
    make({"size": 64}).run()
    make({"size": 64}).run()
    assert calls == ["a"]
    make({"size": 32}).run()  # a setting changed
    assert calls == ["a", "a"]
    inputs["upstream"] = "hash-2"  # an input's content changed
    make({"size": 32}).run()
    assert calls == ["a", "a", "a"]
    assert json.loads((tmp_path / "a" / STAMP).read_text())["settings"] == {"size": 32}


def test_failed_stage_leaves_no_stamp_and_reruns(tmp_path):
    def broken(p: Path) -> None:
        raise RuntimeError("disk full")
    with pytest.raises(RuntimeError):
        Pipeline([Stage("b", tmp_path / "b", {}, dict, broken)], log=lambda _: None).run()
    assert not (tmp_path / "b" / STAMP).exists()


def test_main_job_tiny_profile_makes_every_artefact(tmp_path, capsys):
    from faceedit.bank import AttributeBank
    from faceedit.bundle import load_bundle
    from faceedit.cache import Cache
    from faceedit.cli import main
    from faceedit.judge import load_judge

    out = tmp_path / "main"
    assert main(["run", "--profile", "tiny", "--out", str(out), "--no-serve"]) == 0
    first = capsys.readouterr().out
    assert "rendering synthetic faces" in first.splitlines()[0]

    cache = Cache.open(out / "cache")
    bundle = load_bundle(out / "bundle")
    bank = AttributeBank.load(out / "bank")
    judge = load_judge(out / "judge")
    assert bundle.config.image_size == cache.size == judge.model.config.image_size
    assert bank.dim == bundle.config.latent_dim
    report = json.loads((out / "report" / "report.json").read_text())
    assert report  # parsed
    html = (out / "report" / "report.html").read_text()
    assert "Smiling" in html and "<img" in html
    for png in [*(out / "report").glob("*.png"), *(out / "figures").glob("*.png")]:
        with Image.open(png) as im:
            assert im.size[0] > 8 and im.size[1] > 8, png
    assert {p.name for p in (out / "figures").glob("*.png")} >= {
        "samples.png", "reconstructions.png", "strip-Smiling.png", "strip-Heavy_Makeup.png"}

    # Everything is up to date now: the second run skips every stage.
    assert main(["run", "--profile", "tiny", "--out", str(out), "--no-serve"]) == 0
    second = capsys.readouterr().out
    assert second.count("up to date") == 7, second
