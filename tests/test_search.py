"""Latent score search: a calibrated predictor on z, a search that keeps its budget and raises the
predicted score."""

import numpy as np
import pytest
import torch

from faceedit.attributes import ATTRIBUTES
from faceedit.search import SearchConfig, expected_calibration_error, fit_predictor, search

K_SMILE, K_MALE = ATTRIBUTES.index("Smiling"), ATTRIBUTES.index("Male")


def codes(n: int, seed: int, D: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Codes where Smiling is read along axis 0 and Male along axis 1 (correlated with Smiling)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, D))
    labels = rng.integers(0, 2, (n, 40))
    labels[:, K_SMILE] = (z[:, 0] + 0.5 * rng.normal(size=n)) > 0
    labels[:, K_MALE] = (z[:, 1] - 0.6 * z[:, 0] + 0.5 * rng.normal(size=n)) > 0
    return z, labels


@pytest.fixture(scope="module")
def predictor():
    z, y = codes(800, 0)
    vz, vy = codes(400, 1)
    return fit_predictor(z, y, vz, vy)


def test_predictor_is_calibrated_and_reads_the_attribute(predictor):
    assert predictor.val_auc[K_SMILE] > 0.9 and predictor.val_auc[K_MALE] > 0.85
    assert predictor.val_ece[K_SMILE] < 0.05
    assert 0.4 < np.nanmean(predictor.val_auc[[k for k in range(40) if k not in (K_SMILE, K_MALE)]]) < 0.6
    p = np.array([0.1, 0.1, 0.9, 0.9])
    assert expected_calibration_error(p, np.array([0, 0, 1, 1])) == pytest.approx(0.1)


@pytest.mark.parametrize("budget", [0.0, 0.3, 1.0, 3.0])
def test_never_moves_beyond_its_budget_and_raises_the_score(predictor, budget):
    z0 = torch.from_numpy(codes(64, 2)[0]).float()
    D = z0.shape[1]
    with torch.no_grad():  # as the comparison calls it
        z = search(z0, predictor, "Smiling", budget, torch.zeros(D), torch.eye(D))
    moved = (z - z0).norm(dim=1)
    assert (moved <= budget + 1e-5).all()
    before, after = predictor.logits(z0)[:, K_SMILE], predictor.logits(z)[:, K_SMILE]
    if budget == 0:
        assert torch.equal(z, z0)
    else:  # every face below the target rises; those already past it stay
        below = torch.sigmoid(before) < SearchConfig().target
        assert below.sum() > 32 and (after[below] > before[below]).all()
        assert torch.equal(z[~below], z0[~below])
        lowered = search(z0, predictor, "Smiling", budget, torch.zeros(D), torch.eye(D), up=False)
        above = torch.sigmoid(before) > 1 - SearchConfig().target
        assert (predictor.logits(lowered)[above, K_SMILE] < before[above]).all()


def test_holding_the_others_keeps_male_where_a_plain_ascent_moves_it(predictor):
    z0 = torch.from_numpy(codes(64, 3)[0]).float()
    D = z0.shape[1]
    args = (predictor, "Smiling", 2.0, torch.zeros(D), torch.eye(D))
    held = search(z0, *args, SearchConfig(hold=1.0, prior=0.0))
    free = search(z0, *args, SearchConfig(hold=0.0, prior=0.0))
    male0 = predictor.logits(z0)[:, K_MALE]
    shift_held = (predictor.logits(held)[:, K_MALE] - male0).abs().mean()
    shift_free = (predictor.logits(free)[:, K_MALE] - male0).abs().mean()
    assert shift_held < 0.5 * shift_free


def test_stops_at_the_target_and_rejects_bad_input(predictor):
    z0 = torch.from_numpy(codes(16, 4)[0]).float()
    D = z0.shape[1]
    z = search(z0, predictor, "Smiling", 50.0, torch.zeros(D), torch.eye(D),
               SearchConfig(target=0.9, hold=0.0, prior=0.0))
    p = torch.sigmoid(predictor.logits(z)[:, K_SMILE])
    # every face ends on the target (or past it where it started there), not at the edge of the budget
    p0 = torch.sigmoid(predictor.logits(z0)[:, K_SMILE])
    assert torch.allclose(p[p0 < 0.9], torch.tensor(0.9), atol=1e-3)
    with pytest.raises(ValueError, match="budget"):
        search(z0, predictor, "Smiling", -1.0, torch.zeros(D), torch.eye(D))
    with pytest.raises(ValueError, match="target"):
        SearchConfig(target=1.0)
