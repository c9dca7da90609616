"""Attribute-vector math (faceedit/vectors.py) on random and constructed latents."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from faceedit import vectors as V
from faceedit.attributes import ATTRIBUTES, attribute_index

SMILE, MALE, MOUTH = (attribute_index(a) for a in ("Smiling", "Male", "Mouth_Slightly_Open"))
# Small cells are the point of several tests; the warning itself is tested on its own.
pytestmark = pytest.mark.filterwarnings("ignore::faceedit.vectors.TinyCellWarning")


def labels_from_cells(counts: list[int], names: tuple[str, ...], rng: np.random.Generator) -> np.ndarray:
    """(N, 40) labels with counts[c] rows in cell c (bit j of c = value of names[j]), rows shuffled;
    attributes not in names get random labels."""
    rows = []
    for c, n in enumerate(counts):
        block = (rng.random((n, len(ATTRIBUTES))) < 0.5).astype(np.int8)
        for j, name in enumerate(names):
            block[:, attribute_index(name)] = (c >> j) & 1
        rows.append(block)
    labels = np.concatenate(rows)
    return labels[rng.permutation(len(labels))]


def test_default_confounders_follow_white():
    assert V.default_confounders("Smiling") == ("Male", "Mouth_Slightly_Open")
    assert V.default_confounders("Male") == ("Mouth_Slightly_Open", "Smiling")
    assert V.default_confounders("Mouth_Slightly_Open") == ("Male", "Smiling")
    assert V.default_confounders("Eyeglasses") == ("Male",)
    assert V.resolve_confounders("Male", ["Male", "Young"]) == ("Young",)  # a shared set skips itself
    assert V.resolve_confounders("Bald", {"Bald": []}) == ()
    assert V.resolve_confounders("Bald", {"Smiling": ["Young"]}) == ("Male",)


def test_the_projection_keeps_a_smile_its_open_mouth():
    assert V.default_projected_out("Smiling") == ("Male",)
    assert V.default_projected_out("Mouth_Slightly_Open") == ("Male",)
    assert V.default_projected_out("Male") == ("Mouth_Slightly_Open", "Smiling")
    assert V.default_projected_out("Bald") == ("Male",)
    # named sets replace the default, as for balancing
    assert V.resolve_confounders("Smiling", {"Smiling": ["Male", "Mouth_Slightly_Open"]},
                                 V.default_projected_out) == ("Male", "Mouth_Slightly_Open")
    assert V.resolve_confounders("Smiling", None, V.default_projected_out) == ("Male",)


def test_bad_names_list_the_valid_ones():
    with pytest.raises(ValueError, match="unknown attribute 'Smiley'.*Smiling"):
        V.resolve_confounders("Smiley")
    with pytest.raises(ValueError, match="unknown attribute 'male'.*Male"):
        V.resolve_confounders("Smiling", ["male"])
    with pytest.raises(ValueError, match="itself"):
        V.resolve_confounders("Smiling", {"Smiling": ["Smiling"]})


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_balanced_equals_weighted_equals_literal_replication(seed):
    rng = np.random.default_rng(seed)
    names = ("Smiling", "Male", "Mouth_Slightly_Open")
    counts = [int(n) for n in rng.integers(1, 7, size=8)]  # random cell sizes; lcm(1..6) <= 60
    labels = labels_from_cells(counts, names, rng)
    mu = rng.normal(size=(len(labels), 5)) + 3 * labels[:, [SMILE, MALE, MOUTH, 0, 1]]
    balanced, bal = V.balanced_vector(mu, labels, "Smiling")
    weighted = V.weighted_mean_difference(mu, labels[:, SMILE], bal.row_weights(labels))
    # Replicating every cell to lcm(counts) rows copies each face a whole number of times: exact.
    literal = V.replicated_vector(mu, labels, "Smiling", target=math.lcm(*counts))
    # The streaming pass over batches gives the same cell sums.
    stats = V.CellStats({"Smiling": V.default_confounders("Smiling")}, dim=5)
    for i in range(0, len(mu), 7):
        stats.update(mu[i:i + 7], labels[i:i + 7])
    streamed = V.balancing(stats.cells("Smiling")).vector()
    np.testing.assert_allclose(weighted, balanced, atol=1e-12)
    np.testing.assert_allclose(literal, balanced, atol=1e-12)
    np.testing.assert_allclose(streamed, balanced, atol=1e-12)
    # Balanced = average over strata of the within-stratum mean differences, by definition.
    means = bal.cells.means()
    np.testing.assert_allclose(balanced, (means[1::2] - means[0::2]).mean(0), atol=1e-12)
    # ... which is not the naive vector on unbalanced cells.
    assert np.abs(balanced - V.naive_vector(mu, labels, "Smiling")).max() > 1e-3


def test_literal_replication_to_the_largest_cell_matches_in_expectation():
    rng = np.random.default_rng(5)
    labels = labels_from_cells([40, 7, 25, 13], ("Eyeglasses", "Male"), rng)
    mu = rng.normal(size=(len(labels), 4))
    balanced, _ = V.balanced_vector(mu, labels, "Eyeglasses")
    draws = np.stack([V.replicated_vector(mu, labels, "Eyeglasses", seed=s) for s in range(300)])
    assert np.abs(draws.mean(0) - balanced).max() < 0.02
    assert np.abs(draws[0] - balanced).max() > 1e-6  # a single draw is not exact (7, 13 don't divide 40)


def test_literal_replication_refuses_huge_copies():
    rng = np.random.default_rng(0)
    labels = labels_from_cells([3, 4, 5, 6], ("Eyeglasses", "Male"), rng)
    with pytest.raises(ValueError, match="GiB"):
        V.replicated_vector(rng.normal(size=(18, 4)), labels, "Eyeglasses", target=10**9)


def test_duplicating_one_cell_moves_naive_but_not_balanced():
    rng = np.random.default_rng(3)
    labels = labels_from_cells([30, 20, 25, 15, 10, 40, 35, 5], ("Smiling", "Male", "Mouth_Slightly_Open"), rng)
    mu = rng.normal(size=(len(labels), 6)) + 2 * labels[:, [SMILE, MALE, MOUTH, 0, 1, 2]]
    cell = V.cell_ids(labels, ("Smiling", "Male", "Mouth_Slightly_Open")) == 3  # Smiling=1, Male=1, mouth closed
    mu2, labels2 = np.concatenate([mu, mu[cell]]), np.concatenate([labels, labels[cell]])
    before, _ = V.balanced_vector(mu, labels, "Smiling")
    after, _ = V.balanced_vector(mu2, labels2, "Smiling")
    np.testing.assert_allclose(after, before, atol=1e-12)
    naive_move = V.naive_vector(mu2, labels2, "Smiling") - V.naive_vector(mu, labels, "Smiling")
    assert np.linalg.norm(naive_move) > 0.05


def correlated_latents(n: int = 20000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Male lives in coordinate 0, Smiling in 1, mouth in 2; smiling faces are mostly female."""
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, len(ATTRIBUTES))) < 0.5).astype(np.int8)
    male = rng.random(n) < 0.5
    smile = rng.random(n) < np.where(male, 0.2, 0.8)  # P(smile | male) = 0.2, P(smile | female) = 0.8
    labels[:, MALE], labels[:, SMILE] = male, smile
    mu = rng.normal(scale=0.5, size=(n, 8))
    mu[:, 0] += 2.0 * male
    mu[:, 1] += 1.0 * smile
    mu[:, 2] += 1.0 * labels[:, MOUTH]
    return mu, labels


def test_balanced_smile_vector_has_no_male_component():
    mu, labels = correlated_latents()
    naive = V.naive_vector(mu, labels, "Smiling")
    balanced, bal = V.balanced_vector(mu, labels, "Smiling")
    # Naive inherits P(male | smile) - P(male | no smile) = 0.2 - 0.8 = -0.6 times the Male offset 2.
    assert naive[0] == pytest.approx(-1.2, abs=0.08)
    assert abs(balanced[0]) < 0.03
    assert balanced[1] == pytest.approx(1.0, abs=0.03)  # the smile itself is kept
    cos = lambda a, b: float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))  # noqa: E731
    male_axis = np.eye(8)[0]
    assert cos(naive, male_axis) < -0.6 and abs(cos(balanced, male_axis)) < 0.03
    # The Male vectors themselves: the naive one carries smile, the balanced one does not.
    male_naive, male_balanced = V.naive_vector(mu, labels, "Male"), V.balanced_vector(mu, labels, "Male")[0]
    assert cos(naive, male_naive) < -0.6 and abs(cos(balanced, male_balanced)) < 0.03
    assert bal.ess["positive"] < bal.cells.counts[1::2].sum()  # weighting costs effective samples


def test_cap_limits_replication_and_says_so():
    rng = np.random.default_rng(4)
    counts = [100, 2, 50, 100]  # (a0 m0), (a1 m0), (a0 m1), (a1 m1): a1 m0 needs factor 50
    labels = labels_from_cells(counts, ("Eyeglasses", "Male"), rng)
    mu = rng.normal(size=(len(labels), 4)) + 2 * labels[:, [attribute_index("Eyeglasses"), MALE, 0, 1]]
    uncapped, free = V.balanced_vector(mu, labels, "Eyeglasses")
    assert not free.capped.any()
    same, loose = V.balanced_vector(mu, labels, "Eyeglasses", cap=50)  # cap at the largest factor: no-op
    np.testing.assert_allclose(same, uncapped, atol=1e-12)
    assert not loose.capped.any()
    capped, tight = V.balanced_vector(mu, labels, "Eyeglasses", cap=10)
    assert tight.capped.tolist() == [False, True, False, False]
    assert tight.factors.tolist() == [1.0, 10.0, 2.0, 1.0]
    assert tight.ess["positive"] > free.ess["positive"]  # fewer copies of the 2 faces
    assert np.abs(capped - uncapped).max() > 1e-3
    # The literal path with the same cap copies the same number of rows: same vector.
    np.testing.assert_allclose(V.replicated_vector(mu, labels, "Eyeglasses", cap=10), capped, atol=1e-12)
    # Cap 1 means no replication at all: the naive vector.
    np.testing.assert_allclose(V.balanced_vector(mu, labels, "Eyeglasses", cap=1)[0],
                               V.naive_vector(mu, labels, "Eyeglasses"), atol=1e-12)
    with pytest.raises(ValueError, match="cap"):
        V.balanced_vector(mu, labels, "Eyeglasses", cap=0.5)


def test_empty_cell_is_an_error_naming_the_cell():
    rng = np.random.default_rng(0)
    labels = labels_from_cells([30, 0, 20, 10], ("Bald", "Male"), rng)  # no bald women
    mu = rng.normal(size=(len(labels), 3))
    with pytest.raises(V.EmptyCellError, match=r"Bald: cell \(Bald=1, Male=0\) has 0 faces"):
        V.balanced_vector(mu, labels, "Bald")
    with pytest.raises(V.EmptyCellError, match="Bald=1, Male=0"):
        V.replicated_vector(mu, labels, "Bald")
    # empty="drop" balances over the strata that have both sides: here the men only.
    with pytest.warns(V.EmptyCellWarning, match=r"\(Bald=1, Male=0\) has 0 faces.*\(Bald=0, Male=0\): 30 faces"):
        dropped, bal = V.balanced_vector(mu, labels, "Bald", empty="drop")
    men = labels[:, MALE] == 1
    np.testing.assert_allclose(dropped, V.naive_vector(mu[men], labels[men], "Bald"), atol=1e-12)
    assert bal.dropped == ["Bald=0, Male=0", "Bald=1, Male=0"]


def test_tiny_cell_warns_with_its_count():
    rng = np.random.default_rng(0)
    labels = labels_from_cells([300, 1, 200, 100], ("Goatee", "Male"), rng)
    with pytest.warns(V.TinyCellWarning, match=r"cell \(Goatee=1, Male=0\) has only 1 faces.*300 times"):
        V.balanced_vector(rng.normal(size=(len(labels), 3)), labels, "Goatee")
    with warnings.catch_warnings():
        warnings.simplefilter("error", V.TinyCellWarning)
        V.balanced_vector(rng.normal(size=(len(labels), 3)), labels, "Goatee", confounders=[])


def test_kish_ess_known_case():
    assert V.kish_ess(np.ones(37)) == pytest.approx(37)
    assert V.kish_ess(np.array([1.0, 0, 0, 0])) == pytest.approx(1)
    rng = np.random.default_rng(0)
    labels = labels_from_cells([100, 1, 50, 100], ("Eyeglasses", "Male"), rng)
    with pytest.warns(V.TinyCellWarning):
        _, bal = V.balanced_vector(rng.normal(size=(len(labels), 2)), labels, "Eyeglasses")
    # positive: 1 face x 100 and 100 faces x 1 -> (200)^2 / (1 * 100^2 + 100 * 1^2)
    assert bal.ess["positive"] == pytest.approx(40000 / 10100)
    # negative: 100 faces x 1 and 50 faces x 2 -> (200)^2 / (100 + 50 * 4)
    assert bal.ess["negative"] == pytest.approx(40000 / 300)
    assert bal.ess["positive"] == pytest.approx(V.kish_ess(bal.row_weights(labels)[labels[:, 15] == 1]))


def test_projection_is_orthogonal_to_the_span():
    rng = np.random.default_rng(0)
    dirs = rng.normal(size=(3, 10))
    dirs[2] = dirs[0] + 0.1 * dirs[1]  # correlated directions: one-at-a-time removal would fail
    v = rng.normal(size=10)
    p = V.projection_vector(v, dirs)
    np.testing.assert_allclose(dirs @ p, 0.0, atol=1e-10)
    np.testing.assert_allclose(V.projection_vector(p, dirs), p, atol=1e-12)  # idempotent
    np.testing.assert_allclose(V.projection_vector(dirs.T @ [1.0, -2.0, 0.5], dirs), 0.0, atol=1e-10)
    np.testing.assert_allclose(V.projection_vector(v, np.zeros((0, 10))), v)
    dup = np.stack([dirs[0], 2 * dirs[0]])  # rank 1
    np.testing.assert_allclose(dup @ V.projection_vector(v, dup), 0.0, atol=1e-10)


def test_boundary_recovers_a_planted_direction():
    rng = np.random.default_rng(1)
    w = rng.normal(size=12)
    w /= np.linalg.norm(w)
    mu = rng.normal(size=(4000, 12))
    y = (mu @ w + 0.1 * rng.normal(size=4000) > 0.3).astype(np.int8)
    b = V.boundary_vector(mu, y, length=2.5)
    assert np.linalg.norm(b) == pytest.approx(2.5)
    assert b @ w / 2.5 > 0.98
    # Weights change the fit but it still points the same way; flipping labels flips the normal.
    wb = V.boundary_vector(mu, y, weights=rng.uniform(0.5, 3.0, size=4000))
    assert wb @ w > 0.97
    assert V.boundary_vector(mu, 1 - y) @ w < -0.98
    with pytest.raises(ValueError, match="both classes"):
        V.boundary_vector(mu, np.zeros(4000))


def test_boundary_balanced_ignores_the_confounder():
    # A boundary fitted with the balancing weights sees Male and Smiling independent.
    mu, labels = correlated_latents(n=6000, seed=2)
    _, bal = V.balanced_vector(mu, labels, "Smiling")
    plain = V.boundary_vector(mu, labels[:, SMILE])
    balanced = V.boundary_vector(mu, labels[:, SMILE], weights=bal.row_weights(labels))
    assert abs(balanced[0]) < 0.1 and balanced[1] > 0.9
    assert plain[1] > 0.9  # a discriminative fit already conditions on mu's Male coordinate


def test_cosine_matrix():
    V2 = np.array([[1.0, 0], [0, 2], [-3, 0], [0, 0]])
    c = V.cosine_matrix(V2)
    np.testing.assert_allclose(c[:3, :3], [[1, 0, -1], [0, 1, 0], [-1, 0, 1]])
    assert (c[3] == 0).all()


def test_cell_stats_checks_shapes():
    stats = V.CellStats({"Smiling": ("Male",)}, dim=4)
    with pytest.raises(ValueError, match="dimension 3, expected 4"):
        stats.update(np.zeros((2, 3)), np.zeros((2, 40), np.int8))
    with pytest.raises(ValueError, match=r"labels must be \(N, 40\)"):
        stats.update(np.zeros((2, 4)), np.zeros((2, 39), np.int8))
    with pytest.raises(ValueError, match="no statistics for 'Male'"):
        stats.cells("Male")


def test_real_celeba_cells(real_celeba):
    """On CelebA's own 19,000 label rows (no images needed): the cells the issue warns about."""
    from faceedit.celeba import read_attr_file

    names, labels = read_attr_file(real_celeba / "list_attr_celeba.txt")
    assert tuple(names) == ATTRIBUTES
    mu = np.random.default_rng(0).normal(size=(len(labels), 4))
    with pytest.warns(V.TinyCellWarning, match=r"cell \(Bald=1, Male=0\) has only 1 faces"):
        _, bald = V.balanced_vector(mu, labels, "Bald")
    # One bald woman carries half the positive side: Kish ESS = 4 / (1/1 + 1/n) < 4.
    n = int(bald.cells.counts[3])
    assert bald.ess["positive"] == pytest.approx(4 / (1 + 1 / n))
    with pytest.warns(V.TinyCellWarning):
        _, capped = V.balanced_vector(mu, labels, "Bald", cap=100)
    assert capped.capped.tolist() == [False, True, False, False] and capped.ess["positive"] > 50
    # White's three: every cell is well filled (849 .. 4,550 faces).
    _, smile = V.balanced_vector(mu, labels, "Smiling")
    assert smile.cells.counts.min() == 849 and smile.cells.counts.max() == 4550
