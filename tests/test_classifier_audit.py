"""The classifier audit in a world whose answers are known.

A hand-built latent model writes each attribute's latent coordinate into its own pixels (so every
attribute vector changes exactly its own pixels), the judge reads them back, and the audited
"smile detector" reads the Smiling pixels and, planted, the Male pixels. The audit must find Male
and nothing else, leave out the counterfactuals it should, and give the same numbers whichever file
format the detector comes in.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from faceedit.attributes import ATTRIBUTES, attribute_index
from faceedit.classifier import ClassifierError, ClassifierSpec, load_classifier
from faceedit.classifier_audit import ClassifierAuditConfig, run_classifier_audit

S = 8
PIX = 4  # pixels per attribute (40 x 4 = 160 of the 192 values of a (3, 8, 8) image)
GAIN = 0.05  # pixel change per unit of latent
SMILE, MALE = attribute_index("Smiling"), attribute_index("Male")


class PixelLatent(nn.Module):
    """z (B, 40) -> image: attribute k's coordinate sets pixels 4k..4k+3 to 0.5 + GAIN z_k."""

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        B = len(z)
        flat = torch.full((B, 3 * S * S), 0.5)
        flat[:, : PIX * 40] = 0.5 + GAIN * z.repeat_interleave(PIX, dim=1)
        return flat.reshape(B, 3, S, S)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = (x.reshape(len(x), -1)[:, : PIX * 40].reshape(len(x), 40, PIX).mean(2) - 0.5) / GAIN
        return z, torch.zeros_like(z)


class PixelJudge(nn.Module):
    """Reads every attribute's coordinate back as its logit."""

    def score(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z, _ = PixelLatent().encode(x)
        return z, z


class Bank:
    """balanced: 4 e_a (from -2 to +2 at strength 1); naive: the same, except Male's, which also
    removes a smile (as CelebA's naive Male vector does)."""

    dim = 40

    def vector(self, attr: str, method: str = "balanced") -> torch.Tensor:
        v = torch.zeros(40)
        v[attribute_index(attr)] = 4.0
        if method == "naive" and attr == "Male":
            v[SMILE] = -4.0
        return v


class SmileDetector(nn.Module):
    """logit = 2 z_Smiling - 3 z_Male - 8, read from the pixels: a smile detector that leans on
    gender (a smiling woman, z = +2, -2, scores +2; a smiling man, z = +2, +2, scores -10: missed)."""

    def __init__(self):
        super().__init__()
        w = torch.zeros(3 * S * S)
        w[SMILE * PIX: (SMILE + 1) * PIX] = 2.0 / (PIX * GAIN)
        w[MALE * PIX: (MALE + 1) * PIX] = -3.0 / (PIX * GAIN)
        self.register_buffer("w", w)
        self.register_buffer("b", (-(w.sum() * 0.5) - 8.0).reshape(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.flatten(1) @ self.w + self.b)[:, None]  # (B, 1)


def make_cache(root: Path, n: int = 400, val: int = 200):
    from faceedit.cache import Cache, write_arrays

    rng = np.random.default_rng(0)
    labels = (rng.random((n, 40)) < 0.5).astype(np.int8)
    z = np.where(labels > 0, 2.0, -2.0) + rng.normal(0, 0.3, (n, 40))
    images = PixelLatent().decode(torch.from_numpy(z).float()).numpy()
    write_arrays(root, np.round(images * 255).astype(np.uint8), labels, "sha256:test", val=val)
    return Cache.open(root)


def export_all(model: nn.Module, root: Path) -> dict[str, Path]:
    x = torch.rand(4, 3, S, S)
    root.mkdir(parents=True, exist_ok=True)
    paths = {"torch.export": root / "det.pt2", "torchscript": root / "det.ts", "onnx": root / "det.onnx"}
    ep = torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(ep, str(paths["torch.export"]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(model, x), str(paths["torchscript"]))
        torch.onnx.export(model, (x,), str(paths["onnx"]), dynamo=False, input_names=["faces"],
                          output_names=["smile"], dynamic_axes={"faces": {0: "b"}, "smile": {0: "b"}})
    return paths


CONFIG = ClassifierAuditConfig(methods=("balanced", "naive"), strengths=(0.25, 1.0), headline=1.0,
                               faces=20, batch_size=32, groups=("Male",))
AUC = np.ones(40)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    cache = make_cache(root / "cache")
    paths = export_all(SmileDetector().eval(), root / "models")
    return cache, paths


def audit(cache, classifier, **kw):
    return run_classifier_audit(cache, PixelLatent(), Bank(), classifier, PixelJudge(), AUC,
                                config=kw.pop("config", CONFIG), output="smile", progress=False, **kw)


@pytest.fixture(scope="module")
def result(world):
    cache, paths = world
    clf = load_classifier(paths["torch.export"], 0, image_size=S)
    return audit(cache, clf, config=ClassifierAuditConfig(**{**CONFIG.to_dict(), "target": "Smiling"}))


def test_the_planted_attribute_ranks_first_and_nothing_else_moves(result):
    assert result.target == "Smiling"
    top = result.ranking[0]
    assert top.attribute == "Male" and top.sensitivity.method == "balanced"
    s = top.sensitivity
    # gaining Male: logit -12 from wherever it was, so P falls and most decisions flip
    assert s.kept.change < -0.3 and s.kept.flip > 0.3 and s.kept.logit_change == pytest.approx(-12, abs=0.5)
    assert s.kept.n == s.made == 40  # 20 faces per side, every edit reached Male, none touched a smile
    for e in result.ranking[1:]:  # the detector reads no other attribute's pixels
        assert abs(e.sensitivity.kept.change) < 1e-6 and e.sensitivity.kept.flip == 0
    assert [e.rank for e in result.ranking] == list(range(1, 40))
    assert "Smiling" not in [e.attribute for e in result.ranking]
    assert result.own.attribute == "Smiling" and result.own.kept.logit_change == pytest.approx(8, abs=0.5)


def test_the_judge_leaves_out_what_it_should(result):
    # naive Male also removes the smile: every such counterfactual changed the target
    naive = result.sensitivity("Male", "naive")
    assert naive.target_changed == naive.made and naive.kept.n == 0
    assert naive.unfiltered.change < result.sensitivity("Male", "balanced").kept.change  # blamed for the smile
    # ranked by naive vectors, Male has no counterfactual left to rank it by: it is listed apart
    from faceedit.classifier_audit import rank

    by_naive = rank(result.sensitivities, "naive", 1.0, "Smiling", result.real, min_kept=20)
    assert "Male" not in [e.attribute for e in by_naive] and len(by_naive) == 38
    # at strength 0.25 a coordinate moves from -2 to -1 (or +2 to +1): the judge sees no change
    for a in ("Male", "Eyeglasses", "Young"):
        weak = result.sensitivity(a, "balanced", 0.25)
        assert weak.no_change == weak.made and weak.kept.n == 0
        assert weak.unfiltered.n == weak.made


def test_by_group_and_real_data(result):
    s = result.ranking[0].sensitivity
    male = {g.value: g.effect for g in s.groups if g.group == "Male"}
    assert male[True].n + male[False].n == s.kept.n
    real = result.real
    # smiling men are missed; of the others only a few smiling women near the boundary
    y, n = real.group("Male", True), real.group("Male", False)
    assert n.error < 0.1 and y.error > 0.1 and y.false_positive == 0 and y.false_negative > 0.8
    gap, se = real.error_gap("Male")
    assert gap == pytest.approx(y.error - n.error) and se > 0
    assert result.ranking[0].real_error_gap == pytest.approx(gap)


def test_every_format_gives_the_same_audit(world, result):
    cache, paths = world
    cfg = ClassifierAuditConfig(**{**CONFIG.to_dict(), "target": "Smiling"})
    for fmt in ("torchscript", "onnx"):
        clf = load_classifier(paths[fmt], "smile" if fmt == "onnx" else 0, image_size=S)
        assert clf.format == fmt
        other = audit(cache, clf, config=cfg)
        assert [e.attribute for e in other.ranking[:1]] == ["Male"]
        for a, b in zip(result.sensitivities, other.sensitivities):
            assert (a.attribute, a.method, a.strength, a.kept.n, a.no_change, a.target_changed) == \
                   (b.attribute, b.method, b.strength, b.kept.n, b.no_change, b.target_changed)
            assert a.kept.change == pytest.approx(b.kept.change, abs=1e-5, nan_ok=True)
        assert [g.error for g in other.real.groups] == pytest.approx([g.error for g in result.real.groups], nan_ok=True)


def test_the_report(result, tmp_path):
    from faceedit.classifier_report import headlines, write_classifier_report

    result.classifier = {"file": "det.pt2", "format": "torch.export", "output_index": 0, "outputs": 1}
    out = write_classifier_report(tmp_path / "rep", result, {})
    doc = json.loads((out / "report.json").read_text())
    assert [e["attribute"] for e in doc["ranking"]][:1] == ["Male"]
    changes = [abs(e["change"]) for e in doc["ranking"]]
    assert changes == sorted(changes, reverse=True)
    assert {"change_se", "flip", "flip_se", "kept", "groups", "real_error_gap"} <= set(doc["ranking"][0])
    html = (out / "report.html").read_text()
    first = headlines(result)[0]
    assert "Male" in first and html.index("responds most to Male") < html.index("<h2>")
    assert html.index("<img") < html.index("<h2>")  # the key figure on the opening screen
    rows = (out / "sensitivity.csv").read_text().splitlines()
    assert len(rows) == 1 + 40 * 2 * 2 * (4 + 2)  # (attribute, method, strength) x subsets
    assert {p.name for p in out.iterdir()} >= {"ranking.png", "curves.png", "real_data.csv"}


# ---------------------------------------------------------------------------- bad input

class NaNOnBright(nn.Module):
    def forward(self, x):
        s = x.flatten(1).mean(1, keepdim=True)
        return torch.where(s > 0.6, torch.full_like(s, float("nan")), s)


class WrongBatch(nn.Module):
    def forward(self, x):
        return x.flatten(1).mean().reshape(1, 1)


def test_bad_files_are_refused_with_what_was_expected(tmp_path):
    text = tmp_path / "notes.pt2"
    text.write_text("hello")
    with pytest.raises(ClassifierError, match="expected a torch.export program"):
        load_classifier(text)
    pickle = tmp_path / "model.pt"
    torch.save(SmileDetector(), pickle)
    with pytest.raises(ClassifierError, match="torch.save pickle"):
        load_classifier(pickle, image_size=S)
    with pytest.raises(ClassifierError, match="no such file"):
        load_classifier(tmp_path / "missing.onnx")


def test_bad_shapes_and_values(tmp_path, world):
    cache, paths = world
    with pytest.raises(ClassifierError, match=r"--output 3.*1 score"):
        load_classifier(paths["onnx"], 3, image_size=S)
    with pytest.raises(ClassifierError, match="no output named 'Smiling'"):
        load_classifier(paths["torch.export"], "Smiling", image_size=S)
    fixed = tmp_path / "fixed.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(NaNOnBright(), (torch.rand(2, 3, 16, 16),), str(fixed), dynamo=False)
    with pytest.raises(ClassifierError, match=r"declared \(2, 3, 16, 16\).*--input-size"):
        load_classifier(fixed, image_size=S)
    nan = tmp_path / "nan.pt2"
    torch.export.save(torch.export.export(NaNOnBright(), (torch.rand(2, 3, S, S),),
                                          dynamic_shapes=({0: torch.export.Dim("b")},)), str(nan))
    clf = load_classifier(nan, image_size=S)
    with pytest.raises(ClassifierError, match="NaN or infinite for 1 of 2 faces"):
        clf.scores(torch.stack([torch.full((3, S, S), 0.5), torch.full((3, S, S), 0.9)]))
    wrong = tmp_path / "wrong.ts"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(WrongBatch()), str(wrong))
    with pytest.raises(ClassifierError, match=r"shape \(1, 1\) for a batch of 2"):
        load_classifier(wrong, image_size=S)
    with pytest.raises(ValueError, match="value_range"):
        ClassifierSpec(value_range=(1.0, 0.0))


def test_input_spec_prepares_what_the_model_wants():
    spec = ClassifierSpec(input_size=4, value_range=(0.0, 255.0), layout="NHWC",
                          mean=(127.5, 127.5, 127.5), std=(127.5, 127.5, 127.5))
    x = torch.zeros(2, 3, 8, 8)
    x[:, 0] = 1.0  # red
    y = spec.prepare(x, 4)
    assert y.shape == (2, 4, 4, 3)
    assert torch.allclose(y[..., 0], torch.ones(2, 4, 4)) and torch.allclose(y[..., 1], -torch.ones(2, 4, 4))


# ---------------------------------------------------------------------------- the console command

def test_audit_classifier_command_on_folders(tmp_path, capsys):
    """`faceedit audit-classifier` end to end on a tiny cache, an untrained tiny VAE bundle, its bank
    and a one-epoch judge (the plumbing, not the models, is under test)."""
    from faceedit.bank import BankConfig, build_bank
    from faceedit.bundle import save_bundle
    from faceedit.cache import Cache, write_arrays
    from faceedit.cli import main
    from faceedit.judge import JudgeConfig, save_judge, train_judge
    from faceedit.model import VAE, VAEConfig
    from faceedit.trainer import TrainConfig

    rng = np.random.default_rng(1)
    n, size = 160, 16
    labels = (rng.random((n, 40)) < 0.5).astype(np.int8)
    images = rng.integers(0, 256, (n, 3, size, size), dtype=np.uint8)
    cache = Cache.open(write_arrays(tmp_path / "cache", images, labels, "sha256:tiny", val=60))
    torch.manual_seed(0)
    vae = VAE(VAEConfig(image_size=size, latent_dim=8, channels=(8, 16), blocks=0)).eval()
    save_bundle(tmp_path / "bundle", vae, {})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        build_bank(vae, cache, BankConfig(), progress=False).save(tmp_path / "bank")
    save_judge(tmp_path / "judge", train_judge(cache, JudgeConfig(image_size=size, width=4, stages=2),
                                               TrainConfig(epochs=1, batch_size=32, progress=False)))
    model = nn.Sequential(nn.Conv2d(3, 4, 3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 40)).eval()  # 40 columns: named as CelebA's attributes
    clf = tmp_path / "clf.pt2"
    torch.export.save(torch.export.export(model, (torch.rand(2, 3, size, size),),
                                          dynamic_shapes=({0: torch.export.Dim("b")},)), str(clf))
    argv = ["audit-classifier", "--classifier", str(clf), "--output", "Smiling", "--bundle",
            str(tmp_path / "bundle"), "--bank", str(tmp_path / "bank"), "--cache", str(tmp_path / "cache"),
            "--judge", str(tmp_path / "judge"), "--out", str(tmp_path / "rep"), "--quiet",
            "--attributes", "Male", "Eyeglasses", "Smiling", "--faces", "5", "--strengths", "1", "2",
            "--strips", "1", "--min-kept", "1"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(argv) == 0
    doc = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert doc["target"] == "Smiling" and doc["classifier"]["output_index"] == attribute_index("Smiling")
    assert {e["attribute"] for e in doc["ranking"]} <= {"Male", "Eyeglasses"}
    for s in doc["sensitivities"]:
        assert s["made"] == 10 and s["no_change"] + s["target_changed"] + s["kept"]["n"] == s["made"]
    assert "wrote" in capsys.readouterr().out
    # a pickle given as the classifier: exit code 2 and a sentence, no traceback
    torch.save(model, tmp_path / "clf.pt")
    argv[2] = str(tmp_path / "clf.pt")
    assert main(argv) == 2
    assert "torch.save pickle" in capsys.readouterr().err
