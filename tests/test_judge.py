"""The audit's judge: AUC, training with the team's loop, the "cannot judge" mark, the bundle."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from faceedit.attributes import ATTRIBUTES, attribute_index
from faceedit.cache import Cache, write_arrays
from faceedit.judge import (Committee, Judge, JudgeConfig, auc_per_attribute, judgeable,
                            load_committee, load_judge, save_judge, train_judge)
from faceedit.trainer import TrainConfig

SMILING, MALE = attribute_index("Smiling"), attribute_index("Male")


def write_cache(root: Path, n: int = 320, size: int = 16, seed: int = 0) -> Cache:
    """A cache where Smiling paints the top half red and Male the bottom half blue; every other
    label is a coin flip nothing in the image shows. The last quarter is the val split."""
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, len(ATTRIBUTES))) < 0.4).astype(np.int8)
    images = (rng.random((n, 3, size, size)) * 60 + 90).astype(np.uint8)
    images[labels[:, SMILING] == 1, 0, : size // 2] = 250
    images[labels[:, MALE] == 1, 2, size // 2:] = 250
    return Cache.open(write_arrays(root, images, labels, f"sha256:constructed-{seed}", val=n // 4))


def test_auc_matches_sklearn_and_is_nan_for_one_class():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, (400, 3))
    logits = np.round(rng.normal(size=(400, 3)) + y, 1)  # rounded: ties must be averaged
    y[:, 2] = 1
    auc = auc_per_attribute(logits, y)
    for k in range(2):
        assert auc[k] == pytest.approx(roc_auc_score(y[:, k], logits[:, k]), abs=1e-12)
    assert np.isnan(auc[2])
    assert judgeable([0.9, 0.75, 0.7, float("nan")], 0.75) == [True, True, False, False]
    with pytest.raises(ValueError, match="must both be"):
        auc_per_attribute(logits[:, :2], y)


def test_judge_shapes_and_config_errors():
    judge = Judge(JudgeConfig(image_size=32, width=4, stages=3)).eval()
    logits, feats = judge.score(torch.rand(2, 3, 32, 32))
    assert logits.shape == (2, 40) and feats.shape == (2, 16)
    with pytest.raises(ValueError, match=r"\(B, 3, 32, 32\)"):
        judge(torch.rand(2, 3, 16, 16))
    with pytest.raises(ValueError, match="multiple of"):
        JudgeConfig(image_size=20, stages=3)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("judge")
    cache = write_cache(root / "cache")
    result = train_judge(cache, JudgeConfig(image_size=16, width=8, stages=2),
                         TrainConfig(epochs=3, batch_size=32, lr=3e-3, grad_clip=1.0, progress=False,
                                     threads=1))
    return cache, result, root


def test_judge_learns_what_the_image_shows_and_marks_what_it_cannot_judge(trained):
    _, result, _ = trained
    assert result.auc[SMILING] > 0.95 and result.auc[MALE] > 0.95
    assert result.can_judge[SMILING] and result.can_judge[MALE]
    # Labels the pictures do not show: AUC near chance, so the judge must not judge them.
    noise = [k for k in range(len(ATTRIBUTES)) if k not in (SMILING, MALE)]
    assert np.nanmean(result.auc[noise]) < 0.65
    assert sum(result.can_judge[k] for k in noise) <= 2  # chance may pass one or two of 38


def test_judge_bundle_round_trip(trained):
    cache, result, root = trained
    path = save_judge(root / "bundle", result, {"cache": cache.hash})
    loaded = load_judge(path)
    x = torch.rand(4, 3, 16, 16)
    assert torch.equal(loaded.model.state_dict()["head.weight"], result.model.state_dict()["head.weight"])
    torch.testing.assert_close(loaded.model(x), result.model(x), rtol=0, atol=1e-6)  # kernels may differ by layout
    assert loaded.can_judge.tolist() == result.can_judge
    np.testing.assert_allclose(loaded.auc, np.round(result.auc, 6), equal_nan=True)
    meta = json.loads((path / "config.json").read_text())
    assert meta["kind"] == "judge" and "Smiling" not in meta["judge"]["cannot_judge"]


def test_a_committee_scores_with_the_mean_of_its_judges_logits(trained):
    cache, result, root = trained
    other = train_judge(cache, JudgeConfig(image_size=16, width=8, stages=2),
                        TrainConfig(epochs=1, batch_size=32, lr=3e-3, grad_clip=1.0, progress=False,
                                    threads=1, seed=1))
    paths = [save_judge(root / "c0", result), save_judge(root / "c1", other)]
    committee = load_committee(paths, cache)
    assert len(committee.members) == 2 and isinstance(committee.model, Committee)
    x = torch.rand(5, 3, 16, 16)
    (l0, f0), (l1, f1) = (m.model.score(x) for m in committee.members)
    logits, feats = committee.model.score(x)
    torch.testing.assert_close(logits, (l0 + l1) / 2)
    torch.testing.assert_close(feats, torch.cat([f0, f1], 1))
    # its AUC is its own, on the val split: that of the averaged logits, not of either judge
    val = torch.as_tensor(np.array(cache.images[cache.indices("val")])).float() / 255
    mean = ((committee.members[0].model(val) + committee.members[1].model(val)) / 2).detach().numpy()
    np.testing.assert_allclose(committee.auc, auc_per_attribute(mean, cache.labels[cache.indices("val")]),
                               atol=1e-6)
    assert committee.can_judge[SMILING] and committee.can_judge[MALE]
    assert load_committee(paths[:1], cache).members == ()  # one judge is just that judge
    with pytest.raises(ValueError, match="the same weights as"):
        load_committee([paths[0], paths[0]], cache)
    with pytest.raises(ValueError, match="one image size"):
        Committee([Judge(JudgeConfig(image_size=16, stages=2)), Judge(JudgeConfig(image_size=32))])


def test_load_judge_refuses_another_kind(tmp_path):
    from faceedit.bundle import save_bundle
    from faceedit.pca import PCA, PCAConfig

    save_bundle(tmp_path / "pca", PCA(PCAConfig(image_size=4, latent_dim=2)), {})
    with pytest.raises(ValueError, match="kind 'pca', expected a judge"):
        load_judge(tmp_path / "pca")


def test_judge_cli_smoke(tmp_path, capsys):
    from faceedit.cli import main

    write_cache(tmp_path / "cache", n=160)
    code = main(["judge", "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "j"),
                 "--image-size", "16", "--width", "4", "--stages", "2", "--epochs", "1",
                 "--batch-size", "32", "--no-progress"])
    assert code == 0
    assert "cannot_judge" in capsys.readouterr().out
    assert load_judge(tmp_path / "j").model.config.width == 4


def test_the_judge_command_trains_by_default_as_the_main_job_does():
    """`faceedit judge`'s training defaults are faceedit.judge.TRAINING, the main job's (passed to
    the option generator, not patched into argparse afterwards)."""
    from faceedit.cli import build_parser, dataclass_from_args
    from faceedit.judge import TRAINING
    from faceedit.pipeline import PROFILES
    from faceedit.trainer import TrainConfig

    args = build_parser("judge").parse_args(["judge", "--cache", "c", "--out", "o"])
    assert dataclass_from_args(TrainConfig, args) == TRAINING == PROFILES["default"].judge_train
    assert TRAINING != TrainConfig()
    args = build_parser("judge").parse_args(["judge", "--cache", "c", "--out", "o", "--epochs", "3"])
    assert dataclass_from_args(TrainConfig, args).epochs == 3
