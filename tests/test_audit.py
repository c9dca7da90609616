"""The audit on a constructed world where every number can be checked: a linear 'decoder' whose
latent axes are Male, Smiling, Young, Eyeglasses, and a linear judge that reads exactly those axes.
A vector that is deliberately Male + Smiling must be reported as leaking into Male."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from faceedit.attributes import ATTRIBUTES, attribute_index
from faceedit.audit import (AuditConfig, EditScores, EditStats, Execution, Latent, attribute_rates, choose_faces, edit_stats,
                            phi_matrix, run_audit, top_leaking)
from faceedit.cache import Cache, write_arrays
from faceedit.report import latent_comparison, leak_at_efficacy, sign_test, verdicts, write_report

S, D = 8, 4
AXES = ("Male", "Smiling", "Young", "Eyeglasses")  # latent axis j <-> attribute AXES[j]


def patterns() -> torch.Tensor:
    """(D, 3*S*S) orthonormal pixel patterns, one per latent axis."""
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(3 * S * S, D, generator=g))
    return q.T.contiguous()


class LinearLatent(nn.Module):
    """x = 0.5 + 0.5 z P (clamped to [0, 1]); encode inverts it: mu = (x - 0.5) P^T / 0.5."""

    def __init__(self):
        super().__init__()
        self.register_buffer("P", patterns())

    def encode(self, x):
        mu = (x.flatten(1) - 0.5) @ self.P.T / 0.5
        return mu, torch.zeros_like(mu)

    def decode(self, z):
        return (0.5 + 0.5 * z @ self.P).clamp(0, 1).view(-1, 3, S, S)


class LinearJudge(nn.Module):
    """Logit of AXES[j] = 4 * z_j read back from the pixels; every other attribute reads a pixel
    direction the decoder never draws (so no edit can move it). Features: the 4 read-outs."""

    def __init__(self):
        super().__init__()
        P = patterns()
        W = torch.zeros(len(ATTRIBUTES), 3 * S * S)
        g = torch.Generator().manual_seed(1)
        for k, a in enumerate(ATTRIBUTES):
            if a in AXES:
                W[k] = 4 * P[AXES.index(a)] / 0.5
            else:
                w = torch.randn(3 * S * S, generator=g)
                W[k] = w - P.T @ (P @ w)  # orthogonal to everything the decoder draws
        self.register_buffer("W", W)
        self.register_buffer("P", P)

    @torch.no_grad()
    def score(self, x):
        h = x.flatten(1) - 0.5
        return h @ self.W.T, h @ self.P.T / 0.5


class Bank:
    """vector(attr, method): naive Smiling is Male + Smiling (the leak); balanced, projection and
    boundary are Smiling alone; every other attribute is its own axis (or zero)."""

    def vector(self, attr, method):
        v = torch.zeros(D)
        if attr in AXES:
            v[AXES.index(attr)] = 1.0
        if attr == "Smiling" and method == "naive":
            v[AXES.index("Male")] = 1.0
        return v


def write_world(root: Path, n: int = 400, seed: int = 0) -> Cache:
    """A cache of decoded codes: z ~ N(0, I), labels = z_j > 0 on the four axes, coin flips else."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, D)).astype(np.float32) * 0.5
    x = LinearLatent().decode(torch.from_numpy(z)).numpy()
    labels = (rng.random((n, len(ATTRIBUTES))) < 0.3).astype(np.int8)
    for j, a in enumerate(AXES):
        labels[:, attribute_index(a)] = z[:, j] > 0
    images = np.round(x * 255).astype(np.uint8)
    return Cache.open(write_arrays(root, images, labels, "sha256:world", val=n - n // 2, source=str(root)))


CONFIG = AuditConfig(attributes=("Smiling", "Male", "Eyeglasses"), faces=40, batch_size=16, pca=False,
                     strengths=(-2.0, 2.0))
AUC = np.full(len(ATTRIBUTES), 0.9)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return write_world(tmp_path_factory.mktemp("world") / "cache")


def audit(cache, auc=AUC, config=CONFIG, runner=None):
    return run_audit(cache, {"vae": Latent(LinearLatent(), Bank())}, LinearJudge(), auc, 0.75,
                     config, execution=Execution(runner, progress=False))[0]


def test_bias_statistics_match_numpy():
    rng = np.random.default_rng(0)
    labels = (rng.random((500, 40)) < 0.4).astype(np.int8)
    labels[:, 5] = labels[:, 3]  # identical columns: phi = 1
    labels[:, 7] = 0  # never present: undefined
    phi = phi_matrix(labels)
    ref = np.corrcoef(labels[:, :7].T.astype(float))
    np.testing.assert_allclose(phi[:7, :7], ref, atol=1e-12)
    assert phi[3, 5] == pytest.approx(1.0)
    assert np.isnan(phi[7]).all() and np.isnan(phi[:, 7]).all()
    np.testing.assert_allclose(attribute_rates(labels), labels.mean(0))


def test_faces_are_chosen_by_side_and_seed(world):
    rows = world.indices("val")
    k = attribute_index("Smiling")
    without = choose_faces(world.labels, rows, "Smiling", True, 30, seed=0)
    with_ = choose_faces(world.labels, rows, "Smiling", False, 30, seed=0)
    assert (world.labels[without, k] == 0).all() and (world.labels[with_, k] == 1).all()
    assert set(without) <= set(rows) and len(without) == 30
    np.testing.assert_array_equal(without, choose_faces(world.labels, rows, "Smiling", True, 30, seed=0))
    assert not np.array_equal(without, choose_faces(world.labels, rows, "Smiling", True, 30, seed=1))


def test_a_vector_that_is_male_plus_smiling_is_reported_as_leaking_into_male(world):
    result = audit(world)
    edits = result.latents["vae"].edits["Smiling"]
    male = attribute_index("Male")
    naive, balanced = edits["naive"][2.0], edits["balanced"][2.0]
    # The judge's Male logit moves by 4 * alpha = 8 in the naive edit; its sd over the faces is
    # 4 * sd(z_Male) ~ 2, so the leak is about 4 sd; the balanced vector leaves Male exactly alone.
    assert naive.leak_max_attribute == "Male"
    assert naive.leakage[male] == pytest.approx(8 / result.logit_sd[male], rel=0.02)
    assert abs(balanced.leakage[male]) < 0.02
    assert naive.efficacy > 0.3 and balanced.efficacy == pytest.approx(naive.efficacy, abs=1e-6)
    # Removing the attribute (alpha = -2, faces with Smiling): the leak changes sign.
    assert edits["naive"][-2.0].leakage[male] < -1
    assert edits["naive"][-2.0].efficacy < -0.3
    # Identity: the naive edit moves the face further in the judge's features.
    assert naive.identity_feature > balanced.identity_feature > 0
    assert naive.psnr < balanced.psnr
    text = verdicts(result)["Smiling"]["text"]
    assert text.startswith("Smiling, balanced:") and "Male leakage 0.00 ± 0.00 sd vs" in text
    assert top_leaking(result, 1) == ["Smiling"]


def test_an_edit_that_barely_works_is_called_weak(world):
    # Bald has no axis in this world: every method's vector is zero and P(Bald) cannot move
    result = audit(world, config=AuditConfig(attributes=("Smiling", "Bald"), faces=16, pca=False,
                                             methods=("naive", "balanced"), strengths=(2.0,)))
    assert result.latents["vae"].edit("Bald", "naive", 2.0).efficacy == 0
    v = verdicts(result)
    assert "[weak: no method changes P(Bald) by 0.1" in v["Bald"]["text"]
    assert "weak" not in v["Smiling"]["text"]


def test_an_attribute_the_judge_cannot_judge_is_marked_not_used(world, tmp_path):
    auc = AUC.copy()
    auc[attribute_index("Male")] = 0.6
    result = audit(world, auc, config=AuditConfig(attributes=("Smiling", "Male"), faces=16, pca=False,
                                                  methods=("naive", "balanced"), strengths=(2.0,)))
    naive = result.latents["vae"].edit("Smiling", "naive", 2.0)
    assert naive.leak_max_attribute != "Male"  # left out of the summaries...
    assert naive.leak_max < 0.05
    assert abs(naive.leakage[attribute_index("Male")]) > 1  # ...but kept, and reported
    v = verdicts(result)["Male"]
    assert not v["can_judge"] and "cannot judge Male: AUC 0.60 < 0.75" in v["text"]
    out = write_report(tmp_path / "r", result, {"test": "constructed"})
    doc = json.loads((out / "report.json").read_text())
    assert doc["judge"]["can_judge"]["Male"] is False and doc["judge"]["cannot_judge"] == ["Male"]
    page = (out / "report.html").read_text()
    assert '<tr class="cj" title="the judge cannot judge this attribute"><td class="l">Male</td>' in page
    assert "Male (cannot judge)" in page
    rows = [r for r in (out / "leakage.csv").read_text().splitlines() if r.startswith("vae,Smiling,naive,+2,Male,")]
    assert rows and rows[0].endswith(",1,0")  # judgeable target, unjudgeable other


def test_report_regenerates_byte_for_byte(world, tmp_path):
    inputs = {"cache_content_hash": world.hash}
    config = AuditConfig(attributes=("Smiling", "Male"), methods=("naive", "balanced"), faces=16,
                         batch_size=16, pca=False, strengths=(-2.0, 2.0))
    a = write_report(tmp_path / "a", audit(world, config=config), inputs)
    b = write_report(tmp_path / "b", audit(world, config=config), inputs)
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    assert {"report.json", "leakage.csv", "report.html", "efficacy_leakage.png", "phi.png",
            "heatmap_vae_naive.png"} <= set(names)
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert b"Software" not in (a / "phi.png").read_bytes()
    assert "data:image/png;base64," in (a / "report.html").read_text()
    # report.json holds every field of the typed result's edit stats, and nothing private
    doc = json.loads((a / "report.json").read_text())
    edit = doc["latents"]["vae"]["edits"]["Smiling"]["naive"]["+2"]
    assert set(edit) == {f.name for f in dataclasses.fields(EditStats)}
    assert len(edit["leakage"]) == len(ATTRIBUTES) and edit["leakage"]["Male"] is not None
    assert set(doc["latents"]["vae"]["reconstruction"]) == {"shift", "auc_original", "auc_reconstruction"}

    def keys(x):
        return ([k for k, v in x.items() for k in [k, *keys(v)]] if isinstance(x, dict)
                else [k for v in x for k in keys(v)] if isinstance(x, list) else [])
    assert not [k for k in keys(doc) if k.startswith("_")]


def test_vae_vs_pca_compares_leakage_at_the_same_efficacy():
    assert leak_at_efficacy([(0.2, 0.1), (0.4, 0.3)], 0.3) == pytest.approx(0.2)
    assert leak_at_efficacy([(0.2, 0.1)], 0.1) == pytest.approx(0.05)
    assert np.isnan(leak_at_efficacy([(0.2, 0.1)], 0.5))
    # two-sided exact sign test, by hand: 2 * (C(10,0) + C(10,1)) / 2**10, 2 / 2**5, and a tie
    assert sign_test(1, 10) == pytest.approx(22 / 1024)
    assert sign_test(5, 5) == pytest.approx(2 / 32) == sign_test(0, 5)
    assert sign_test(5, 10) == 1.0


def test_pca_latent_runs_beside_the_vae(world):
    class Dirty(Bank):  # a latent whose every vector also drags Male along
        def vector(self, attr, method):
            v = super().vector(attr, method)
            v[AXES.index("Male")] += 0.5 if attr != "Male" else 0.0
            return v

    result = run_audit(world, {"vae": Latent(LinearLatent(), Bank()), "pca": Latent(LinearLatent(), Dirty())},
                       LinearJudge(), AUC, 0.75, CONFIG, execution=Execution(progress=False))[0]
    comp = latent_comparison(result)
    c = comp["balanced"]
    assert c["vae_mean_leakage"] < c["pca_mean_leakage"]
    # paired over the same attributes: the mean difference is the difference of the means
    assert c["difference"] == pytest.approx(c["vae_mean_leakage"] - c["pca_mean_leakage"], abs=1e-5)
    assert c["difference"] < 0 and c["difference_se"] >= 0
    assert c["sign_test_p"] == pytest.approx(sign_test(c["vae_cleaner"], c["attributes"]))
    within = latent_comparison(result, key="leak_mean_within")["balanced"]
    assert within["vae_mean_leakage"] < within["pca_mean_leakage"]


def test_ray_workers_give_the_same_numbers(world):
    ray = pytest.importorskip("ray")
    import sys

    from workers.audit import ray_runner

    # The constructed models live in this test module, which Ray's workers cannot import: ship them
    # by value (faceedit's own models are importable and need nothing of the kind).
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

    config = AuditConfig(attributes=("Smiling",), faces=24, batch_size=8, pca=False, strengths=(2.0,))
    local = audit(world, config=config)
    remote = audit(world, config=config, runner=ray_runner(2, progress=False))
    a, b = local.latents["vae"].edits["Smiling"], remote.latents["vae"].edits["Smiling"]
    for method in config.methods:
        for key in ("leakage", "ad", "leakage_vs_original"):
            np.testing.assert_allclose(getattr(a[method][2.0], key), getattr(b[method][2.0], key),
                                       rtol=1e-5, atol=1e-6)
        for key in ("efficacy", "flip", "identity_feature", "psnr"):
            assert getattr(a[method][2.0], key) == pytest.approx(getattr(b[method][2.0], key), rel=1e-5, abs=1e-6)


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="unknown attribute 'Smile'"):
        AuditConfig(attributes=("Smile",))
    with pytest.raises(ValueError, match="methods"):
        AuditConfig(methods=("fancy",))
    with pytest.raises(ValueError, match="strengths"):
        AuditConfig(strengths=(0.0, 1.0), headline=1.0)
    with pytest.raises(ValueError, match="headline"):
        AuditConfig(strengths=(1.0,), headline=2.0)


def test_leakage_carries_its_standard_error_over_the_faces():
    """leakage_se = sd of the per-face change / sqrt(faces), in the same sd units as the leakage."""
    rng = np.random.default_rng(0)
    n, k = 50, attribute_index("Male")
    rec = rng.normal(size=(n, 40))
    change = rng.normal(0.3, 2.0, size=n)
    edited = rec.copy()
    edited[:, k] += change
    sd = np.full(40, 2.0)
    scores = EditScores(edited=edited, rec=rec, orig=rec, feature_distance=np.ones(n), psnr=np.ones(n),
                        labels=np.zeros((n, 40)))
    s = edit_stats("Smiling", 2.0, scores, sd=sd, can_judge=np.ones(40, bool), feature_scale=1.0)
    assert s.leakage[k] == pytest.approx(change.mean() / 2)
    assert s.leakage_se[k] == pytest.approx(change.std(ddof=1) / 2 / np.sqrt(n))
    assert s.leakage_se[attribute_index("Young")] == 0  # unchanged attributes: no spread


def test_leakage_within_groups_does_not_cancel_across_them():
    """An edit that lowers Male by 0.4 sd on the men and raises it by 0.4 sd on the women has a
    signed mean leakage of 0 over equal groups, but 0.4 sd within them; a shift of the same sign
    in both groups is the same either way."""
    n, k, young = 40, attribute_index("Male"), attribute_index("Young")
    labels = np.zeros((n, 40))
    labels[: n // 2, k] = 1  # 20 men, 20 women
    labels[: n // 4, young] = 1  # 10 young faces
    rec = np.zeros((n, 40))
    edited = rec.copy()
    edited[:, k] = np.where(labels[:, k] > 0, -0.4, 0.4)
    edited[:, young] = 0.3
    edited[: n // 4, young] = 0.1  # young faces: +0.1, the rest: +0.3 (mean 0.25)
    scores = EditScores(edited=edited, rec=rec, orig=rec, feature_distance=np.ones(n), psnr=np.ones(n),
                        labels=labels)
    s = edit_stats("Smiling", 2.0, scores, sd=np.ones(40), can_judge=np.ones(40, bool), feature_scale=1.0)
    assert s.leakage[k] == pytest.approx(0.0, abs=1e-12)
    assert s.leakage_within[k] == pytest.approx(0.4)
    assert s.leakage[young] == pytest.approx(0.25) == s.leakage_within[young]
    others = [b for b in range(40) if b != attribute_index("Smiling")]
    assert s.leak_mean_within == pytest.approx(np.mean(s.leakage_within[others]))


def test_report_opens_with_its_findings_and_key_figure(world, tmp_path):
    config = AuditConfig(attributes=("Smiling", "Male"), methods=("naive", "balanced"), faces=16,
                         pca=False, strengths=(2.0,))
    out = write_report(tmp_path / "r", audit(world, config=config), {"test": "constructed"})
    doc = json.loads((out / "report.json").read_text())
    page = (out / "report.html").read_text()
    opening = page[: page.index("<h2>")]  # what a reader sees before any detail
    naive = doc["latents"]["vae"]["edits"]["Smiling"]["naive"]["+2"]["leakage"]["Male"]
    balanced = doc["latents"]["vae"]["edits"]["Smiling"]["balanced"]["+2"]["leakage"]["Male"]
    assert f"the naive smile vector changes gender by {abs(naive):.2f}" in opening
    assert f"the balanced one by {abs(balanced):.2f}" in opening
    assert "class='headline'" in opening and 'src="data:image/png;base64,' in opening  # the key figure
    assert (out / "key_figure.png").is_file()
    assert page.index("<h2>Verdicts</h2>") < page.index("<h2>Settings and inputs</h2>")
