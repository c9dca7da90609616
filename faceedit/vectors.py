"""Attribute vectors in a latent space: naive, balanced by replication, projected, linear boundary.

All of it is plain math on latents: mu (N, D) (any float dtype; sums are taken in float64) and labels
(N, 40) in {0, 1}, columns in ATTRIBUTES order.

- naive: mean(mu | a = 1) - mean(mu | a = 0). It inherits every correlation of the data: in CelebA
  smiling faces are more often female, so the naive smile vector also changes gender.
- balanced (White 2016, "Sampling Generative Networks", Sec. 3.3 and its Figure 7): split the
  latents into the 2^(k+1) cells of the attribute and its k confounders, replicate every cell up to
  the size of the largest, then take the mean difference. Replicating cell c by the factor
  f_c = M / n_c is the same as giving each of its rows the weight f_c, so the balanced vector is
  computed exactly from per-cell sums in one streaming pass (`CellStats`), without copying a row;
  `replicated_vector` keeps the literal replication path. With every factor equal to M / n_c each
  side's mean is the plain average of its cells' means. A cap on f_c bounds how often one face may
  be copied (real CelebA has cells of one face), at the price of balance in the capped cells.
- projection (Shen et al. 2020, "InterFaceGAN", conditional manipulation): the naive vector minus
  its component in the span of some other attributes' naive vectors: by default Male's (for Male:
  Mouth_Slightly_Open's and Smiling's), `default_projected_out`.
- boundary (plat's --svm; InterFaceGAN's SVM normal): the unit normal of a logistic regression of
  the attribute on mu, fitted with the balancing weights when balanced, scaled to the naive length.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Callable, Literal, Mapping, Sequence

import numpy as np

from faceedit.attributes import ATTRIBUTES, attribute_index

# White balanced these three against each other; every other attribute is balanced over Male.
WHITE_SET: tuple[str, ...] = ("Male", "Mouth_Slightly_Open", "Smiling")
TINY_CELL = 10  # a cell with fewer faces than this is warned about
EmptyPolicy = Literal["error", "drop"]


class EmptyCellError(ValueError):
    """A cell of attribute x confounders with no faces: its mean, hence the balanced vector, is undefined."""


class EmptyCellWarning(UserWarning):
    """Empty cells whose strata were left out of the balance (empty="drop")."""


class TinyCellWarning(UserWarning):
    """A cell so small that replication would copy a handful of faces many times."""


def default_confounders(attr: str) -> tuple[str, ...]:
    """White's set for Male, Mouth_Slightly_Open and Smiling (the other two); Male for the rest."""
    attribute_index(attr)
    if attr in WHITE_SET:
        return tuple(a for a in WHITE_SET if a != attr)
    return () if attr == "Male" else ("Male",)


def default_projected_out(attr: str) -> tuple[str, ...]:
    """The directions the projection removes by default: the balancing confounders, except that
    Smiling and Mouth_Slightly_Open keep each other. Each one's naive vector is mostly the other
    on the real faces, so removing it removed most of the edit itself (BENCHMARKS.md, Audit)."""
    partners = {"Smiling": "Mouth_Slightly_Open", "Mouth_Slightly_Open": "Smiling"}
    return tuple(c for c in default_confounders(attr) if c != partners.get(attr))


def resolve_confounders(
    attr: str, confounders: Sequence[str] | Mapping[str, Sequence[str]] | None = None,
    default: Callable[[str], tuple[str, ...]] = default_confounders,
) -> tuple[str, ...]:
    """The confounders of `attr`: the default set, one set for every attribute, or a per-attribute map.

    A shared set leaves out `attr` itself (so `("Male",)` works for Male too); a map entry for `attr`
    must not name it. Names are checked against ATTRIBUTES.
    """
    attribute_index(attr)
    if confounders is None:
        return default(attr)
    if isinstance(confounders, Mapping):
        for name in confounders:
            attribute_index(name)
        if attr not in confounders:
            return default(attr)
        chosen = tuple(confounders[attr])
        if attr in chosen:
            raise ValueError(f"confounders of {attr} include {attr} itself")
    else:
        chosen = tuple(c for c in confounders if c != attr)
    for name in chosen:
        attribute_index(name)
    if len(set(chosen)) != len(chosen):
        raise ValueError(f"confounders of {attr} repeat a name: {', '.join(chosen)}")
    return chosen


def _check(mu: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mu, labels = np.asarray(mu), np.asarray(labels)
    if mu.ndim != 2:
        raise ValueError(f"latents must be (N, D), got shape {mu.shape}")
    if labels.shape != (len(mu), len(ATTRIBUTES)):
        raise ValueError(f"labels must be (N, 40) = ({len(mu)}, 40) for these latents, got {labels.shape}")
    return mu, labels


# ---------------------------------------------------------------------------- cells

def cell_ids(labels: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """(N, 40) labels -> (N,) cell index: bit j is the label of names[j] (names[0] is the attribute)."""
    cols = [attribute_index(n) for n in names]
    bits = (np.asarray(labels)[:, cols] > 0).astype(np.int64)  # (N, k+1)
    return bits @ (1 << np.arange(len(cols), dtype=np.int64))  # (N,)


@dataclass(frozen=True)
class Cells:
    """Counts and latent sums of the 2^(k+1) cells of one attribute (names[0]) and its confounders.

    Cell index i has bit j = value of names[j]; so i = 2 s + a, with s the stratum (the confounders'
    values) and a the attribute's value.
    """

    names: tuple[str, ...]
    counts: np.ndarray  # (K,) int64, K = 2 ** len(names)
    sums: np.ndarray  # (K, D) float64

    @classmethod
    def from_latents(cls, mu: np.ndarray, labels: np.ndarray, names: Sequence[str],
                     chunk: int = 8192) -> "Cells":
        """The cells of latents held in memory, summed chunk by chunk (see CellStats)."""
        mu, labels = _check(mu, labels)
        stats = CellStats({names[0]: tuple(names[1:])}, mu.shape[1])
        for i in range(0, len(mu), chunk):
            stats.update(mu[i:i + chunk], labels[i:i + chunk])
        return stats.cells(names[0])

    @property
    def attribute(self) -> str:
        return self.names[0]

    def values(self, cell: int) -> dict[str, int]:
        return {n: (cell >> j) & 1 for j, n in enumerate(self.names)}

    def label(self, cell: int) -> str:
        """E.g. "Bald=1, Male=0"."""
        return ", ".join(f"{n}={v}" for n, v in self.values(cell).items())

    def means(self) -> np.ndarray:
        """(K, D) per-cell means (NaN rows for empty cells)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.sums / self.counts[:, None]


def naive_from_cells(cells: Cells) -> np.ndarray:
    """mean(mu | a=1) - mean(mu | a=0) from the cells: (D,) float64."""
    pos = np.arange(len(cells.counts)) & 1 == 1
    n_pos, n_neg = cells.counts[pos].sum(), cells.counts[~pos].sum()
    if n_pos == 0 or n_neg == 0:
        raise EmptyCellError(
            f"{cells.attribute}: {n_pos} faces with it and {n_neg} without; "
            "an attribute vector needs both"
        )
    return cells.sums[pos].sum(0) / n_pos - cells.sums[~pos].sum(0) / n_neg


# ---------------------------------------------------------------------------- balancing weights

@dataclass(frozen=True)
class Balancing:
    """The replication factors of one attribute's cells and what they cost.

    factors[c] = min(M / n_c, cap) where M is the largest kept cell; rows of cell c weigh factors[c].
    """

    cells: Cells
    factors: np.ndarray  # (K,) float64; 0 for cells of dropped strata
    capped: np.ndarray  # (K,) bool: the cap lowered this cell's factor
    kept: np.ndarray  # (K,) bool: cell belongs to a stratum with both sides present
    cap: float | None

    @property
    def ess(self) -> dict[str, float]:
        """Kish's effective sample size, (sum w)^2 / sum w^2, of each side ("positive", "negative")."""
        n, f = self.cells.counts.astype(np.float64), self.factors
        side = np.arange(len(n)) & 1 == 1
        return {name: _kish(n[s], f[s]) for name, s in (("positive", side), ("negative", ~side))}

    @property
    def dropped(self) -> list[str]:
        """The cells left out because their stratum lacked one side (empty="drop")."""
        return [self.cells.label(c) for c in np.flatnonzero(~self.kept)]

    def row_weights(self, labels: np.ndarray) -> np.ndarray:
        """(N, 40) labels -> (N,) float64 weight of every row (its cell's factor)."""
        return self.factors[cell_ids(labels, self.cells.names)]

    def vector(self) -> np.ndarray:
        """The balanced vector (D,) float64: weighted mean of side a=1 minus weighted mean of side a=0."""
        w = self.cells.counts * self.factors  # (K,) total weight of every cell
        side = np.arange(len(w)) & 1 == 1
        pos = (w[side, None] * self.cells.means()[side]).sum(0, where=self.kept[side, None])
        neg = (w[~side, None] * self.cells.means()[~side]).sum(0, where=self.kept[~side, None])
        return pos / w[side].sum() - neg / w[~side].sum()

    def describe(self) -> list[dict]:
        """One JSON-ready dict per cell: its values, count, replication factor, capped, kept."""
        return [
            {"values": self.cells.values(c), "count": int(self.cells.counts[c]),
             "factor": float(self.factors[c]), "capped": bool(self.capped[c]),
             "kept": bool(self.kept[c])}
            for c in range(len(self.factors))
        ]


def _kish(counts: np.ndarray, factors: np.ndarray) -> float:
    total, squares = (counts * factors).sum(), (counts * factors**2).sum()
    return float(total**2 / squares) if squares > 0 else 0.0


def balancing(cells: Cells, cap: float | None = None, empty: EmptyPolicy = "error",
              tiny: int = TINY_CELL) -> Balancing:
    """Replication factors for `cells` (White 2016): every cell up to the largest, optionally capped.

    empty="error" raises EmptyCellError naming the first empty cell; empty="drop" leaves out every
    stratum (setting of the confounders) that lacks one side, i.e. balances over the strata where
    the attribute is seen both present and absent. Cells under `tiny` faces raise TinyCellWarning.
    """
    if cap is not None and not cap >= 1:
        raise ValueError(f"cap on the replication factor must be >= 1 (1 = no replication), got {cap}")
    if empty not in ("error", "drop"):
        raise ValueError(f"empty must be 'error' or 'drop', got {empty!r}")
    counts = cells.counts
    stratum_ok = (counts[0::2] > 0) & (counts[1::2] > 0)  # (K/2,)
    kept = np.repeat(stratum_ok, 2)  # (K,)
    empty_cells = np.flatnonzero(counts == 0)
    if len(empty_cells) and (empty == "error" or not kept.any()):
        c = int(empty_cells[0])
        more = f" (and {len(empty_cells) - 1} more empty cells)" if len(empty_cells) > 1 else ""
        raise EmptyCellError(
            f"balanced vector for {cells.attribute}: cell ({cells.label(c)}) has {counts[c]} faces{more}; "
            f"cells (count): {_cell_table(cells)}. Balance over fewer confounders, or drop the "
            "strata that lack one side (empty='drop', CLI --empty-cells drop)"
        )
    if len(empty_cells):
        gone = np.flatnonzero(~kept)
        warnings.warn(EmptyCellWarning(
            f"balanced vector for {cells.attribute}: empty cell(s) "
            + "; ".join(f"({cells.label(c)}) has 0 faces" for c in empty_cells)
            + "; balancing over the other strata, leaving out "
            + "; ".join(f"({cells.label(c)}): {counts[c]} faces" for c in gone if counts[c])
        ), stacklevel=2)
    for c in np.flatnonzero(kept & (counts < tiny)):
        warnings.warn(TinyCellWarning(
            f"balanced vector for {cells.attribute}: cell ({cells.label(c)}) has only {counts[c]} "
            f"faces; replication weighs each of them {counts[kept].max() / counts[c]:.3g} times"
        ), stacklevel=2)
    M = counts[kept].max()  # the largest cell: every kept cell is replicated up to it
    full = np.where(kept, M / np.maximum(counts, 1), 0.0)
    factors = full if cap is None else np.minimum(full, cap)
    return Balancing(cells, factors, factors < full, kept, cap)


def _cell_table(cells: Cells) -> str:
    return "; ".join(f"{cells.label(c)}: {n}" for c, n in enumerate(cells.counts))


def kish_ess(weights: np.ndarray) -> float:
    """Kish's effective sample size of weighted rows: (sum w)^2 / sum w^2."""
    w = np.asarray(weights, dtype=np.float64)
    return float(w.sum() ** 2 / (w**2).sum()) if (w**2).sum() > 0 else 0.0


# ---------------------------------------------------------------------------- streaming statistics

class CellStats:
    """Per-cell counts and float64 latent sums for many attributes at once, fed batch by batch.

    One pass over the data gives every naive and balanced vector: nothing is kept but (K, D) sums.
    """

    def __init__(self, groups: Mapping[str, Sequence[str]], dim: int):
        """groups: attribute -> its confounders; dim: D."""
        self.names = {a: (a, *conf) for a, conf in groups.items()}
        self.counts = {a: np.zeros(1 << len(n), np.int64) for a, n in self.names.items()}
        self.sums = {a: np.zeros((1 << len(n), dim)) for a, n in self.names.items()}
        self.dim = dim

    def update(self, mu: np.ndarray, labels: np.ndarray) -> None:
        """Add a batch: mu (B, D), labels (B, 40)."""
        mu, labels = _check(mu, labels)
        if mu.shape[1] != self.dim:
            raise ValueError(f"latents of dimension {mu.shape[1]}, expected {self.dim}")
        mu64 = mu.astype(np.float64, copy=False)  # (B, D)
        for a, names in self.names.items():
            ids = cell_ids(labels, names)  # (B,)
            K = len(self.counts[a])
            self.counts[a] += np.bincount(ids, minlength=K)
            onehot = (ids[:, None] == np.arange(K)).astype(np.float64)  # (B, K)
            self.sums[a] += onehot.T @ mu64  # (K, D)

    def cells(self, attr: str) -> Cells:
        if attr not in self.names:
            raise ValueError(f"no statistics for {attr!r}; have: {', '.join(self.names)}")
        return Cells(self.names[attr], self.counts[attr].copy(), self.sums[attr].copy())


# ---------------------------------------------------------------------------- the vectors

def naive_vector(mu: np.ndarray, labels: np.ndarray, attr: str) -> np.ndarray:
    """mean(mu | attr=1) - mean(mu | attr=0): (D,) float64."""
    return naive_from_cells(Cells.from_latents(mu, labels, (attr,)))


def balanced_vector(mu: np.ndarray, labels: np.ndarray, attr: str,
                    confounders: Sequence[str] | Mapping[str, Sequence[str]] | None = None,
                    cap: float | None = None, empty: EmptyPolicy = "error") -> tuple[np.ndarray, Balancing]:
    """White's balanced vector (D,) float64 via exact per-cell weights, and its Balancing record."""
    names = (attr, *resolve_confounders(attr, confounders))
    bal = balancing(Cells.from_latents(mu, labels, names), cap=cap, empty=empty)
    return bal.vector(), bal


def weighted_mean_difference(mu: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """sum w mu / sum w over rows with y=1, minus the same over y=0: (D,) float64."""
    mu64, y, w = np.asarray(mu, np.float64), np.asarray(y) > 0, np.asarray(weights, np.float64)
    return np.average(mu64[y], 0, w[y]) - np.average(mu64[~y], 0, w[~y])


def replicated_vector(mu: np.ndarray, labels: np.ndarray, attr: str,
                      confounders: Sequence[str] | Mapping[str, Sequence[str]] | None = None,
                      cap: float | None = None, target: int | None = None, empty: EmptyPolicy = "error",
                      seed: int = 0, max_bytes: int = 2 << 30) -> np.ndarray:
    """The literal path: copy every cell's rows up to `target` rows, then the plain mean difference.

    target defaults to the largest cell (White 2016); with a cap, cell c gets min(target, cap n_c)
    rows. A cell of n rows is tiled floor(rows / n) times, plus a seeded random subset for the rest,
    so it equals the weighted vector exactly when n divides its row count, and in expectation
    otherwise. It materialises every copy (refused beyond max_bytes): use `balanced_vector` for
    real work.
    """
    mu, labels = _check(mu, labels)
    names = (attr, *resolve_confounders(attr, confounders))
    ids = cell_ids(labels, names)
    bal = balancing(Cells.from_latents(mu, labels, names), cap=None, empty=empty)
    counts = bal.cells.counts
    T = int(counts[bal.kept].max()) if target is None else int(target)
    need = int(bal.kept.sum()) * T * mu.shape[1] * 8
    if need > max_bytes:
        raise ValueError(f"literal replication of {attr} to {T} rows per cell needs {need / 2**30:.1f} GiB "
                         f"(max_bytes={max_bytes / 2**30:.1f} GiB); use balanced_vector")
    rng = np.random.default_rng(seed)
    rows, ys = [], []
    for c in np.flatnonzero(bal.kept):
        members = np.flatnonzero(ids == c)
        size = T if cap is None else min(T, math.floor(cap * len(members)))
        q, r = divmod(size, len(members))
        picked = np.concatenate([np.tile(members, q), rng.permutation(members)[:r]])
        rows.append(mu[picked])  # the copies: (size, D)
        ys.append(np.full(size, c & 1))
    big, y = np.concatenate(rows).astype(np.float64), np.concatenate(ys) == 1
    return big[y].mean(0) - big[~y].mean(0)


def projection_vector(vector: np.ndarray, directions: np.ndarray, rtol: float = 1e-10) -> np.ndarray:
    """Remove from vector (D,) its component in the span of directions (k, D) (InterFaceGAN, Sec. 2.3).

    Orthogonalises against the whole span at once (an orthonormal basis from the SVD), not one
    direction after the other, so the result is orthogonal to every direction even when they are
    correlated. Directions that are (nearly) linearly dependent add nothing to the span.
    """
    v = np.asarray(vector, np.float64)
    U = np.atleast_2d(np.asarray(directions, np.float64))
    if U.size == 0:
        return v.copy()
    if U.shape[1] != v.shape[0]:
        raise ValueError(f"directions must be (k, {v.shape[0]}), got {U.shape}")
    _, s, Vt = np.linalg.svd(U, full_matrices=False)  # rows of Vt: orthonormal basis of the span
    if s.size == 0 or s[0] == 0:
        return v.copy()
    basis = Vt[s > rtol * s[0]]  # (r, D)
    return v - basis.T @ (basis @ v)


def boundary_vector(mu: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None,
                    length: float = 1.0, C: float = 1.0, max_iter: int = 2000,
                    solver: str = "newton-cholesky") -> np.ndarray:
    """The unit normal of a logistic regression of y on mu, times `length`: (D,) float64.

    plat's --svm and InterFaceGAN fit a linear SVM; a logistic regression gives the same kind of
    separating hyperplane with a smooth loss. sklearn's newton-cholesky solver is deterministic and
    converges in a few Newton steps for N >> D (lbfgs took far longer on small problems here).
    Weights (e.g. the balancing factors) are rescaled to mean 1 so C keeps its meaning. The normal
    points towards y=1.
    """
    from sklearn.linear_model import LogisticRegression  # import here: sklearn is slow to import

    X, y = np.asarray(mu, np.float64), (np.asarray(y) > 0).astype(np.int64)
    if y.min() == y.max():
        raise ValueError(f"boundary needs both classes; all {len(y)} labels are {y[0]}")
    w = None if weights is None else np.asarray(weights, np.float64) / np.mean(weights)
    # A non-converged fit raises sklearn's own ConvergenceWarning (not silenced here).
    clf = LogisticRegression(C=C, max_iter=max_iter, tol=1e-6, solver=solver)
    clf.fit(X, y, sample_weight=w)
    normal = clf.coef_[0]
    return normal / np.linalg.norm(normal) * length


def cosine_matrix(vectors: np.ndarray) -> np.ndarray:
    """(A, D) -> (A, A) cosine similarity of every pair of rows (0 where a row is zero)."""
    V = np.asarray(vectors, np.float64)
    norms = np.linalg.norm(V, axis=1)
    unit = V / np.where(norms > 0, norms, 1.0)[:, None]
    return np.clip(unit @ unit.T, -1.0, 1.0)
