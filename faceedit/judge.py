"""The audit's judge: an independent multi-label attribute classifier on images.

The judge reads pixels, never latents, and shares no weights with the VAE, so the audit can ask it
whether an edit in the VAE's latent space changed an attribute in the *image* (the protocol of
Wu et al. 2021, "StyleSpace Analysis", Section 5: edits are re-scored by pretrained attribute
classifiers). It is a small plain CNN (stride-2 conv stages, BatchNorm, ReLU, global average pool,
one linear layer per 40 logits), trained with the team's model-agnostic loop (faceedit/trainer.py)
and saved as a bundle of kind "judge". Its held-out ROC AUC per attribute decides which attributes it
may judge at all: below `min_auc` (0.75) an attribute is marked "cannot judge" and the audit greys
out its numbers instead of using them.

Judges trained alike from different seeds agree on the attributes themselves but not on what else
a picture says about them (how much a smile tells about gender), and that moves the audit's
leakages (the spread over three seeds: BENCHMARKS.md, Audit). A `Committee` of several judges scores
with the mean of their logits, which averages that disagreement out (`faceedit audit --judge J1
J2 J3`); its AUC is measured afresh on the val split.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from faceedit.attributes import ATTRIBUTES
from faceedit.metrics import auc_per_attribute  # noqa: F401 (the judge's AUC; also its API)
from faceedit.model import MAX_SIDE, MAX_STAGES, MAX_WIDTH
from faceedit.trainer import TrainConfig

KIND = "judge"

# How a judge trains, in the main job and by default in `faceedit judge`: a 2-minute budget stops
# it near its best held-out AUC, before it overfits (BENCHMARKS.md, Audit: "Judges trained longer do not help").
TRAINING = TrainConfig(epochs=20, max_minutes=2.0, lr=2e-3, batch_size=64, grad_clip=1.0)


@dataclass(frozen=True)
class JudgeConfig:
    image_size: int = field(default=64, metadata={"help": "side S of the square images it reads"})
    width: int = field(default=16, metadata={"help": "channels of the first stage, doubled at every "
                       "further stage (its speed: BENCHMARKS.md, the main job's judge stage)"})
    stages: int = field(default=4, metadata={"help": "stride-2 stages; S / 2**stages is the last "
                        "feature map's side"})
    dropout: float = field(default=0.1, metadata={"help": "dropout before the linear head"})
    min_auc: float = field(default=0.75, metadata={"help": "held-out ROC AUC below which an "
                           "attribute is marked 'cannot judge' and its audit numbers greyed out"})

    def __post_init__(self) -> None:
        for name, high in (("image_size", MAX_SIDE), ("width", MAX_WIDTH), ("stages", MAX_STAGES)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value > high:
                raise ValueError(f"JudgeConfig.{name}={value!r}: expected a whole number up to {high}")
        if self.width * 2 ** (self.stages - 1) > MAX_WIDTH:
            raise ValueError(f"JudgeConfig: width={self.width} doubled over {self.stages} stages is over "
                             f"{MAX_WIDTH} channels")
        if self.stages < 1 or self.image_size % 2**self.stages:
            raise ValueError(f"JudgeConfig: image_size={self.image_size} must be a multiple of "
                             f"2**stages = {2**self.stages}")
        if self.width < 1 or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"JudgeConfig: width={self.width}, dropout={self.dropout}: expected "
                             "width >= 1 and dropout in [0, 1)")
        if not 0.0 <= self.min_auc <= 1.0:
            raise ValueError(f"JudgeConfig.min_auc={self.min_auc}: expected a value in [0, 1]")

    @property
    def feature_dim(self) -> int:
        return self.width * 2 ** (self.stages - 1)


def _conv(cin: int, cout: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class Judge(nn.Module):
    """(B, 3, S, S) in [0, 1] -> 40 attribute logits; `features` gives the penultimate layer."""

    def __init__(self, config: JudgeConfig = JudgeConfig()):
        super().__init__()
        self.config = config
        layers: list[nn.Module] = _conv(3, config.width, 2)  # the first stage: one conv (cheap at full size)
        for i in range(1, config.stages):
            cin, cout = config.width * 2 ** (i - 1), config.width * 2**i
            layers += _conv(cin, cout, 2) + _conv(cout, cout, 1)
        self.body = nn.Sequential(*layers)
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.feature_dim, len(ATTRIBUTES))

    def _check(self, x: torch.Tensor) -> None:
        S = self.config.image_size
        if x.dim() != 4 or tuple(x.shape[1:]) != (3, S, S):
            raise ValueError(f"Judge: got images of shape {tuple(x.shape)}, expected (B, 3, {S}, {S})")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features: (B, 3, S, S) -> (B, F), F = width * 2**(stages-1)."""
        self._check(x)
        h = self.body(x * 2 - 1)  # (B, 3, S, S) -> (B, F, S/2^k, S/2^k)
        return h.mean(dim=(2, 3))  # global average pool -> (B, F)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) -> logits (B, 40), columns in ATTRIBUTES order."""
        return self.head(self.drop(self.features(x)))

    @torch.no_grad()
    def score(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (B, 40) and penultimate features (B, F) in one pass (no dropout in eval mode)."""
        f = self.features(x)
        return self.head(f), f


class Committee(nn.Module):
    """Several judges as one: the mean of their logits; their penultimate features side by side."""

    def __init__(self, judges: Sequence[Judge]):
        super().__init__()
        if not judges:
            raise ValueError("a committee needs at least one judge")
        sizes = sorted({j.config.image_size for j in judges})
        if len(sizes) > 1:
            raise ValueError(f"judges for images of sizes {sizes}: a committee's judges must read "
                             "one image size")
        self.judges = nn.ModuleList(judges)
        self.config = judges[0].config

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([j(x) for j in self.judges]).mean(0)

    @torch.no_grad()
    def score(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scores = [j.score(x) for j in self.judges]
        return torch.stack([lo for lo, _ in scores]).mean(0), torch.cat([f for _, f in scores], 1)


def judge_loss(model: Judge, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy over the 40 attributes. x (B, 3, S, S), y (B, 40) in {0, 1}."""
    return F.binary_cross_entropy_with_logits(model(x), y)


def judgeable(auc: np.ndarray | list[float], min_auc: float) -> list[bool]:
    """Which attributes the judge may judge: AUC known and >= min_auc."""
    return [bool(np.isfinite(a) and a >= min_auc) for a in np.asarray(auc, np.float64)]


# ---------------------------------------------------------------------------- training

class JudgeLoss(NamedTuple):
    total: torch.Tensor  # mean binary cross-entropy over the 40 attributes


class JudgeObjective:
    """The judge's part of training with faceedit/trainer.py (its `Objective` interface)."""

    def loss(self, model: nn.Module, batch) -> JudgeLoss:
        return JudgeLoss(F.binary_cross_entropy_with_logits(model(batch.images).float(), batch.labels))

    def validate(self, model: nn.Module, batches) -> dict[str, float]:
        logits, labels = predict(model, batches)
        auc = auc_per_attribute(logits, labels)
        bce = F.binary_cross_entropy_with_logits(torch.from_numpy(logits), torch.from_numpy(labels))
        return {"total": float(bce), "auc_mean": float(np.nanmean(auc)),
                **{f"auc_{a}": float(v) for a, v in zip(ATTRIBUTES, auc)}}

    def figures(self, model: nn.Module, batch) -> dict[str, torch.Tensor]:
        return {}  # a classifier has no pictures to show

    def after_step(self, model: nn.Module, loss: JudgeLoss) -> None:
        pass


@torch.no_grad()
def predict(model: nn.Module, batches) -> tuple[np.ndarray, np.ndarray]:
    """Logits (N, 40) float32 and labels (N, 40) float32 over an iterable of trainer Batches."""
    logits, labels = [], []
    for batch in batches:
        logits.append(model(batch.images).float().cpu().numpy())
        labels.append(batch.labels.float().cpu().numpy())
    return np.concatenate(logits), np.concatenate(labels)


@dataclass
class JudgeResult:
    model: Judge  # trained, eval mode, CPU
    auc: np.ndarray  # (40,) held-out ROC AUC (NaN where the split holds one class)
    can_judge: list[bool]  # (40,) AUC >= min_auc
    history: list[dict[str, float]]


@dataclass(frozen=True)
class JudgeRecipe:
    """The judge as a `faceedit.recipe.Recipe`: trained by `faceedit.recipe.train_bundle` in this
    process or by workers/train.py on Ray; its bundle records the held-out AUC per attribute."""

    config: JudgeConfig = JudgeConfig()

    def build(self) -> Judge:
        return Judge(self.config)

    def objective(self) -> JudgeObjective:
        return JudgeObjective()

    def check(self, cache) -> None:
        from faceedit.recipe import check_image_size

        check_image_size(cache, self.config.image_size, "judge")
        _val_rows(cache)  # before training: its AUC needs held-out faces

    def finish(self, model: Judge, cache, log_dir: Path | None) -> dict:
        auc = val_auc(model, cache)
        return {"judge": judge_record(auc, judgeable(auc, self.config.min_auc), self.config.min_auc)}


def train_judge(cache, config: JudgeConfig, train: TrainConfig, out_dir: str | Path | None = None,
                **fit_seams) -> JudgeResult:
    """Train a judge on the cache's train split with the team's loop; AUC on its val split.
    (`faceedit.recipe.train_bundle(cache, out, JudgeRecipe(config), train)` also writes its bundle.)

    `fit_seams` go to faceedit.trainer.fit unchanged (rank, world_size, wrap_model, on_report, ...).
    """
    from faceedit.recipe import train_model

    result = train_model(cache, JudgeRecipe(config), train, out_dir, **fit_seams)
    auc = val_auc(result.model, cache)
    return JudgeResult(result.model, auc, judgeable(auc, config.min_auc), result.history)


def val_auc(model: nn.Module, cache) -> np.ndarray:
    """Per-attribute ROC AUC (40,) of a judge (or committee, in eval mode) on the cache's val split."""
    from faceedit.trainer import ShardedBatches, read_batch

    batches = (read_batch(cache, r, torch.device("cpu"))
               for r in ShardedBatches(_val_rows(cache), 256, shuffle=False, drop_last=False))
    return auc_per_attribute(*predict(model, batches))


def _val_rows(cache) -> np.ndarray:
    val = cache.indices("val")
    if len(val) == 0:
        raise ValueError(f"{cache.root}: the val split is empty; the judge's AUC needs held-out faces")
    return val


# ---------------------------------------------------------------------------- the bundle

def judge_record(auc: np.ndarray, can_judge: Sequence[bool], min_auc: float) -> dict:
    """What a judge bundle's config.json records of its held-out AUC (40,) and verdicts."""
    return {
        "auc": {a: (None if not np.isfinite(v) else round(float(v), 6)) for a, v in zip(ATTRIBUTES, auc)},
        "can_judge": {a: bool(ok) for a, ok in zip(ATTRIBUTES, can_judge)},
        "cannot_judge": [a for a, ok in zip(ATTRIBUTES, can_judge) if not ok],
        "min_auc": min_auc,
    }


def save_judge(path: str | Path, result: JudgeResult, meta: dict | None = None) -> Path:
    """A bundle of kind "judge": weights + config + per-attribute held-out AUC and verdicts."""
    from faceedit.bundle import save_bundle

    record = judge_record(result.auc, result.can_judge, result.model.config.min_auc)
    return save_bundle(path, result.model, {**(meta or {}), "judge": record})


@dataclass(frozen=True)
class LoadedJudge:
    model: Judge | Committee  # eval mode, CPU
    auc: np.ndarray  # (40,) held-out AUC, NaN where unknown
    can_judge: np.ndarray  # (40,) bool
    min_auc: float
    path: Path  # the (first) judge's folder
    meta: dict
    members: tuple[LoadedJudge, ...] = ()  # a committee's judges


def load_judge(path: str | Path) -> LoadedJudge:
    """A judge bundle; a bundle of another kind is a ValueError naming the kind found."""
    from faceedit.bundle import load_bundle

    b = load_bundle(path)
    if b.kind != KIND:
        raise ValueError(f"{path}: a bundle of kind {b.kind!r}, expected a judge (make one with "
                         "`faceedit judge`)")
    rec = b.meta.get("judge", {})
    auc = np.array([np.nan if rec.get("auc", {}).get(a) is None else rec["auc"][a] for a in ATTRIBUTES])
    min_auc = float(rec.get("min_auc", b.config.min_auc))
    return LoadedJudge(b.model, auc, np.array(judgeable(auc, min_auc)), min_auc, Path(path), b.meta)


def load_committee(paths: Sequence[str | Path], cache) -> LoadedJudge:
    """One judge bundle (as `load_judge`), or a committee of several whose AUC is that of their
    mean logits on the cache's val split; min_auc is the strictest of theirs."""
    if not paths:
        raise ValueError("no judge given")
    if len(paths) == 1:
        return load_judge(paths[0])
    judges = [load_judge(p) for p in paths]
    digests = [j.meta["weights"]["sha256"] for j in judges]
    for i, d in enumerate(digests):
        if d in digests[:i]:
            raise ValueError(f"{paths[i]}: the same weights as {paths[digests.index(d)]}; a "
                             "committee's judges must differ (train them with other --seed)")
    committee = Committee([j.model for j in judges]).eval()
    auc = val_auc(committee, cache)
    min_auc = max(j.min_auc for j in judges)
    meta = {"committee": [str(p) for p in paths], "weights": {"sha256": ",".join(digests)}}
    return LoadedJudge(committee, auc, np.array(judgeable(auc, min_auc)), min_auc, Path(paths[0]),
                       meta, tuple(judges))


def _register() -> None:
    from faceedit.bundle import register_kind

    register_kind(KIND, JudgeConfig, Judge)


_register()
