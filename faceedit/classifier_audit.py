"""Audit someone else's classifier with counterfactual faces: does its answer change when only the
person's gender (or age, hair, makeup...) changes?

Image counterfactual sensitivity analysis (Denton, Hutchinson, Mitchell, Gebru and Zaldivar 2019,
"Image counterfactual sensitivity analysis for detecting unintended bias"): held-out faces are moved
along a generative model's latent attribute directions and the classifier's output is re-read. Here
the directions are faceedit's attribute vectors, balanced against the dataset's own correlations by
default (White 2016, Figure 7: a naive Male vector also removes smiles, and would blame a smile
detector for responding to the smile), and every counterfactual is checked by the judge
(faceedit/judge.py), an image classifier independent of both the VAE and the audited model:

- a counterfactual the judge does not see gain (or lose) the attribute a it was edited for is left
  out ("did not change a");
- one whose audited attribute t (the CelebA attribute the classifier's output decides, e.g.
  Smiling for a smile detector) the judge sees change, by a decision flip or more than
  `target_tolerance` of t's logit sd, is left out ("changed t"), so a classifier is never blamed
  for an edit that changed what it is meant to see.

For each attribute a, method and strength s: faces without a are edited by +s, faces with a by -s;
the classifier's score is compared with its score on the unedited reconstruction (so the VAE's blur
is not counted). Figures are oriented as "the face gains a": a remove-side change counts negated.

- change: mean change of the classifier's P(output), with its standard error over the faces kept;
- flip rate: the fraction of kept counterfactuals whose decision (P > 0.5) changed, with its s.e.;
- both by group (faces labelled g and not g, for each g in `groups`), and unfiltered beside it;
- the real-data view: the classifier's error rates among labelled val faces with and without each
  attribute (what a correlational audit sees), when t is known.

`run_classifier_audit` works on loaded objects (no Ray, no files); `audit_classifier_folders` opens
the folders and writes the report (faceedit/classifier_report.py).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np
import torch

from faceedit.attributes import ATTRIBUTES, attribute_index
from faceedit.audit import LatentModel, Scorer, VectorSource, choose_faces, logit_sd
from faceedit.classifier import probability


@dataclass(frozen=True)
class ClassifierAuditConfig:
    attributes: tuple[str, ...] = field(default=(), metadata={"help": "attributes whose vectors move "
                                        "the faces (none given: all 40)"})
    methods: tuple[str, ...] = field(default=("balanced",), metadata={"help": "vector methods (the "
                                     "first ranks the attributes; e.g. balanced naive to compare)"})
    strengths: tuple[float, ...] = field(default=(0.5, 1.0, 1.5, 2.0), metadata={"help": "edit "
                                         "strengths s > 0 in units of the vector's length: faces "
                                         "without the attribute get +s, faces with it -s"})
    headline: float = field(default=2.0, metadata={"help": "the strength the ranking uses"})
    faces: int = field(default=64, metadata={"help": "held-out faces per attribute and side"})
    split: str = field(default="val", metadata={"help": "cache split of the faces (edited and, for "
                       "the real-data error rates, scored as they are)"})
    groups: tuple[str, ...] = field(default=("Male", "Young"), metadata={"help": "attributes whose "
                                    "labels split the faces into groups for the by-group figures"})
    target: str = field(default="", metadata={"help": "the CelebA attribute the audited output "
                        "decides (e.g. Smiling for a smile detector): counterfactuals the judge sees "
                        "change it are left out, and the real-data error rates use its labels (empty: "
                        "the output's name when it is an attribute, else none)"})
    target_tolerance: float = field(default=0.25, metadata={"help": "a counterfactual whose judged "
                                    "target logit moves by more than this many sd (or whose judged "
                                    "target decision flips) changed the target and is left out "
                                    "(BENCHMARKS.md, Classifier audit: why not 0.5)"})
    batch_size: int = field(default=64, metadata={"help": "faces decoded and scored per batch"})
    seed: int = field(default=0, metadata={"help": "seed of the choice of faces"})
    min_kept: int = field(default=20, metadata={"help": "rank only attributes with at least this "
                          "many counterfactuals the judge kept (the others are listed apart)"})
    strips: int = field(default=3, metadata={"help": "strips of flipped counterfactuals for this many "
                        "of the top-ranked attributes"})
    strip_faces: int = field(default=4, metadata={"help": "faces per strip"})

    def __post_init__(self) -> None:
        for a in (*self.attributes, *self.groups, *((self.target,) if self.target else ())):
            attribute_index(a)
        if not self.methods:
            raise ValueError("ClassifierAuditConfig.methods: expected at least one method")
        if not self.strengths or any(not (s > 0 and math.isfinite(s)) for s in self.strengths):
            raise ValueError(f"ClassifierAuditConfig.strengths={self.strengths}: expected positive "
                             "finite numbers (the side of the face decides the sign)")
        if self.headline not in self.strengths:
            raise ValueError(f"ClassifierAuditConfig.headline={self.headline} is not one of "
                             f"strengths {self.strengths}")
        if self.faces < 1 or self.batch_size < 1:
            raise ValueError(f"ClassifierAuditConfig: faces={self.faces}, batch_size="
                             f"{self.batch_size}: expected >= 1")
        if not self.target_tolerance > 0:
            raise ValueError(f"ClassifierAuditConfig.target_tolerance={self.target_tolerance}: expected > 0")

    def to_dict(self) -> dict:
        return asdict(self)


class Scores(Protocol):
    """The audited classifier: scores(x (B, 3, S, S) in [0, 1]) -> (B,) logits (faceedit/classifier.py)."""

    def scores(self, x: torch.Tensor) -> np.ndarray: ...


# ---------------------------------------------------------------------------- typed results

@dataclass(frozen=True)
class Effect:
    """The classifier's response over a set of counterfactuals, oriented as "the face gains a".

    change: mean change of P(output) (a remove-side change negated); flip: fraction of decisions
    that changed; logit_change: mean change of the logit, oriented likewise; *_se: standard errors.
    """

    n: int
    change: float
    change_se: float
    flip: float
    flip_se: float
    logit_change: float

    @staticmethod
    def of(dp: np.ndarray, flips: np.ndarray, dlogit: np.ndarray) -> "Effect":
        n = len(dp)
        if n == 0:
            return Effect(0, math.nan, math.nan, math.nan, math.nan, math.nan)
        se = float(dp.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
        f = float(flips.mean())
        return Effect(n, float(dp.mean()), se, f, math.sqrt(f * (1 - f) / n) if n > 1 else math.nan,
                      float(dlogit.mean()))


@dataclass(frozen=True)
class GroupEffect:
    group: str  # the attribute whose label splits the faces
    value: bool  # faces labelled with it (True) or without
    effect: Effect


@dataclass(frozen=True)
class Sensitivity:
    """One attribute, method and strength: what the classifier does, over the counterfactuals the
    judge kept, and how many it left out and why."""

    attribute: str
    method: str
    strength: float
    made: int  # counterfactuals made (both sides)
    no_change: int  # left out: the judge did not see the attribute change
    target_changed: int  # left out: the judge saw the audited attribute change
    checked: bool  # the judge can judge the attribute (else nothing is left out for "no change")
    kept: Effect  # what the ranking reads
    unfiltered: Effect  # every counterfactual, the judge's checks ignored
    gain: Effect  # kept, faces without a edited +s
    loss: Effect  # kept, faces with a edited -s (change oriented as gaining a: negated)
    groups: tuple[GroupEffect, ...]
    target_residual: float  # mean judged change of the target's logit (sd) among those kept


@dataclass(frozen=True)
class RealGroup:
    """The classifier's decisions on real labelled faces with (value True) or without an attribute."""

    attribute: str
    value: bool
    n: int
    error: float
    error_se: float
    false_positive: float  # among faces whose target label is 0
    false_negative: float  # among faces whose target label is 1
    positive_rate: float  # its decision "yes", whatever the label


@dataclass(frozen=True)
class RealData:
    split: str
    faces: int
    target: str | None
    error: float | None  # overall (None without a target)
    positive_rate: float
    groups: tuple[RealGroup, ...]

    def group(self, attribute: str, value: bool) -> RealGroup:
        return next(g for g in self.groups if g.attribute == attribute and g.value == value)

    def error_gap(self, attribute: str) -> tuple[float, float]:
        """Error rate with the attribute minus without, and its standard error."""
        a, b = self.group(attribute, True), self.group(attribute, False)
        return a.error - b.error, math.sqrt(a.error_se**2 + b.error_se**2)


@dataclass(frozen=True)
class Reconstruction:
    """How the classifier reads the VAE's reconstructions (the counterfactuals' baseline) against
    the original photos of the same faces."""

    faces: int
    agreement: float  # fraction of faces with the same decision on both
    p_original: float  # mean P(output) on the originals
    p_reconstruction: float


@dataclass(frozen=True)
class Flip:
    """A counterfactual the judge kept whose decision flipped (for the strips)."""

    attribute: str
    method: str
    strength: float  # signed
    row: int  # cache row
    p_before: float  # on the reconstruction
    p_after: float


@dataclass(frozen=True)
class RankEntry:
    rank: int
    attribute: str
    sensitivity: Sensitivity  # at the headline strength, first method
    real_error_gap: float | None
    real_error_gap_se: float | None


@dataclass
class ClassifierAuditResult:
    config: ClassifierAuditConfig
    classifier: dict  # what the report records of the classifier (Classifier.describe())
    output: str
    target: str | None
    judge_checks: bool  # a judge checked the counterfactuals
    judge_auc: dict[str, float]  # per attribute (empty without a judge)
    judge_min_auc: float | None
    faces: int  # held-out faces in the table (edited, each for several attributes)
    sensitivities: tuple[Sensitivity, ...]
    ranking: tuple[RankEntry, ...]  # most to least sensitive, the target left out
    own: Sensitivity | None  # the target's own edit (a classifier of t should respond to it)
    reconstruction: Reconstruction
    real: RealData
    flips: tuple[Flip, ...]
    inputs: dict[str, str] = field(default_factory=dict)  # input names and hashes

    def sensitivity(self, attribute: str, method: str | None = None, strength: float | None = None) -> Sensitivity:
        method = method or self.config.methods[0]
        strength = self.config.headline if strength is None else strength
        for s in self.sensitivities:
            if s.attribute == attribute and s.method == method and s.strength == strength:
                return s
        raise KeyError(f"no sensitivity for {attribute}, {method}, {strength}")

    def rank_of(self, attribute: str) -> int | None:
        return next((e.rank for e in self.ranking if e.attribute == attribute), None)


# ---------------------------------------------------------------------------- scoring

@dataclass
class _Base:
    """Scored once per face of the table: rows (N,), labels (N, 40), mu (N, D), the classifier's
    logits on originals and reconstructions (N,), the judge's logits on reconstructions (N, 40)."""

    rows: np.ndarray
    labels: np.ndarray
    mu: np.ndarray
    clf_orig: np.ndarray
    clf_rec: np.ndarray
    judge_rec: np.ndarray | None
    judge_sd: np.ndarray | None


def _device(model) -> torch.device:
    for t in getattr(model, "parameters", lambda: iter(()))():
        return t.device
    return torch.device("cpu")


@torch.no_grad()
def _score_base(cache, table: np.ndarray, model: LatentModel, classifier: Scores, judge: Scorer | None,
                batch: int) -> _Base:
    from faceedit.cache import to_float

    dev = _device(model)
    mus, c_o, c_r, j_o, j_r = [], [], [], [], []
    for i in range(0, len(table), batch):
        x = to_float(cache.images[table[i:i + batch]])  # (B, 3, S, S)
        mu, _ = model.encode(x.to(dev))
        rec = model.decode(mu).float().cpu()
        mus.append(mu.float().cpu().numpy())
        c_o.append(classifier.scores(x))
        c_r.append(classifier.scores(rec))
        if judge is not None:
            j_o.append(judge.score(x.to(_device(judge)))[0].float().cpu().numpy())
            j_r.append(judge.score(rec.to(_device(judge)))[0].float().cpu().numpy())
    jr = np.concatenate(j_r) if judge is not None else None
    sd = logit_sd(np.concatenate(j_o)) if judge is not None else None
    return _Base(table, cache.labels[table].astype(np.int8), np.concatenate(mus), np.concatenate(c_o),
                 np.concatenate(c_r), jr, sd)


@torch.no_grad()
def _edit_and_score(model: LatentModel, classifier: Scores, judge: Scorer | None, mu: np.ndarray,
                    vectors: np.ndarray, alphas: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Decode mu + alpha_k v_k for every edit k; the classifier's logits (K, B) and the judge's
    logits (K, B, 40). mu (B, D), vectors (K, D), alphas (K,)."""
    dev = _device(model)
    B, D = mu.shape
    K = len(vectors)
    z = torch.from_numpy(mu).float()[None] + torch.from_numpy(alphas).float()[:, None, None] * \
        torch.from_numpy(vectors).float()[:, None, :]  # (K, B, D)
    x = model.decode(z.reshape(K * B, D).to(dev)).float().cpu()  # (K*B, 3, S, S)
    clf = classifier.scores(x).reshape(K, B)
    jd = judge.score(x.to(_device(judge)))[0].float().cpu().numpy().reshape(K, B, -1) if judge is not None else None
    return clf, jd


# ---------------------------------------------------------------------------- the figures

def _effects(attr: str, method: str, strength: float, parts: list[tuple[bool, np.ndarray, np.ndarray,
             np.ndarray | None]], base: _Base, can_judge: np.ndarray | None, target: str | None,
             config: ClassifierAuditConfig) -> tuple[Sensitivity, list[Flip]]:
    """parts: (gain side?, slots (B,), classifier logits (B,), judge logits (B, 40) or None)."""
    k = attribute_index(attr)
    t = attribute_index(target) if target else None
    sign, dp, dl, flip, keep_a, keep_t, slots_all, resid, p0, p1 = ([] for _ in range(10))
    for gain, slots, clf, jd in parts:
        s = 1.0 if gain else -1.0
        before, after = base.clf_rec[slots], clf
        pb, pa = probability(before), probability(after)
        sign.append(np.full(len(slots), gain))
        dp.append(s * (pa - pb))
        dl.append(s * (after - before))
        flip.append((before > 0) != (after > 0))
        slots_all.append(slots)
        p0.append(pb)
        p1.append(pa)
        n = len(slots)
        if jd is not None and can_judge is not None:
            jr = base.judge_rec[slots]
            if can_judge[k]:  # the judge sees a after the edit, and a moved that way
                moved = s * (jd[:, k] - jr[:, k]) > 0
                keep_a.append(((jd[:, k] > 0) == gain) & moved)
            else:
                keep_a.append(np.ones(n, bool))
            if t is not None and t != k and can_judge[t]:
                dt = (jd[:, t] - jr[:, t]) / base.judge_sd[t]
                changed = (np.abs(dt) > config.target_tolerance) | ((jd[:, t] > 0) != (jr[:, t] > 0))
                keep_t.append(~changed)
                resid.append(dt)
            else:
                keep_t.append(np.ones(n, bool))
                resid.append(np.full(n, np.nan))
        else:
            keep_a.append(np.ones(n, bool))
            keep_t.append(np.ones(n, bool))
            resid.append(np.full(n, np.nan))
    cat = np.concatenate
    gain_side, dp, dl, flip = cat(sign), cat(dp), cat(dl), cat(flip)
    ka, kt, slots, resid, p0, p1 = cat(keep_a), cat(keep_t), cat(slots_all), cat(resid), cat(p0), cat(p1)
    kept = ka & kt
    groups = []
    for g in config.groups:
        has = base.labels[slots, attribute_index(g)] > 0
        for value in (True, False):
            m = kept & (has == value)
            groups.append(GroupEffect(g, value, Effect.of(dp[m], flip[m], dl[m])))
    checked = bool(can_judge is not None and can_judge[k])
    sens = Sensitivity(
        attribute=attr, method=method, strength=float(strength), made=int(len(dp)),
        no_change=int((~ka).sum()), target_changed=int((ka & ~kt).sum()), checked=checked,
        kept=Effect.of(dp[kept], flip[kept], dl[kept]), unfiltered=Effect.of(dp, flip, dl),
        gain=Effect.of(dp[kept & gain_side], flip[kept & gain_side], dl[kept & gain_side]),
        loss=Effect.of(dp[kept & ~gain_side], flip[kept & ~gain_side], dl[kept & ~gain_side]),
        groups=tuple(groups),
        target_residual=float(np.nanmean(resid[kept])) if kept.any() and np.isfinite(resid[kept]).any() else math.nan)
    flips = [Flip(attr, method, float(strength if g else -strength), int(base.rows[s]), float(a), float(b))
             for g, s, a, b, f, kk in zip(gain_side, slots, p0, p1, flip, kept) if f and kk]
    return sens, flips


def real_data(cache, classifier: Scores, target: str | None, split: str, batch: int) -> RealData:
    """The classifier on the labelled faces of `split` as they are: its error rates (when the
    target is known) and its rate of "yes" among faces with and without each attribute."""
    from faceedit.cache import to_float

    rows = cache.indices(split)
    logits = np.concatenate([classifier.scores(to_float(cache.images[rows[i:i + batch]]))
                             for i in range(0, len(rows), batch)]) if len(rows) else np.zeros(0)
    yes = logits > 0
    labels = cache.labels[rows] > 0
    y = labels[:, attribute_index(target)] if target else None
    groups = []
    for k, a in enumerate(ATTRIBUTES):
        for value in (True, False):
            m = labels[:, k] == value
            n = int(m.sum())
            if y is None or n == 0:
                err = fp = fn = math.nan
                se = math.nan
            else:
                wrong = yes[m] != y[m]
                err = float(wrong.mean())
                se = math.sqrt(err * (1 - err) / n) if n > 1 else math.nan
                neg, pos = m & ~y, m & y
                fp = float(yes[neg].mean()) if neg.any() else math.nan
                fn = float((~yes[pos]).mean()) if pos.any() else math.nan
            groups.append(RealGroup(a, value, n, err, se, fp, fn, float(yes[m].mean()) if n else math.nan))
    return RealData(split, int(len(rows)), target, float((yes != y).mean()) if y is not None and len(rows) else None,
                    float(yes.mean()) if len(rows) else math.nan, tuple(groups))


def rank(sensitivities: Sequence[Sensitivity], method: str, strength: float, target: str | None,
         real: RealData, min_kept: int = 1) -> tuple[RankEntry, ...]:
    """Attributes by |kept change| at (method, strength), most sensitive first; the target and
    attributes with fewer than min_kept kept counterfactuals are left out (a mean over a handful of
    faces would rank by chance; the report lists them apart)."""
    pool = [s for s in sensitivities if s.method == method and s.strength == strength
            and s.attribute != target and s.kept.n >= max(min_kept, 1)]
    pool.sort(key=lambda s: (-abs(s.kept.change), attribute_index(s.attribute)))
    out = []
    for i, s in enumerate(pool):
        gap, se = real.error_gap(s.attribute) if real.target else (None, None)
        ok = gap is not None and math.isfinite(gap)
        out.append(RankEntry(i + 1, s.attribute, s, gap if ok else None, se if ok else None))
    return tuple(out)


def run_classifier_audit(cache, model: LatentModel, bank: VectorSource, classifier: Scores,
                         judge: Scorer | None = None, judge_auc: np.ndarray | None = None,
                         min_auc: float = 0.75, config: ClassifierAuditConfig = ClassifierAuditConfig(),
                         output: str = "", progress: bool = True) -> ClassifierAuditResult:
    """The whole audit on loaded objects (no files, no Ray).

    cache: faceedit.cache.Cache; model: the VAE (encode/decode); bank: vector(attr, method) -> (D,);
    classifier: scores(x) -> (B,) logits; judge (optional, with judge_auc (40,)): checks every
    counterfactual; without one nothing is left out and the result says so.
    """
    from tqdm import tqdm

    target = config.target or (output if output in ATTRIBUTES else None)
    attrs = tuple(config.attributes) or ATTRIBUTES
    rows = cache.indices(config.split)
    if len(rows) == 0:
        raise ValueError(f"{cache.root}: the {config.split!r} split is empty; the audit needs held-out faces")
    can_judge = None
    if judge is not None:
        if judge_auc is None:
            raise ValueError("a judge needs its held-out AUC (judge_auc) to know what it can judge")
        auc = np.asarray(judge_auc, np.float64)
        can_judge = np.isfinite(auc) & (auc >= min_auc)
    chosen = {(a, g): choose_faces(cache.labels, rows, a, g, config.faces, config.seed)
              for a in attrs for g in (True, False)}
    table = np.unique(np.concatenate(list(chosen.values())))
    slots = {key: np.searchsorted(table, v) for key, v in chosen.items()}
    base = _score_base(cache, table, model, classifier, judge, config.batch_size)
    edits = [(m, s) for m in config.methods for s in config.strengths]
    sens, flips = [], []
    bar = tqdm(total=len(attrs), desc="classifier audit", unit="attribute", disable=not progress)
    for a in attrs:
        V = {m: bank.vector(a, m).detach().cpu().numpy().astype(np.float32) for m in config.methods}
        parts: dict[tuple[str, float], list] = {e: [] for e in edits}
        for gain in (True, False):
            sl = slots[(a, gain)]
            for i in range(0, len(sl), max(1, config.batch_size // len(edits))):
                b = sl[i:i + max(1, config.batch_size // len(edits))]
                vec = np.stack([V[m] for m, _ in edits])
                alphas = np.array([s if gain else -s for _, s in edits], np.float32)
                clf, jd = _edit_and_score(model, classifier, judge, base.mu[b], vec, alphas)
                for e, key in enumerate(edits):
                    parts[key].append((gain, b, clf[e], None if jd is None else jd[e]))
        for (m, s), p in parts.items():
            st, fl = _effects(a, m, s, p, base, can_judge, target, config)
            sens.append(st)
            if m == config.methods[0] and s == config.headline:
                flips += fl
        bar.update()
    bar.close()
    real = real_data(cache, classifier, target, config.split, config.batch_size)
    rec = Reconstruction(len(table), float(((base.clf_orig > 0) == (base.clf_rec > 0)).mean()),
                         float(probability(base.clf_orig).mean()), float(probability(base.clf_rec).mean()))
    own = None
    if target and target in attrs:
        own = next(s for s in sens if s.attribute == target and s.method == config.methods[0]
                   and s.strength == config.headline)
    return ClassifierAuditResult(
        config=config, classifier={}, output=output, target=target, judge_checks=judge is not None,
        judge_auc={} if judge_auc is None else {a: float(v) for a, v in zip(ATTRIBUTES, judge_auc)},
        judge_min_auc=min_auc if judge is not None else None, faces=int(len(table)),
        sensitivities=tuple(sens), ranking=rank(sens, config.methods[0], config.headline, target, real,
                                                        config.min_kept),
        own=own, reconstruction=rec, real=real, flips=tuple(flips))


# ---------------------------------------------------------------------------- pictures

@torch.no_grad()
def flip_strips(result: ClassifierAuditResult, cache, model: LatentModel, bank: VectorSource) -> dict[str, bytes]:
    """For the top `config.strips` ranked attributes, up to `config.strip_faces` kept counterfactuals
    whose decision flipped: original | reconstruction | counterfactual, P(output) under each.
    attr -> PNG bytes."""
    from faceedit.cache import to_float
    from faceedit.edit import image_grid, png_bytes

    out = {}
    for entry in result.ranking[: result.config.strips]:
        fl = [f for f in result.flips if f.attribute == entry.attribute][: result.config.strip_faces]
        if not fl:
            continue
        x = to_float(cache.images[np.array([f.row for f in fl])])  # (F, 3, S, S)
        dev = _device(model)
        mu, _ = model.encode(x.to(dev))
        rec = model.decode(mu).float().cpu()
        V = torch.stack([bank.vector(f.attribute, f.method).float() for f in fl]).to(dev)  # (F, D)
        alphas = torch.tensor([f.strength for f in fl], device=dev)[:, None]
        cf = model.decode(mu + alphas * V).float().cpu()
        rows = [[x[i], rec[i], cf[i]] for i in range(len(fl))]
        labels = [f"{f.strength:+g}: P {f.p_before:.2f} -> {f.p_after:.2f}" for f in fl]
        img = image_grid(rows, labels, ["original", "reconstruction", "counterfactual"], scale=2,
                         title=f"{entry.attribute} ({fl[0].method}): decisions of {result.output!r} that flipped")
        out[entry.attribute] = png_bytes(img)
    return out


# ---------------------------------------------------------------------------- from files

def audit_classifier_folders(classifier: str | Path, output: str, bundle: str | Path, bank: str | Path,
                             cache: str | Path, out: str | Path, judge: Sequence[str | Path] = (),
                             config: ClassifierAuditConfig = ClassifierAuditConfig(), spec=None,
                             device: str = "cpu", progress: bool = True,
                             allow_bank_mismatch: bool = False) -> ClassifierAuditResult:
    """`faceedit audit-classifier`: open the classifier file and the folders, audit, write the
    report folder at `out` (faceedit/classifier_report.py). spec: a faceedit.classifier.ClassifierSpec.
    A bank built from another model than the bundle is refused unless allow_bank_mismatch."""
    from faceedit.bank import AttributeBank, check_built_from
    from faceedit.bundle import load_bundle
    from faceedit.cache import Cache
    from faceedit.classifier import ClassifierSpec, load_classifier
    from faceedit.classifier_report import write_classifier_report
    from faceedit.files import sha256_file
    from faceedit.judge import load_committee

    c, vae, bk = Cache.open(cache), load_bundle(bundle), AttributeBank.load(bank)
    D, S = vae.config.latent_dim, vae.config.image_size
    if bk.dim != D:
        raise ValueError(f"{bank}: vectors of dimension {bk.dim}, but the bundle {bundle} has latent_dim {D}")
    check_built_from(bk, vae.model, bundle, allow=allow_bank_mismatch)
    if S != c.size:
        raise ValueError(f"{cache}: images are {c.size}x{c.size}, the bundle {bundle} makes {S}x{S}")
    bad = [m for m in config.methods if m not in bk.methods]
    if bad:
        raise ValueError(f"methods {bad}: the bank {bank} has {', '.join(bk.methods)}")
    clf = load_classifier(classifier, output, spec or ClassifierSpec(), image_size=S)
    jd = load_committee([str(j) for j in judge], c) if judge else None
    if jd is not None and jd.model.config.image_size != c.size:
        raise ValueError(f"{judge[0]}: the judge reads {jd.model.config.image_size}px images, the cache has {c.size}px")
    model = vae.model.to(device)
    if jd is not None:
        jd.model.to(device)
    result = run_classifier_audit(c, model, bk, clf, jd.model if jd else None, jd.auc if jd else None,
                                  jd.min_auc if jd else 0.75, config, clf.output.name, progress)
    result.classifier = clf.describe()
    result.inputs = {"bundle": Path(bundle).name, "bundle_weights_sha256": vae.meta["weights"]["sha256"],
                     "bank": Path(bank).name,
                     "bank_vectors_sha256": sha256_file(Path(bank) / "vectors.safetensors"),
                     "cache": Path(cache).name, "cache_content_hash": c.hash,
                     "judge": ",".join(Path(j).name for j in judge) if judge else "",
                     "judge_weights_sha256": jd.meta["weights"]["sha256"] if jd else ""}
    strips = flip_strips(result, c, model, bk)
    write_classifier_report(out, result, strips)
    return result
