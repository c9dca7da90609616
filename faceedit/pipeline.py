"""The main job as a chain of stages, each a folder on disk that is rebuilt only when out of date.

A stage knows its output folder, a key (a hash of its settings and of its inputs' contents), and how
to build the output. Its stamp, `<out>/.stage.json`, records the key it was built with; a stage whose
stamp matches is skipped. Inputs are hashed by content (the cache's content hash, the bundle's
weights), so editing a setting or re-preparing data reruns exactly the stages downstream of it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from faceedit.audit import AuditConfig
from faceedit.bank import BankConfig
from faceedit.config import config_to_dict
from faceedit.files import atomic_write_json, check_replaceable, sha256_file
from faceedit.judge import TRAINING as JUDGE_TRAINING
from faceedit.judge import JudgeConfig
from faceedit.model import VAEConfig
from faceedit.trainer import TrainConfig

STAMP = ".stage.json"
STAGE_FOLDERS = ("synth", "cache", "bundle", "bank", "judge", "report", "figures")  # under `run --out`


def stage_key(settings: dict[str, Any], inputs: dict[str, str]) -> str:
    """sha256 of the stage's settings and its inputs' content hashes (order-independent)."""
    blob = json.dumps({"settings": settings, "inputs": inputs}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _stamp(out: Path) -> dict[str, Any]:
    try:
        doc = json.loads((out / STAMP).read_text())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def is_fresh(out: Path, key: str) -> bool:
    return _stamp(out).get("key") == key


@dataclass
class Stage:
    name: str
    out: Path
    settings: dict[str, Any]
    inputs: Callable[[], dict[str, str]]  # called when the stage is reached: upstream may have just run
    build: Callable[[Path], None]  # writes the complete output at the given path (atomically)
    eta_s: float = 0.0  # rough expected seconds on a 2-core CPU, for the progress line


@dataclass
class Pipeline:
    stages: list[Stage]
    log: Callable[[str], None] = print
    timings: dict[str, float] = field(default_factory=dict)

    def run(self) -> dict[str, float]:
        """Run every stage in order, skipping those whose output is up to date; seconds per stage."""
        total = len(self.stages)
        for stage in self.stages:  # before any work: no stage may replace a user's folder
            if _stamp(stage.out).get("stage") != stage.name:  # a folder it stamped is its own
                check_replaceable(stage.out, f"the {stage.name.split(':')[0]} stage's output folder")
        for i, stage in enumerate(self.stages, 1):
            key = stage_key(stage.settings, stage.inputs())
            if is_fresh(stage.out, key):
                self.log(f"[{i}/{total}] {stage.name}: up to date ({stage.out}), skipped")
                self.timings[stage.name] = 0.0
                continue
            remaining = sum(s.eta_s for s in self.stages[i - 1:])
            self.log(f"[{i}/{total}] {stage.name} -> {stage.out}"
                     f" (about {_minutes(stage.eta_s)}; all that is left: about {_minutes(remaining)})")
            start = time.perf_counter()
            stage.build(stage.out)
            seconds = time.perf_counter() - start
            atomic_write_json(stage.out / STAMP, {"stage": stage.name, "key": key,
                                                  "settings": stage.settings, "seconds": round(seconds, 1)})
            self.timings[stage.name] = seconds
            self.log(f"[{i}/{total}] {stage.name}: done in {_minutes(seconds)}")
        return self.timings


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


# ---------------------------------------------------------------------------- the main job

@dataclass(frozen=True)
class Profile:
    """How big a main job: the configs of every stage. `default` runs the 19,000 real faces on a
    2-core CPU, `quick` is a short run, `tiny` takes seconds (the smoke test); `gpu` and `gpu-128`
    (64x64 and 128x128) are sized for GPU workers; BENCHMARKS.md has their measured times."""
    name: str
    synth_faces: int  # rendered when no CelebA folder is given
    limit: int | None  # rows of a real CelebA folder taken (None: all)
    model: VAEConfig  # its image_size is the cache's and the judge's
    train: TrainConfig  # the VAE's training
    judge: JudgeConfig
    judge_train: TrainConfig
    audit: AuditConfig
    eta_s: dict[str, float]  # rough seconds per stage on a 2-core CPU (on one GPU: the gpu profiles)
    bank: BankConfig = BankConfig()

    def __post_init__(self) -> None:
        if self.judge.image_size != self.model.image_size:
            raise ValueError(f"Profile {self.name!r}: judge image_size {self.judge.image_size} != "
                             f"model image_size {self.model.image_size}")

    @property
    def image_size(self) -> int:
        return self.model.image_size


PROFILES: dict[str, Profile] = {
    "default": Profile(
        "default", synth_faces=20000, limit=None, model=VAEConfig(image_size=64),
        # 2 workers x 16, lr 1.4e-3, local SGD averaging the weights every 4 steps: the settings
        # BENCHMARKS.md measured best in 8 CPU minutes (`faceedit train --sync-every 1` is DDP).
        train=TrainConfig(epochs=100, max_minutes=8.0, batch_size=16, lr=1.4e-3, sync_every=4),
        judge=JudgeConfig(image_size=64), judge_train=JUDGE_TRAINING,
        audit=AuditConfig(faces=64),
        eta_s=dict(synth=60, prepare=30, train=510, vectors=60, judge=130, audit=150, figures=10)),
    "quick": Profile(
        "quick", synth_faces=4000, limit=4000, model=VAEConfig(image_size=64),
        train=TrainConfig(epochs=100, max_minutes=1.5, batch_size=16, sync_every=4),
        judge=JudgeConfig(image_size=64), judge_train=dataclasses.replace(JUDGE_TRAINING, max_minutes=0.5),
        audit=AuditConfig(faces=24, strengths=(-2.0, 2.0),
                          attributes=("Smiling", "Male", "Eyeglasses", "Heavy_Makeup", "Blond_Hair")),
        eta_s=dict(synth=15, prepare=10, train=100, vectors=15, judge=35, audit=30, figures=5)),
    # One GPU (or one per Ray worker): the wider model of BENCHMARKS.md's H200 runs ("Training on
    # one GPU"), at a batch a GPU wants; validation every few epochs (GPU epochs are short) and
    # the best validation's weights kept, since 3 minutes are many epochs.
    "gpu": Profile(
        "gpu", synth_faces=20000, limit=None,
        model=VAEConfig(image_size=64, channels=(32, 64, 128, 256), blocks=1, norm="group"),
        train=TrainConfig(epochs=1000, max_minutes=3.0, batch_size=128, lr=2e-3, val_every=5),
        judge=JudgeConfig(image_size=64), judge_train=JUDGE_TRAINING,
        audit=AuditConfig(faces=64),
        eta_s=dict(synth=60, prepare=30, train=200, vectors=20, judge=30, audit=40, figures=10)),
    # 128x128 end to end: the gpu model's four stages, so an 8x8 bottleneck. A fifth stage (4x4)
    # reconstructs worse: at 3 epochs on the 17,100 real faces 21.42 dB against 22.11 with four,
    # PCA 21.98 (BENCHMARKS.md, "128x128"). lr 2e-3 diverged on the H200 at 128 (a NaN loss at
    # step 83, bf16); lr 1e-3 with the gradient norm clipped at 1 ran 50 epochs in 3 minutes to
    # 23.21 dB, PCA 22.04 (BENCHMARKS.md, "128x128 on the H200").
    "gpu-128": Profile(
        "gpu-128", synth_faces=20000, limit=None,
        model=VAEConfig(image_size=128, channels=(32, 64, 128, 256), blocks=1, norm="group"),
        train=TrainConfig(epochs=1000, max_minutes=3.0, batch_size=128, lr=1e-3, grad_clip=1.0,
                          val_every=2),
        judge=JudgeConfig(image_size=128), judge_train=JUDGE_TRAINING,
        audit=AuditConfig(faces=64),
        eta_s=dict(synth=120, prepare=60, train=200, vectors=40, judge=60, audit=80, figures=10)),
    "tiny": Profile(
        "tiny", synth_faces=240, limit=240, model=VAEConfig(image_size=32, channels=(8, 16), latent_dim=16),
        train=TrainConfig(epochs=1, max_minutes=0.0, batch_size=32, sync_every=2,  # crosses local SGD
                          progress=False),
        judge=JudgeConfig(image_size=32, width=4, stages=2),
        judge_train=TrainConfig(epochs=1, max_minutes=0.0, batch_size=32, progress=False),
        audit=AuditConfig(faces=4, strengths=(-1.0, 1.0), headline=1.0, attributes=("Smiling", "Male"),
                          strips=1),
        eta_s=dict(synth=5, prepare=3, train=20, vectors=3, judge=5, audit=5, figures=2)),
}


def choose_profile(name: str, cuda: bool) -> Profile:
    """The profile called `name`; "auto" is `gpu` when CUDA is present, else `default`."""
    if name == "auto":
        name = "gpu" if cuda else "default"
    if name not in PROFILES:
        raise ValueError(f"profile {name!r}: expected auto or one of {', '.join(PROFILES)}")
    return PROFILES[name]


# Trains a recipe into a bundle: (cache, out bundle, Recipe, TrainConfig). The CLI passes the Ray
# trainer (workers/train.py `train_on_ray`, with its workers and cluster bound); the default is
# faceedit.recipe.train_bundle, the plain loop in this process.
TrainBundle = Callable[[Path, Path, Any, Any], Any]


def source_fingerprint(data_dir: Path) -> str:
    """A cheap content fingerprint of a CelebA folder: its label and partition files' bytes and the
    names and sizes of its images (hashing every JPEG's bytes is left to prepare)."""
    from faceedit.celeba import find_root

    root = find_root(data_dir)
    h = hashlib.sha256()
    for name in ("list_attr_celeba.txt", "list_eval_partition.txt"):
        if (root / name).is_file():
            h.update(name.encode() + (root / name).read_bytes())
    for entry in sorted(os.scandir(root / "img_align_celeba"), key=lambda e: e.name):
        h.update(f"{entry.name}:{entry.stat().st_size}\n".encode())
    return h.hexdigest()


def _weights_hash(bundle: Path) -> str:
    return sha256_file(bundle / "model.safetensors")


def main_job(out: Path, data: Path | None, profile: Profile, train_vae: TrainBundle | None = None,
             device: str = "cpu", log: Callable[[str], None] = print) -> Pipeline:
    """The stages of `faceedit run`: [synth] -> prepare -> train -> vectors -> judge -> audit -> figures.

    `train_vae` trains the VAE's recipe and writes its bundle (the CLI passes the Ray trainer, so
    that this library module does not import Ray; default: the plain loop in this process). The
    judge trains in this process. Every output lands under `out`.
    """
    from faceedit.objective import VAERecipe
    from faceedit.recipe import train_bundle

    paths = {name: out / name for name in STAGE_FOLDERS}
    model_cfg, train_cfg, bank_cfg = profile.model, profile.train, profile.bank
    judge_cfg, judge_train_cfg, audit_cfg = profile.judge, profile.judge_train, profile.audit
    train_vae = train_vae or train_bundle
    source = data if data is not None else paths["synth"]
    stages: list[Stage] = []
    if data is None:
        stages.append(Stage(
            "synth: render faces with real CelebA label rows", paths["synth"],
            {"n": profile.synth_faces, "seed": 0}, lambda: {},
            lambda p: _render(p, profile.synth_faces), profile.eta_s["synth"]))
    limit = profile.limit if data is not None else None
    stages += [
        Stage("prepare: decode, crop and resize into the cache", paths["cache"],
              {"size": profile.image_size, "limit": limit, "seed": 0},
              lambda: {"source": source_fingerprint(source)},
              lambda p: _prepare(source, p, profile.image_size, limit), profile.eta_s["prepare"]),
        Stage("train: the VAE on local Ray", paths["bundle"],
              {"model": config_to_dict(model_cfg), "train": config_to_dict(train_cfg)},
              lambda: {"cache": _cache_hash(paths["cache"])},
              lambda p: train_vae(paths["cache"], p, VAERecipe(model_cfg), train_cfg),
              profile.eta_s["train"]),
        Stage("vectors: the attribute bank", paths["bank"], config_to_dict(bank_cfg),
              lambda: {"cache": _cache_hash(paths["cache"]), "bundle": _weights_hash(paths["bundle"])},
              lambda p: _vectors(paths["bundle"], paths["cache"], p, bank_cfg), profile.eta_s["vectors"]),
        Stage("judge: the audit's independent attribute classifier", paths["judge"],
              {"judge": config_to_dict(judge_cfg), "train": config_to_dict(judge_train_cfg)},
              lambda: {"cache": _cache_hash(paths["cache"])},
              lambda p: _judge(paths["cache"], p, judge_cfg, judge_train_cfg), profile.eta_s["judge"]),
        Stage("audit: edit held-out faces, re-score them with the judge", paths["report"],
              config_to_dict(audit_cfg),
              lambda: {"cache": _cache_hash(paths["cache"]), "bundle": _weights_hash(paths["bundle"]),
                       "bank": sha256_file(paths["bank"] / "vectors.safetensors"),
                       "judge": _weights_hash(paths["judge"])},
              lambda p: _audit(paths, p, audit_cfg, device), profile.eta_s["audit"]),
        Stage("figures: samples, reconstructions, Figure-7 strips", paths["figures"], {},
              lambda: {"cache": _cache_hash(paths["cache"]), "bundle": _weights_hash(paths["bundle"]),
                       "bank": sha256_file(paths["bank"] / "vectors.safetensors")},
              lambda p: _figures(paths, p), profile.eta_s["figures"]),
    ]
    return Pipeline(stages, log)


def _cache_hash(path: Path) -> str:
    from faceedit.cache import Cache

    return Cache.open(path).hash


def _render(out: Path, n: int) -> None:
    from faceedit.synth import render_dataset

    render_dataset(out, n, seed=0, overwrite=True, progress=True)


def _prepare(source: Path, out: Path, size: int, limit: int | None) -> None:
    from faceedit.prepare import prepare

    prepare(source, out, size=size, limit=limit)


def _vectors(bundle: Path, cache: Path, out: Path, config: Any) -> None:
    from faceedit.bank import build_bank_folder

    build_bank_folder(bundle, cache, out, config)


def _judge(cache: Path, out: Path, config: Any, train: Any) -> None:
    from faceedit.judge import JudgeRecipe
    from faceedit.recipe import train_bundle

    train_bundle(cache, out, JudgeRecipe(config), train)


def _audit(paths: dict[str, Path], out: Path, config: Any, device: str) -> None:
    from faceedit.audit import Execution, audit_folders

    run = audit_folders(str(paths["bundle"]), str(paths["bank"]), str(paths["cache"]),
                        str(paths["judge"]), str(out), config, execution=Execution(device=device))
    print(f"audit: {run.faces_per_s:.0f} edited faces scored per second")


def _figures(paths: dict[str, Path], out: Path, faces: int = 8, seed: int = 0) -> None:
    """The pictures the README shows: prior samples, val reconstructions, Figure-7 strips."""
    import torch

    from faceedit.bank import AttributeBank
    from faceedit.bundle import load_bundle
    from faceedit.cache import Cache, to_float
    from faceedit.edit import png_bytes, strip
    from faceedit.figures import grid, save_png
    from faceedit.files import atomic_dir

    model = load_bundle(paths["bundle"]).model
    cache, bank = Cache.open(paths["cache"]), AttributeBank.load(paths["bank"])
    val = cache.indices("val")[:faces]
    x = to_float(cache.images[val])  # (F, 3, S, S)
    with atomic_dir(out) as tmp, torch.inference_mode():
        mu, _ = model.encode(x)
        save_png(tmp / "samples.png", grid(model.sample(64, torch.Generator().manual_seed(seed)), 8))
        save_png(tmp / "reconstructions.png", grid(torch.cat([x, model.decode(mu)]), len(val)))
        for attr in ("Smiling", "Heavy_Makeup", "Eyeglasses"):
            (tmp / f"strip-{attr}.png").write_bytes(png_bytes(strip(model, mu[:3], bank, attr)))
