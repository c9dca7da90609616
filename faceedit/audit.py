"""The batch attribute-bias audit: does an edit change what it says, and nothing else?

For each audited attribute a, method m and strength alpha, held-out faces without a (for +alpha) or
with a (for -alpha) are encoded to mu, decoded at mu + alpha v_{a,m} and at mu (the unedited
reconstruction, alpha = 0), and both are scored by the judge (faceedit/judge.py), an image classifier
independent of the latent model. Measured against the reconstruction, so the model's blur is not
counted as an edit effect (DESIGN.md, "The audit"):

- efficacy: the mean change in P(a), and the fraction of faces whose judged a flips to the target;
- leakage to every other attribute b: the mean change of b's logit in units of b's logit standard
  deviation (the Attribute Dependency of Wu et al. 2021, "StyleSpace Analysis", Sec. 5.2; there the
  mean of |change| / sd, reported here too as `ad`), its mean and max over b. Attributes the judge
  cannot judge (held-out AUC < its min_auc) are left out of the summaries and marked;
- the same changes against the original image (what reconstruction itself loses), separately;
- identity: the distance between edited and unedited reconstruction in the judge's penultimate
  features (over the median distance between two different faces' reconstructions: 1 = as far as
  another face), and pixel PSNR.

The same edits run in a PCA latent of the same D (faceedit/pca.py) beside the VAE's. The dataset-bias
part (per-attribute rates, the 40x40 phi matrix of labels) needs labels only.

Work is cut into `Job`s (one latent model, attribute, side and batch of faces, every method and
strength of that side at once) that `run_job` scores; `workers/audit.py` spreads the same jobs over
Ray, so both paths give the same numbers.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Protocol, Sequence

import numpy as np
import torch

from faceedit.attributes import ATTRIBUTES, attribute_index
from faceedit.bank import METHODS
from faceedit.judge import judgeable
from faceedit.metrics import psnr

# What a bank holds (faceedit/bank.py); the audit reports all but the unweighted boundary by
# default (it is the balanced boundary's reference, not an edit of its own).
AUDITED_METHODS: tuple[str, ...] = tuple(m for m in METHODS if m != "boundary_plain")


@dataclass(frozen=True)
class AuditConfig:
    attributes: tuple[str, ...] = field(default=(), metadata={"help": "attributes to audit (none "
                                        "given: all 40, or on a rendered set the rendered ones)"})
    methods: tuple[str, ...] = field(default=AUDITED_METHODS, metadata={"help": "vector methods to audit"})
    strengths: tuple[float, ...] = field(default=(-2.0, -1.0, 1.0, 2.0), metadata={"help": "edit "
                                         "strengths alpha, in units of the vector's length; +alpha "
                                         "edits faces without the attribute, -alpha faces with it"})
    faces: int = field(default=64, metadata={"help": "held-out faces per attribute and side (fewer "
                       "where the split has fewer)"})
    split: str = field(default="val", metadata={"help": "cache split the faces come from"})
    batch_size: int = field(default=32, metadata={"help": "faces per edit-and-score job (each job "
                            "decodes faces x (methods x strengths per side + 1) images)"})
    seed: int = field(default=0, metadata={"help": "seed of the choice of faces"})
    pca: bool = field(default=True, metadata={"help": "also run the same edits in a PCA latent of "
                      "the same D (faceedit/pca.py), reported beside the VAE"})
    headline: float = field(default=2.0, metadata={"help": "the strength the verdicts, heatmaps "
                            "and plot show"})
    strips: int = field(default=3, metadata={"help": "Figure-7-style strips for this many of the "
                        "most leaking attributes"})

    def __post_init__(self) -> None:
        for a in self.attributes:
            attribute_index(a)
        bad = [m for m in self.methods if m not in METHODS]
        if bad or not self.methods:
            raise ValueError(f"AuditConfig.methods={self.methods!r}: expected some of {', '.join(METHODS)}")
        if not self.strengths or any(s == 0 or not math.isfinite(s) for s in self.strengths):
            raise ValueError(f"AuditConfig.strengths={self.strengths!r}: expected non-zero finite numbers")
        if self.headline not in self.strengths:
            raise ValueError(f"AuditConfig.headline={self.headline} is not one of strengths {self.strengths}")
        if self.faces < 1 or self.batch_size < 1:
            raise ValueError(f"AuditConfig: faces={self.faces}, batch_size={self.batch_size}: expected >= 1")


# ---------------------------------------------------------------------------- the parts it uses

class LatentModel(Protocol):
    """A VAE or the PCA baseline: encode(x) -> (mu, logvar), decode(z) -> x."""

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def decode(self, z: torch.Tensor) -> torch.Tensor: ...


class Scorer(Protocol):
    """The judge: score(x) -> (logits (B, 40), penultimate features (B, F))."""

    def score(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...


class VectorSource(Protocol):
    """An attribute bank: vector(attr, method) -> (D,)."""

    def vector(self, attr: str, method: str) -> torch.Tensor: ...


# ---------------------------------------------------------------------------- dataset bias

def attribute_rates(labels: np.ndarray) -> np.ndarray:
    """Fraction of faces with each attribute. (N, 40) -> (40,)."""
    return (np.asarray(labels) > 0).mean(axis=0)


def phi_matrix(labels: np.ndarray) -> np.ndarray:
    """Phi coefficient (Pearson correlation of 0/1 labels) of every pair of attributes.

    (N, K) -> (K, K); NaN in the rows and columns of an attribute that never varies.
    """
    y = (np.asarray(labels) > 0).astype(np.float64)
    centred = y - y.mean(axis=0)
    sd = np.sqrt((centred**2).mean(axis=0))  # (K,)
    cov = centred.T @ centred / len(y)  # (K, K)
    with np.errstate(invalid="ignore", divide="ignore"):
        phi = cov / np.outer(sd, sd)
    phi[:, sd == 0] = np.nan
    phi[sd == 0, :] = np.nan
    return np.clip(phi, -1.0, 1.0)


# ---------------------------------------------------------------------------- choosing faces

def choose_faces(labels: np.ndarray, rows: np.ndarray, attr: str, positive: bool, n: int,
                 seed: int) -> np.ndarray:
    """Up to n of `rows` whose label of attr is (not positive): the faces a +alpha edit (positive)
    adds it to are those without it. Seeded per attribute and side; ascending row numbers."""
    k = attribute_index(attr)
    rows = np.asarray(rows)
    pool = rows[(labels[rows, k] > 0) != positive]
    rng = np.random.default_rng([seed, k, int(positive)])
    picked = rng.permutation(pool)[:n]
    return np.sort(picked)


# ---------------------------------------------------------------------------- jobs

@dataclass(frozen=True)
class Job:
    """One batch of faces of one attribute and side, edited by every (method, strength) of the side.

    `slots` index the audit's face table (rows of `Base`); `edits` are (method, alpha) pairs.
    """

    latent: str  # "vae" or "pca"
    attr: str
    positive: bool  # True: +alpha edits of faces without attr
    slots: tuple[int, ...]
    edits: tuple[tuple[str, float], ...]


@dataclass
class JobResult:
    logits: np.ndarray  # (K, B, 40) judge logits of the K edits
    feature_distance: np.ndarray  # (K, B) ||f(edit) - f(rec)||
    psnr: np.ndarray  # (K, B) dB, edit vs rec


@torch.no_grad()
def score_edits(model: LatentModel, judge: Scorer, mu: torch.Tensor, vectors: torch.Tensor,
                alphas: torch.Tensor) -> JobResult:
    """Decode mu + alpha_k v_k for every edit k and mu itself, score the edits with the judge.

    mu (B, D), vectors (K, D), alphas (K,) -> logits (K, B, 40), feature distance and PSNR (K, B)
    against the unedited reconstruction decode(mu).
    """
    B, D = mu.shape
    K = len(vectors)
    device = _device_of(model, judge)
    mu, vectors, alphas = mu.to(device), vectors.to(device), alphas.to(device)
    rec = model.decode(mu)  # (B, 3, S, S)
    _, rec_f = judge.score(rec)  # (B, F)
    z = mu[None] + alphas[:, None, None] * vectors[:, None, :]  # (K, B, D)
    x = model.decode(z.reshape(K * B, D))  # (K*B, 3, S, S)
    logits, feats = judge.score(x)  # (K*B, 40), (K*B, F)
    feats = feats.reshape(K, B, -1)
    return JobResult(
        logits=logits.reshape(K, B, -1).float().cpu().numpy(),
        feature_distance=(feats - rec_f[None]).norm(dim=2).float().cpu().numpy(),
        psnr=psnr(x, rec.repeat(K, 1, 1, 1)).reshape(K, B).float().cpu().numpy(),
    )


def _device_of(*modules: Any) -> torch.device:
    """The device of the first module that has parameters or buffers (CPU otherwise)."""
    for m in modules:
        if isinstance(m, torch.nn.Module):
            for t in itertools.chain(m.parameters(), m.buffers()):
                return t.device
    return torch.device("cpu")


def run_job(job: Job, model: LatentModel, judge: Scorer, mu: np.ndarray,
            vectors: dict[tuple[str, str], np.ndarray]) -> JobResult:
    """Score one job: mu is the face table's (N, D) codes of this latent model."""
    V = torch.from_numpy(np.stack([vectors[(job.attr, m)] for m, _ in job.edits])).float()  # (K, D)
    alphas = torch.tensor([a for _, a in job.edits], dtype=torch.float32)  # (K,)
    batch = torch.from_numpy(mu[list(job.slots)]).float()  # (B, D)
    return score_edits(model, judge, batch, V, alphas)


def make_jobs(latent: str, faces: dict[tuple[str, bool], np.ndarray], methods: Sequence[str],
              strengths: Sequence[float], batch_size: int) -> list[Job]:
    """Jobs for one latent model; faces maps (attr, positive) to slots of the face table."""
    jobs = []
    for (attr, positive), slots in faces.items():
        edits = tuple((m, float(s)) for m in methods for s in strengths if (s > 0) == positive)
        if not edits or len(slots) == 0:
            continue
        for i in range(0, len(slots), batch_size):
            jobs.append(Job(latent, attr, positive, tuple(int(s) for s in slots[i:i + batch_size]), edits))
    return jobs


# ---------------------------------------------------------------------------- the face table

@dataclass
class Base:
    """What is scored once per face: the original image and, per latent model, its reconstruction.

    rows (N,) cache rows; labels (N, 40); orig_logits (N, 40); mu[latent] (N, D);
    rec_logits[latent] (N, 40); rec_features[latent] (N, F).
    """

    rows: np.ndarray
    labels: np.ndarray
    orig_logits: np.ndarray
    mu: dict[str, np.ndarray] = field(default_factory=dict)
    rec_logits: dict[str, np.ndarray] = field(default_factory=dict)
    rec_features: dict[str, np.ndarray] = field(default_factory=dict)


@torch.no_grad()
def score_images(judge: Scorer, images: Callable[[np.ndarray], torch.Tensor], n: int,
                 batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Judge logits (n, 40) and features (n, F) of images(index batch) -> (B, 3, S, S)."""
    logits, feats = [], []
    device = _device_of(judge)
    for i in range(0, n, batch_size):
        lo, f = judge.score(images(np.arange(i, min(n, i + batch_size))).to(device))
        logits.append(lo.float().cpu().numpy())
        feats.append(f.float().cpu().numpy())
    return np.concatenate(logits), np.concatenate(feats)


@torch.no_grad()
def encode_and_reconstruct(model: LatentModel, judge: Scorer, x_of: Callable[[np.ndarray], torch.Tensor],
                           n: int, batch_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """mu (n, D), reconstruction logits (n, 40) and features (n, F) of a latent model."""
    mus, logits, feats = [], [], []
    device = _device_of(model, judge)
    for i in range(0, n, batch_size):
        mu, _ = model.encode(x_of(np.arange(i, min(n, i + batch_size))).to(device))
        lo, f = judge.score(model.decode(mu))
        mus.append(mu.float().cpu().numpy())
        logits.append(lo.float().cpu().numpy())
        feats.append(f.float().cpu().numpy())
    return np.concatenate(mus), np.concatenate(logits), np.concatenate(feats)


# ---------------------------------------------------------------------------- the numbers

@dataclass(frozen=True)
class EditScores:
    """What the judge said about one (attribute, method, alpha) edit of B faces."""

    edited: np.ndarray  # (B, 40) judge logits of the edited reconstructions
    rec: np.ndarray  # (B, 40) of the unedited reconstructions (alpha = 0)
    orig: np.ndarray  # (B, 40) of the original images
    feature_distance: np.ndarray  # (B,) ||f(edit) - f(rec)|| in the judge's penultimate features
    psnr: np.ndarray  # (B,) dB, edit vs rec
    labels: np.ndarray  # (B, 40) the faces' dataset labels


@dataclass(frozen=True)
class EditStats:
    """Efficacy, leakage and identity of one (attribute, method, alpha) over its faces. Arrays are
    (40,), one value per attribute b in ATTRIBUTES order, in units of b's logit sd."""

    faces: int
    p_before: float  # mean P(a) of the unedited reconstructions
    p_after: float  # mean P(a) of the edits
    efficacy: float  # change in P(a); negative for -alpha
    efficacy_vs_original: float
    flip: float  # fraction judged not-target before, target after
    target_sd: float  # the target's own logit change
    leakage: np.ndarray  # signed mean change of every b; leakage[k] is the target's own change
    leakage_se: np.ndarray  # its standard error (sd of the change / sqrt(faces))
    leakage_within: np.ndarray  # >= 0: |mean change| within the faces with b and without
    ad: np.ndarray  # mean |change| (Wu et al.'s Attribute Dependency per b)
    leakage_vs_original: np.ndarray
    leak_mean: float  # mean |leakage| over the judgeable others
    leak_max: float
    leak_max_attribute: str | None
    leak_mean_within: float
    leak_mean_vs_original: float
    identity_feature: float  # feature distance over the median distance between two faces
    identity_feature_raw: float
    psnr: float

    PER_ATTRIBUTE: ClassVar[tuple[str, ...]] = ("leakage", "leakage_se", "leakage_within", "ad",
                                                "leakage_vs_original")


def edit_stats(attr: str, alpha: float, scores: EditScores, *, sd: np.ndarray,
               can_judge: np.ndarray, feature_scale: float) -> EditStats:
    """Efficacy, leakage and identity of one (attribute, method, alpha) over its faces.

    sd (40,) the logit standard deviations over the originals (the unit of leakage); can_judge (40,)
    bool; feature_scale: the median feature distance between two faces' reconstructions.
    """
    from scipy.special import expit as sigmoid  # no overflow for large |x|

    edited, rec, orig = scores.edited, scores.rec, scores.orig
    k = attribute_index(attr)
    target = alpha > 0
    p_edit, p_rec, p_orig = sigmoid(edited[:, k]), sigmoid(rec[:, k]), sigmoid(orig[:, k])
    hit_edit, hit_rec = (edited[:, k] > 0) == target, (rec[:, k] > 0) == target
    delta = (edited - rec) / sd  # (B, 40) logit change in sd units
    delta_orig = (edited - orig) / sd
    leak = delta.mean(axis=0)  # (40,) signed mean: the systematic shift of every b
    # its standard error over these faces: how far a leakage may be from 0 by chance alone
    leak_se = delta.std(axis=0, ddof=1) / math.sqrt(len(delta)) if len(delta) > 1 else np.full(len(leak), np.nan)
    within = leakage_within(delta, scores.labels)
    others = np.array([b != k and can_judge[b] for b in range(len(ATTRIBUTES))])
    summary = _over_others(leak, others)
    return EditStats(
        faces=int(len(edited)),
        p_before=float(p_rec.mean()),
        p_after=float(p_edit.mean()),
        efficacy=float((p_edit - p_rec).mean()),
        efficacy_vs_original=float((p_edit - p_orig).mean()),
        flip=float((hit_edit & ~hit_rec).mean()),
        target_sd=float(delta[:, k].mean()),
        leakage=leak,
        leakage_se=leak_se,
        leakage_within=within,
        ad=np.abs(delta).mean(axis=0),
        leakage_vs_original=delta_orig.mean(axis=0),
        leak_mean=summary["mean"],
        leak_max=summary["max"],
        leak_max_attribute=summary["argmax"],
        leak_mean_within=_over_others(within, others)["mean"],
        leak_mean_vs_original=_over_others(delta_orig.mean(axis=0), others)["mean"],
        identity_feature=float(scores.feature_distance.mean() / feature_scale),
        identity_feature_raw=float(scores.feature_distance.mean()),
        psnr=float(scores.psnr.mean()),
    )


def leakage_within(delta: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per attribute b, the size of the shift in b within the faces' own b-groups: |mean change|
    among the faces labelled b and among those labelled not-b, weighted by group size. (B, 40),
    (B, 40) -> (40,). An edit that lowers b on the faces with b and raises it on those without
    leaks, but its signed mean over all faces can cancel to 0; this cannot."""
    has = np.asarray(labels) > 0
    out = np.zeros(delta.shape[1])
    for group in (has, ~has):
        out += np.abs(np.where(group, delta, 0.0).sum(axis=0))  # = group size x |group mean|
    return out / max(len(delta), 1)


def _over_others(leak: np.ndarray, others: np.ndarray) -> dict[str, Any]:
    """Mean and max of |leak| over the attributes in `others` (judgeable, not the target)."""
    if not others.any():
        return {"mean": float("nan"), "max": float("nan"), "argmax": None}
    mags = np.where(others, np.abs(leak), -np.inf)
    b = int(np.argmax(mags))
    return {"mean": float(np.abs(leak[others]).mean()), "max": float(mags[b]), "argmax": ATTRIBUTES[b]}


def logit_sd(logits: np.ndarray) -> np.ndarray:
    """Standard deviation of every logit column over faces, floored so a constant column cannot
    divide by zero. (N, 40) -> (40,)."""
    return np.maximum(np.asarray(logits, np.float64).std(axis=0), 1e-6)


def median_pair_distance(features: np.ndarray, seed: int = 0, pairs: int = 2000) -> float:
    """Median L2 distance between the features of two different faces (seeded random pairs)."""
    n = len(features)
    if n < 2:
        return 1.0
    rng = np.random.default_rng(seed)
    i = rng.integers(0, n, pairs)
    j = (i + rng.integers(1, n, pairs)) % n  # j != i
    d = np.linalg.norm(features[i] - features[j], axis=1)
    return float(max(np.median(d), 1e-6))


EditKey = tuple[str, str, str, float]  # (latent, attribute, method, alpha)


def aggregate(jobs: Sequence[Job], results: Sequence[JobResult], base: Base, sd: np.ndarray,
              can_judge: np.ndarray, feature_scale: dict[str, float]) -> dict[EditKey, EditStats]:
    """Gather job results per (latent, attr, method, alpha) and compute `edit_stats` for each."""
    parts: dict[EditKey, list[tuple[tuple[int, ...], JobResult, int]]] = {}
    for job, res in zip(jobs, results):
        for e, (method, alpha) in enumerate(job.edits):
            parts.setdefault((job.latent, job.attr, method, alpha), []).append((job.slots, res, e))
    out = {}
    for key in sorted(parts, key=_key_order):
        latent, attr, method, alpha = key
        slots = np.concatenate([np.asarray(job_slots) for job_slots, _, _ in parts[key]])
        scores = EditScores(
            edited=np.concatenate([res.logits[e] for _, res, e in parts[key]]),
            rec=base.rec_logits[latent][slots], orig=base.orig_logits[slots],
            feature_distance=np.concatenate([res.feature_distance[e] for _, res, e in parts[key]]),
            psnr=np.concatenate([res.psnr[e] for _, res, e in parts[key]]), labels=base.labels[slots])
        out[key] = edit_stats(attr, alpha, scores, sd=sd, can_judge=can_judge,
                              feature_scale=feature_scale[latent])
    return out


def _key_order(key: tuple) -> tuple:
    latent, attr, method, alpha = key
    return (latent, attribute_index(attr), METHODS.index(method), alpha)


def run_jobs_local(jobs: Sequence[Job], models: dict[str, LatentModel], judge: Scorer,
                   base: Base, vectors: dict[str, dict[tuple[str, str], np.ndarray]],
                   progress: bool = True) -> list[JobResult]:
    """Run the jobs in this process, in order, with a progress bar."""
    from tqdm import tqdm

    return [run_job(job, models[job.latent], judge, base.mu[job.latent], vectors[job.latent])
            for job in tqdm(jobs, desc="audit", unit="job", disable=not progress)]


# ---------------------------------------------------------------------------- the whole audit

Runner = Callable[[Sequence[Job], dict, Scorer, Base, dict], list[JobResult]]


@dataclass(frozen=True)
class Execution:
    """How the audit's edit-and-score jobs run; the numbers are the same either way."""

    runner: Runner | None = None  # None: in this process; workers/audit.py `ray_runner`: on Ray (CPU)
    device: str = "cpu"  # where the in-process path decodes and scores (the models are moved there)
    progress: bool = True  # progress bars


@dataclass
class Latent:
    """A latent model and its attribute bank (the VAE's, or the PCA baseline's built the same way)."""

    model: LatentModel
    bank: VectorSource


@dataclass(frozen=True)
class FaceSelection:
    """The audited held-out faces: the face table (sorted cache rows) and, per (attribute,
    positive), slots into it (positive: the faces without the attribute, edited by +alpha)."""

    rows: np.ndarray  # (N,) cache rows
    slots: dict[tuple[str, bool], np.ndarray]

    def counts(self, attr: str) -> dict[str, int]:
        """How many faces without and with `attr` were edited."""
        return {"without": len(self.slots[(attr, True)]), "with": len(self.slots[(attr, False)])}


@dataclass(frozen=True)
class JudgeScores:
    """What the audit knows of its judge (or committee)."""

    auc: np.ndarray  # (40,) held-out ROC AUC, NaN where unknown
    can_judge: np.ndarray  # (40,) bool: AUC >= min_auc
    min_auc: float
    members: int = 1  # judges in the committee


@dataclass(frozen=True)
class Reconstruction:
    """What encoding and decoding alone do to the judged attributes of the audited faces, (40,) each."""

    shift: np.ndarray  # mean logit shift reconstruction - original, in sd units
    auc_original: np.ndarray  # the judge's AUC on the originals
    auc_reconstruction: np.ndarray  # ... and on the reconstructions


@dataclass(frozen=True)
class LatentResult:
    """The audit of one latent model (the VAE, or the PCA baseline)."""

    feature_scale: float  # median judge-feature distance between two faces' reconstructions
    reconstruction: Reconstruction
    edits: dict[str, dict[str, dict[float, EditStats]]]  # attr -> method -> alpha -> stats

    def strengths(self, attr: str, method: str) -> dict[float, EditStats]:
        """alpha -> the stats of attr's `method` edit at alpha (empty where not audited)."""
        return self.edits.get(attr, {}).get(method, {})

    def edit(self, attr: str, method: str, alpha: float) -> EditStats | None:
        """The stats of one edit, None where it was not audited."""
        return self.strengths(attr, method).get(alpha)


@dataclass(frozen=True)
class DatasetBias:
    """The labels' bias, from labels alone."""

    split: str
    faces: int
    rates: np.ndarray  # (40,) attribute rates in the split
    rates_all: np.ndarray  # (40,) in the whole cache
    phi: np.ndarray  # (40, 40) phi between labels in the split, NaN where one never varies


@dataclass(frozen=True)
class AuditResult:
    """Every number of an audit (faceedit/report.py writes them)."""

    attributes: tuple[str, ...]
    settings: AuditConfig
    judge: JudgeScores
    logit_sd: np.ndarray  # (40,) over the originals: the unit of leakage
    faces: FaceSelection
    edited_images: int
    latents: dict[str, LatentResult]
    bias: DatasetBias
    bank_cells: dict[str, dict] = field(default_factory=dict)  # each vector's balancing record (bank.json)

    def headline(self, latent: str = "vae") -> dict[str, dict[str, EditStats]]:
        """{attr: {method: stats at the headline strength}} of one latent model."""
        alpha = self.settings.headline
        lat = self.latents.get(latent)
        edits = lat.edits if lat is not None else {}
        return {a: {m: by_alpha[alpha] for m, by_alpha in by_method.items() if alpha in by_alpha}
                for a, by_method in edits.items()}

    def can(self) -> dict[str, bool]:
        """attribute -> whether the judge may judge it."""
        return dict(zip(ATTRIBUTES, np.asarray(self.judge.can_judge).tolist()))


def select_faces(cache, attrs: Sequence[str], config: AuditConfig) -> FaceSelection:
    """The face table (sorted cache rows) and (attr, positive) -> slots into it."""
    rows = cache.indices(config.split)
    if len(rows) == 0:
        raise ValueError(f"{cache.root}: the {config.split!r} split is empty; the audit needs held-out faces")
    chosen = {(a, pos): choose_faces(cache.labels, rows, a, pos, config.faces, config.seed)
              for a in attrs for pos in (True, False)}
    table = np.unique(np.concatenate(list(chosen.values()))) if chosen else np.zeros(0, np.int64)
    return FaceSelection(table, {k: np.searchsorted(table, v) for k, v in chosen.items()})


def run_audit(cache, latents: dict[str, Latent], judge: Scorer, auc: np.ndarray, min_auc: float,
              config: AuditConfig = AuditConfig(), *,
              execution: Execution = Execution()) -> tuple[AuditResult, Base]:
    """Audit every (latent, attribute, method, strength) on the held-out faces of `cache`.

    auc (40,): the judge's held-out AUC; attributes under min_auc are marked and left out of the
    leakage summaries. Returns the numbers (faceedit/report.py writes them) and what was scored
    once per face (the codes the Figure-7 strips start from).
    """
    device, runner, progress = execution.device, execution.runner, execution.progress
    if device != "cpu":
        if runner is not None:
            raise ValueError(f"device={device!r}: the Ray runner scores on CPU; use one or the other")
        judge = judge.to(device)
        for lat in latents.values():
            lat.model.to(device)
    attrs = tuple(config.attributes) or ATTRIBUTES
    can_judge = np.array(judgeable(auc, min_auc))
    faces = select_faces(cache, attrs, config)
    base, sd, scale = score_base(cache, faces.rows, latents, judge, config)
    vectors, jobs = {}, []
    for name, lat in latents.items():
        vectors[name] = {(a, m): lat.bank.vector(a, m).detach().cpu().numpy().astype(np.float32)
                         for a in attrs for m in config.methods}
        jobs += make_jobs(name, faces.slots, config.methods, config.strengths, config.batch_size)
    models = {name: lat.model for name, lat in latents.items()}
    run = runner or (lambda j, m, s, b, v: run_jobs_local(j, m, s, b, v, progress=progress))
    results = run(jobs, models, judge, base, vectors)
    stats = aggregate(jobs, results, base, sd, can_judge, scale)
    latent_results = {
        name: LatentResult(scale[name], reconstruction_stats(base.orig_logits, base.rec_logits[name],
                                                             base.labels, sd),
                           stats_by_latent(stats, name))
        for name in latents}
    result = AuditResult(
        attributes=attrs, settings=config, judge=JudgeScores(auc, can_judge, min_auc), logit_sd=sd,
        faces=faces, edited_images=int(sum(len(j.slots) * len(j.edits) for j in jobs)),
        latents=latent_results, bias=dataset_bias(cache))
    return result, base


def score_base(cache, table: np.ndarray, latents: dict[str, Latent], judge: Scorer,
               config: AuditConfig) -> tuple[Base, np.ndarray, dict[str, float]]:
    """Score what is scored once per face: the originals, and per latent model the codes and the
    unedited reconstructions. Also the logit sds (40,) over the originals (the unit of leakage) and
    each latent's feature scale (median distance between two faces' reconstructions)."""
    from faceedit.cache import to_float

    def x_of(idx: np.ndarray) -> torch.Tensor:
        return to_float(cache.images[table[idx]])  # (B, 3, S, S)

    orig_logits, _ = score_images(judge, x_of, len(table), config.batch_size * 4)
    base = Base(table, cache.labels[table].astype(np.int8), orig_logits)
    scale = {}
    for name, lat in latents.items():
        mu, rec_logits, rec_feats = encode_and_reconstruct(lat.model, judge, x_of, len(table),
                                                           config.batch_size * 4)
        base.mu[name], base.rec_logits[name], base.rec_features[name] = mu, rec_logits, rec_feats
        scale[name] = median_pair_distance(rec_feats, config.seed)
    return base, logit_sd(orig_logits), scale


def stats_by_latent(stats: dict[EditKey, EditStats], latent: str) -> dict[str, dict[str, dict[float, EditStats]]]:
    """{attr: {method: {alpha: stats}}} of one latent model."""
    out: dict = {}
    for (lat, attr, method, alpha), s in stats.items():
        if lat == latent:
            out.setdefault(attr, {}).setdefault(method, {})[alpha] = s
    return out


def reconstruction_stats(orig: np.ndarray, rec: np.ndarray, labels: np.ndarray,
                         sd: np.ndarray) -> Reconstruction:
    """What reconstruction alone does to the judged attributes (no edit): per attribute the mean
    logit shift rec - original in sd units, and the judge's AUC on originals vs reconstructions."""
    from faceedit.metrics import auc_per_attribute

    return Reconstruction(shift=((rec - orig) / sd).mean(axis=0),
                          auc_original=auc_per_attribute(orig, labels),
                          auc_reconstruction=auc_per_attribute(rec, labels))


def dataset_bias(cache, split: str = "train") -> DatasetBias:
    """Per-attribute rates (the split and the whole cache) and the 40x40 phi matrix of the split."""
    rows = cache.indices(split)
    labels = cache.labels[rows] if len(rows) else cache.labels
    return DatasetBias(split, int(len(labels)), attribute_rates(labels), attribute_rates(cache.labels),
                       phi_matrix(labels))


def top_leaking(result: AuditResult, n: int, latent: str = "vae", method: str = "naive") -> list[str]:
    """The n judgeable attributes whose `method` edit (at the headline strength) leaks most (max over b)."""
    can = result.can()
    scored = []
    for attr, by_method in result.headline(latent).items():
        s = by_method.get(method)
        if s is not None and can[attr] and np.isfinite(s.leak_max):
            scored.append((-s.leak_max, attribute_index(attr), attr))
    return [a for _, _, a in sorted(scored)[:n]]


def strip_images(result: AuditResult, base: Base, latent: Latent, attrs: Sequence[str],
                 methods: Sequence[str], latent_name: str = "vae") -> dict[str, bytes]:
    """White's Figure 7 for each of `attrs`: one held-out face (the first chosen without the
    attribute) edited at -2..+2, one row per method. attr -> PNG bytes (no timestamps)."""
    import io

    from faceedit.edit import strip

    out = {}
    for attr in attrs:
        slots = result.faces.slots.get((attr, True))
        if slots is None or len(slots) == 0:
            continue
        z = torch.from_numpy(base.mu[latent_name][slots[0]]).float().to(_device_of(latent.model))  # (D,)
        image = strip(latent.model, z, latent.bank, attr, methods=tuple(methods))
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        out[attr] = buf.getvalue()
    return out


# ---------------------------------------------------------------------------- from folders

def default_attributes(cache) -> tuple[str, ...]:
    """All 40, or on a rendered set (its source folder holds faceedit.synth's synth.json) the
    attributes the renderer draws (faceedit.synth.RENDERED, as recorded there)."""
    import json
    from pathlib import Path

    record = Path(str(cache.manifest.get("source", ""))) / "synth.json"
    if record.is_file():
        try:
            rendered = json.loads(record.read_text()).get("rendered")
        except ValueError:
            rendered = None
        if rendered:
            return tuple(a for a in ATTRIBUTES if a in rendered)
    return ATTRIBUTES


def pca_latent(cache, vae_bank, latent_dim: int, seed: int = 0, progress: bool = True) -> Latent:
    """The PCA baseline of the same D (faceedit/pca.py) fitted on the train split, with its own
    bank built exactly as the VAE's (the same BankConfig settings, faceedit/bank.py)."""
    from faceedit.bank import BankConfig, build_bank
    from faceedit.config import config_from_dict
    from faceedit.pca import fit_pca

    pca = fit_pca(cache, latent_dim=latent_dim, split="train", seed=seed)
    settings = config_from_dict(BankConfig, getattr(vae_bank, "info", {}).get("settings") or {},
                                "the VAE bank's settings", strict=False)
    bank = build_bank(pca, cache, settings, bundle_hash="pca", progress=progress)
    return Latent(pca.eval(), bank)


def bank_cells(bank, attrs: Sequence[str]) -> dict[str, dict]:
    """The balancing record of every audited vector from bank.json: confounders, cells (counts,
    replication factors, capped), Kish ESS, tiny-cell warnings."""
    per = (getattr(bank, "info", {}) or {}).get("per_attribute", {})
    keep = ("confounders", "cells", "ess", "capped", "dropped_cells", "tiny_cells")
    return {a: {k: per[a][k] for k in keep if k in per[a]} for a in attrs if a in per}


@dataclass
class AuditInputs:
    """Everything `faceedit audit` reads, loaded, with what the report records of it."""

    cache: Any  # faceedit.cache.Cache
    latents: dict[str, Latent]
    judge: Any  # faceedit.judge.LoadedJudge (one judge or a committee)
    bank: Any  # the VAE's AttributeBank
    record: dict[str, str]  # input names and hashes for report.json
    codemap: Any = None  # faceedit.codemap.MapFigure: the VAE's map of the codes, when its log has one


def load_inputs(bundle: str, bank: str, cache: str, judge: str | Sequence[str], config: AuditConfig, *,
                pca_bundle: str | None = None, pca_bank: str | None = None,
                progress: bool = True, allow_bank_mismatch: bool = False) -> AuditInputs:
    """Open and cross-check the inputs. Several judge folders make a committee (the mean of their
    logits, faceedit.judge.Committee). With config.pca, the PCA baseline comes from pca_bundle and
    pca_bank when given (a bundle of kind "pca" and a bank built on it), else it is fitted here."""
    from pathlib import Path

    from faceedit.bank import AttributeBank, check_built_from
    from faceedit.bundle import load_bundle
    from faceedit.cache import Cache
    from faceedit.codemap import read_bundle_map
    from faceedit.files import sha256_file
    from faceedit.judge import load_committee

    judges = [judge] if isinstance(judge, (str, Path)) else list(judge)
    c, vae, bk = Cache.open(cache), load_bundle(bundle), AttributeBank.load(bank)
    check_built_from(bk, vae.model, bundle, allow=allow_bank_mismatch)
    jd = load_committee(judges, c)
    D = vae.config.latent_dim
    if bk.dim != D:
        raise ValueError(f"{bank}: vectors of dimension {bk.dim}, but the bundle {bundle} has latent_dim {D}")
    for name, size in (("bundle", vae.config.image_size), ("judge", jd.model.config.image_size)):
        if size != c.size:
            raise ValueError(f"{cache}: images are {c.size}x{c.size}, the {name} expects {size}x{size}")
    record = {
        "bundle": Path(bundle).name, "bundle_weights_sha256": vae.meta["weights"]["sha256"],
        "bank": Path(bank).name, "bank_json_sha256": sha256_file(Path(bank) / "bank.json"),
        "bank_vectors_sha256": sha256_file(Path(bank) / "vectors.safetensors"),
        "cache": Path(cache).name, "cache_content_hash": c.hash,
        "judge": ",".join(Path(j).name for j in judges),
        "judge_weights_sha256": jd.meta["weights"]["sha256"],
    }
    latents = {"vae": Latent(vae.model, bk)}
    if config.pca and (pca_bundle is None) != (pca_bank is None):
        raise ValueError("give both --pca-bundle and --pca-bank, or neither (then PCA is fitted here)")
    if config.pca and pca_bundle is not None:
        pb, pk = load_bundle(pca_bundle), AttributeBank.load(pca_bank)
        if pb.kind != "pca" or pb.config.latent_dim != D or pk.dim != D:
            raise ValueError(f"{pca_bundle}, {pca_bank}: expected a PCA bundle and bank of D={D}, got "
                             f"kind {pb.kind!r}, D={getattr(pb.config, 'latent_dim', None)}, bank D={pk.dim}")
        check_built_from(pk, pb.model, pca_bundle, allow=allow_bank_mismatch)
        latents["pca"] = Latent(pb.model, pk)
        record.update(pca_bundle_weights_sha256=pb.meta["weights"]["sha256"],
                      pca_bank_vectors_sha256=sha256_file(Path(pca_bank) / "vectors.safetensors"))
    elif config.pca:
        latents["pca"] = pca_latent(c, bk, D, config.seed, progress)
        record["pca"] = f"fitted on the {c.root.name} train split, D={D}, seed {config.seed}"
    return AuditInputs(c, latents, jd, bk, record, read_bundle_map(vae.meta))


def compute(inputs: AuditInputs, config: AuditConfig,
            execution: Execution = Execution()) -> tuple[AuditResult, dict[str, bytes]]:
    """The audit's numbers and its Figure-7 strips (attr -> PNG bytes), ready for write_report."""
    import dataclasses

    if not config.attributes:
        config = dataclasses.replace(config, attributes=default_attributes(inputs.cache))
    j = inputs.judge
    result, base = run_audit(inputs.cache, inputs.latents, j.model, j.auc, j.min_auc, config,
                             execution=execution)
    result = dataclasses.replace(
        result, judge=dataclasses.replace(result.judge, members=max(len(j.members), 1)),
        bank_cells=bank_cells(inputs.bank, result.attributes))
    methods = [m for m in ("naive", "balanced") if m in config.methods] or list(config.methods)[:2]
    tops = top_leaking(result, config.strips, "vae", methods[0])
    strips = strip_images(result, base, inputs.latents["vae"], tops, config.methods)
    return result, strips


@dataclass(frozen=True)
class AuditRun:
    """What `audit_folders` did: the numbers (written to the report) and how long scoring took
    (not written, so the report regenerates byte for byte)."""

    result: AuditResult
    seconds: float  # loading and the PCA fit excluded
    faces_per_s: float  # edited faces scored per second


def audit_folders(bundle: str, bank: str, cache: str, judge: str | Sequence[str], out: str,
                  config: AuditConfig = AuditConfig(), *, execution: Execution = Execution(),
                  pca_bundle: str | None = None, pca_bank: str | None = None,
                  allow_bank_mismatch: bool = False) -> AuditRun:
    """`faceedit audit`: load the inputs, audit, write the report folder at `out`."""
    import time

    from faceedit.report import write_report

    inputs = load_inputs(bundle, bank, cache, judge, config, pca_bundle=pca_bundle, pca_bank=pca_bank,
                         progress=execution.progress, allow_bank_mismatch=allow_bank_mismatch)
    start = time.perf_counter()
    result, strips = compute(inputs, config, execution)
    seconds = time.perf_counter() - start
    write_report(out, result, inputs.record, strips, codemap=inputs.codemap)
    return AuditRun(result, seconds, result.edited_images / max(seconds, 1e-9))
