"""The attribute bank: one latent vector per attribute and method, with the record of how it was made.

A bank is a folder (written atomically, byte-identical for the same bundle, cache and settings):

    vectors.safetensors  one float32 (40, D) tensor per method, rows in ATTRIBUTES order
    bank.json            settings; the bundle's and cache's hashes; per attribute: confounders,
                         cells (values, count, replication factor, capped), Kish ESS per side,
                         the attributes its projection removes,
                         vector norms and the held-out ROC AUC of z . v per method; the cosine
                         similarity of every pair of vectors per method

`build_bank` encodes the cache's train split to encoder means (one streaming pass feeds the cell
sums of every attribute), computes every method of faceedit/vectors.py, and scores each vector on
the val split as a linear classifier of its attribute (White 2016's check of attribute vectors).
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Literal, Sequence

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from faceedit import vectors as V
from faceedit.attributes import ATTRIBUTES, attribute_index
from faceedit.bundle import load_bundle, weights_digest
from faceedit.cache import Cache, to_float
from faceedit.files import atomic_dir, sha256_file
from faceedit.metrics import auc_per_attribute

BANK_FORMAT = 1
METHODS: tuple[str, ...] = ("naive", "balanced", "projection", "boundary", "boundary_plain")
FILES = ("vectors.safetensors", "bank.json")


class BankError(ValueError):
    """A bank folder that is missing, incomplete or inconsistent."""


class BankMismatch(BankError):
    """A bank built from another model than the one it is used with."""


def check_built_from(bank: "AttributeBank", model: torch.nn.Module, bundle_path: str | Path | None = None,
                     allow: bool = False) -> None:
    """Refuse a bank whose recorded model is not `model` (its vectors point elsewhere in another
    model's latent space), or that records none; with `allow`, only warn.

    A bank records `weights_digest` of the model it encoded with (source.model_digest); banks from
    before that record the bundle's config.json hash (source.bundle_hash), checked against
    `bundle_path`."""
    source = bank.info.get("source") or {}
    where = f"bank {bank.path or '(in memory)'}"
    if source.get("model_digest"):
        same = source["model_digest"] == weights_digest(model)
    elif source.get("bundle_hash") and bundle_path is not None and Path(bundle_path, "config.json").is_file():
        same = source["bundle_hash"] == bundle_digest(bundle_path)
    else:
        same = None
    if same:
        return
    problem = ("was built from another model than the bundle" if same is False
               else "does not record which model it was built from, so it cannot be matched to the bundle")
    message = (f"{where} {problem} {bundle_path or '(in memory)'}: its vectors would edit along "
               "unrelated directions. Build the bank from this bundle (`faceedit vectors`), or pass "
               "--allow-bank-mismatch to use it anyway")
    if not allow:
        raise BankMismatch(message)
    warnings.warn(message.replace(", or pass --allow-bank-mismatch to use it anyway", "; using it anyway"),
                  stacklevel=2)


@dataclass(frozen=True)
class BankConfig:
    confounders: tuple[str, ...] = field(default=(), metadata={"help": (
        "confounders to balance over: empty = White's set for Male/Mouth_Slightly_Open/Smiling and "
        "Male for the rest; NAMES = one set for every attribute; ATTR=C1,C2 = the set of one "
        "attribute (ATTR= for none); 'none' = no confounders anywhere")})
    projected_out: tuple[str, ...] = field(default=(), metadata={"help": (
        "attributes whose naive directions the projection removes, in the same form: empty = the "
        "confounders' defaults, except that Smiling and Mouth_Slightly_Open keep each other (each "
        "one's naive vector is mostly the other, so removing it removed the edit)")})
    cap: float | None = field(default=None, metadata={"help": (
        "largest replication factor a cell may get (None: replicate every cell up to the largest, "
        "as White does; a cap limits how often one face is copied, at the price of balance)")})
    empty_cells: Literal["error", "drop"] = field(default="drop", metadata={"help": (
        "an empty cell of attribute x confounders: drop the strata lacking one side (balance over "
        "the strata where the attribute is seen both present and absent; recorded in bank.json), "
        "or error. Real CelebA's train split has no women with a mustache or sideburns")})
    tiny_cell: int = field(default=V.TINY_CELL, metadata={"help": "warn about cells with fewer faces"})
    C: float = field(default=1.0, metadata={"help": "inverse L2 strength of the boundary's logistic regression"})
    batch_size: int = field(default=256, metadata={"help": "faces encoded per batch"})
    split: str = field(default="train", metadata={"help": "cache split the vectors are computed on"})
    eval_split: str = field(default="val", metadata={"help": "cache split the held-out AUC is measured on"})


def confounder_sets(spec: Sequence[str] = (), default: Callable[[str], tuple[str, ...]] = V.default_confounders
                    ) -> dict[str, tuple[str, ...]]:
    """Every attribute's confounders from a BankConfig.confounders (or .projected_out) spec (see its
    help); `default` gives the set of an attribute the spec does not name."""
    shared: list[str] | None = None
    per_attr: dict[str, tuple[str, ...]] = {}
    for entry in spec:
        if entry.lower() == "none":
            shared = []
        elif "=" in entry:
            attr, _, rest = entry.partition("=")
            try:
                attribute_index(attr)
            except ValueError as e:
                raise ValueError(f"confounders entry {entry!r}: {e}") from None
            per_attr[attr] = tuple(n for n in rest.split(",") if n)
        else:
            shared = (shared or []) + [entry]
    sets = {}
    for attr in ATTRIBUTES:
        chosen = per_attr.get(attr, shared)
        sets[attr] = V.resolve_confounders(attr, {attr: chosen} if attr in per_attr else chosen, default)
    return sets


class AttributeBank:
    """Attribute vectors by method: `vector(attr, method) -> (D,)`; `info` is bank.json."""

    def __init__(self, vectors: dict[str, torch.Tensor], info: dict, path: Path | None = None):
        self.vectors = {m: vectors[m].to(torch.float32).contiguous() for m in info["methods"]}
        self.info = info
        self.path = path  # the folder it was loaded from or saved to
        self.timing: dict[str, float] = {}  # seconds per stage of build_bank (never saved: not reproducible)

    @property
    def meta(self) -> dict:
        """bank.json's content (the editor shows its top-level scalars)."""
        return self.info

    @property
    def methods(self) -> tuple[str, ...]:
        return tuple(self.info["methods"])

    @property
    def attributes(self) -> tuple[str, ...]:
        return tuple(self.info["attributes"])

    @property
    def dim(self) -> int:
        return int(self.info["latent_dim"])

    def _method(self, method: str) -> str:
        if method not in self.vectors:
            raise ValueError(f"unknown method {method!r}; expected one of: {', '.join(self.methods)}")
        return method

    def matrix(self, method: str) -> torch.Tensor:
        """(40, D) float32, rows in ATTRIBUTES order."""
        return self.vectors[self._method(method)]

    def vector(self, attr: str, method: str = "balanced") -> torch.Tensor:
        """(D,) float32 vector of `attr` by `method`; ValueError listing the valid names otherwise."""
        return self.matrix(method)[attribute_index(attr)]

    def cosine(self, method: str) -> np.ndarray:
        """(40, 40) cosine similarity of every pair of this method's vectors."""
        return np.asarray(self.info["cosine"][self._method(method)])

    def summary(self, pairs: Sequence[tuple[str, str]] = (("Smiling", "Male"), ("Smiling", "Mouth_Slightly_Open"),
                                                          ("Heavy_Makeup", "Male"))) -> dict:
        """A short JSON-ready digest: cosines of `pairs` and the mean held-out AUC, per method."""
        per = self.info["per_attribute"]
        out: dict = {"cosine": {}, "mean_auc": {}, "capped_vectors": self.info.get("capped_vectors", [])}
        for m in self.methods:
            cos = self.cosine(m)
            out["cosine"][m] = {f"{a}~{b}": round(float(cos[attribute_index(a), attribute_index(b)]), 4)
                                for a, b in pairs}
            aucs = [per[a]["auc"][m] for a in self.attributes if per[a]["auc"][m] is not None]
            out["mean_auc"][m] = round(float(np.mean(aucs)), 4) if aucs else None
        return out

    def save(self, path: str | Path) -> Path:
        """Write the folder atomically; a reader sees the old bank or the whole new one."""
        path = Path(path)
        with atomic_dir(path) as tmp:
            save_file({m: self.vectors[m] for m in self.methods}, str(tmp / "vectors.safetensors"),
                      metadata={"format": str(BANK_FORMAT)})
            info = dict(self.info, vectors_sha256=sha256_file(tmp / "vectors.safetensors"))
            (tmp / "bank.json").write_text(json.dumps(info, indent=1, sort_keys=True) + "\n")
        self.info, self.path = info, path
        return path

    @classmethod
    def load(cls, path: str | Path) -> "AttributeBank":
        path = Path(path)
        if not path.is_dir():
            raise BankError(f"{path}: no such bank folder (make one with `faceedit vectors`)")
        missing = [f for f in FILES if not (path / f).is_file()]
        if missing:
            raise BankError(f"{path}: incomplete bank, missing {', '.join(missing)}")
        try:
            info = json.loads((path / "bank.json").read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise BankError(f"{path / 'bank.json'}: not valid JSON ({e}); rebuild the bank with "
                            "`faceedit vectors`") from None
        if not isinstance(info, dict):
            raise BankError(f"{path / 'bank.json'}: expected a JSON object, got {type(info).__name__}")
        if info.get("format") != BANK_FORMAT:
            raise BankError(f"{path}/bank.json: format {info.get('format')!r}, expected {BANK_FORMAT}")
        if sha256_file(path / "vectors.safetensors") != info.get("vectors_sha256"):
            raise BankError(f"{path}/vectors.safetensors does not match the hash in bank.json")
        vectors = load_file(str(path / "vectors.safetensors"))
        want = (len(ATTRIBUTES), int(info["latent_dim"]))
        for m in info["methods"]:
            if m not in vectors or tuple(vectors[m].shape) != want:
                got = tuple(vectors[m].shape) if m in vectors else "missing"
                raise BankError(f"{path}/vectors.safetensors: {m!r} is {got}, expected {want}")
        return cls(vectors, info, path)


# ---------------------------------------------------------------------------- building

@torch.no_grad()
def encode_rows(model: torch.nn.Module, cache: Cache, rows: np.ndarray, batch_size: int = 256,
                progress: bool = True, desc: str = "encode",
                on_batch: Callable[[np.ndarray, np.ndarray], None] | None = None) -> np.ndarray:
    """Encoder means of the given cache rows: (N, D) float32, in the order of `rows`.

    on_batch(mu (B, D), labels (B, 40)) is called with every batch (the streaming cell sums).
    """
    model.eval()
    out = []
    for i in tqdm(range(0, len(rows), batch_size), desc=desc, unit="batch", disable=not progress):
        idx = rows[i:i + batch_size]
        mu = model.encode(to_float(cache.images[idx]))[0].numpy()  # (B, 3, S, S) -> (B, D)
        if on_batch is not None:
            on_batch(mu, cache.labels[idx])
        out.append(mu)
    D = int(model.config.latent_dim)
    return np.concatenate(out) if out else np.zeros((0, D), np.float32)


def build_bank(model: torch.nn.Module, cache: Cache, config: BankConfig = BankConfig(),
               bundle_hash: str = "", progress: bool = True) -> AttributeBank:
    """Encode the train split, compute every attribute's vector by every method, score them on val.

    model: anything with `.config.image_size`, `.config.latent_dim` and `encode(x) -> (mu, logvar)`
    (the VAE, or the PCA baseline). `bank.timing` gives the seconds of each stage.
    """
    size = int(model.config.image_size)
    if size != cache.size:
        raise ValueError(f"{cache.root}: cache of {cache.size} px faces, but the model takes {size} px")
    groups = confounder_sets(config.confounders)
    train, held = cache.indices(config.split), cache.indices(config.eval_split)
    if len(train) == 0:
        raise ValueError(f"{cache.root}: the {config.split!r} split is empty")
    stats = V.CellStats(groups, int(model.config.latent_dim))
    clock = [time.perf_counter()]
    mu = encode_rows(model, cache, train, config.batch_size, progress, config.split, stats.update)  # (N, D)
    mu_val = encode_rows(model, cache, held, config.batch_size, progress, config.eval_split)
    labels, labels_val = cache.labels[train], cache.labels[held]
    clock.append(time.perf_counter())
    balancings, records = _balance_all(stats, config)
    vectors = {"naive": np.stack([V.naive_from_cells(balancings[a].cells) for a in ATTRIBUTES]),
               "balanced": np.stack([balancings[a].vector() for a in ATTRIBUTES])}  # (40, D) each
    clock.append(time.perf_counter())
    removed = confounder_sets(config.projected_out, V.default_projected_out)
    vectors.update(_linear_vectors(mu, labels, vectors["naive"], removed, balancings, config.C))
    vectors = {m: vectors[m] for m in METHODS}
    clock.append(time.perf_counter())
    for a in ATTRIBUTES:
        i = attribute_index(a)
        records[a]["projected_out"] = list(removed[a])
        records[a]["norm"] = {m: _r(np.linalg.norm(vectors[m][i])) for m in METHODS}
        records[a]["auc"] = {m: _auc(labels_val[:, i], mu_val @ vectors[m][i]) for m in METHODS}
    info = {
        "format": BANK_FORMAT,
        "methods": list(METHODS),
        "attributes": list(ATTRIBUTES),
        "latent_dim": int(mu.shape[1]),
        "settings": asdict(config),
        "source": {"bundle_hash": bundle_hash, "model_digest": weights_digest(model), "cache_hash": cache.hash,
                   "faces": {config.split: len(train), config.eval_split: len(held)}},
        "per_attribute": records,
        "capped_vectors": [a for a in ATTRIBUTES if records[a]["capped"]],
        "cosine": {m: [[_r(c) for c in row] for row in V.cosine_matrix(vectors[m])] for m in METHODS},
    }
    info = json.loads(json.dumps(info))  # JSON values only (tuples -> lists), as load() returns them
    bank = AttributeBank({m: torch.from_numpy(vectors[m]).float() for m in METHODS}, info)
    clock.append(time.perf_counter())
    stages = ("encode", "naive_balanced", "projection_boundary", "auc_cosine")
    bank.timing = {s: round(b - a, 2) for s, a, b in zip(stages, clock, clock[1:])}
    return bank


def _balance_all(stats: V.CellStats, config: BankConfig) -> tuple[dict[str, V.Balancing], dict[str, dict]]:
    """Every attribute's Balancing and its bank.json record; its warnings are shown and recorded."""
    balancings, records = {}, {}
    for a in ATTRIBUTES:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", V.TinyCellWarning)
            warnings.simplefilter("always", V.EmptyCellWarning)
            balancings[a] = V.balancing(stats.cells(a), config.cap, config.empty_cells, config.tiny_cell)
        for w in caught:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        tiny = [str(w.message) for w in caught if issubclass(w.category, V.TinyCellWarning)]
        records[a] = _record(balancings[a], tiny)
    return balancings, records


def _linear_vectors(mu: np.ndarray, labels: np.ndarray, naive: np.ndarray, removed: dict[str, tuple[str, ...]],
                    balancings: dict[str, V.Balancing], C: float) -> dict[str, np.ndarray]:
    """projection (naive minus the span of the `removed` attributes' naive vectors), boundary
    (balancing weights) and boundary_plain for every attribute: (40, D) each."""
    out: dict[str, list[np.ndarray]] = {"projection": [], "boundary": [], "boundary_plain": []}
    for a in ATTRIBUTES:
        i, conf = attribute_index(a), [attribute_index(c) for c in removed[a]]
        length, y = np.linalg.norm(naive[i]), labels[:, i]
        out["projection"].append(V.projection_vector(naive[i], naive[conf]))
        out["boundary"].append(V.boundary_vector(mu, y, balancings[a].row_weights(labels), length, C))
        out["boundary_plain"].append(V.boundary_vector(mu, y, None, length, C))
    return {m: np.stack(v) for m, v in out.items()}


def build_bank_folder(bundle: str | Path, cache: str | Path, out: str | Path,
                      config: BankConfig = BankConfig(), progress: bool = True) -> AttributeBank:
    """`faceedit vectors` and the main job's vectors stage: the bank of a bundle's model on a cache,
    written to the folder `out` (atomically)."""
    bundle = load_bundle(bundle)
    bank = build_bank(bundle.model, Cache.open(cache), config, bundle_hash=bundle_digest(bundle.path),
                      progress=progress)
    bank.save(out)
    return bank


def bundle_digest(path: str | Path) -> str:
    """A bundle folder's identity: sha256 of its config.json, which records its weights' sha256."""
    return sha256_file(Path(path) / "config.json")


def _r(x: float) -> float:
    """Round for the json: 8 significant digits survive, float noise beyond them does not."""
    return float(f"{float(x):.8g}")


def _auc(y: np.ndarray, scores: np.ndarray) -> float | None:
    """ROC AUC of scores as a classifier of y; None where y has a single class (undefined)."""
    auc = auc_per_attribute(np.asarray(scores)[:, None], np.asarray(y)[:, None])[0] if len(y) else np.nan
    return _r(auc) if np.isfinite(auc) else None


def _record(bal: V.Balancing, tiny: list[str]) -> dict:
    return {
        "confounders": list(bal.cells.names[1:]),
        "cells": [dict(c, factor=_r(c["factor"])) for c in bal.describe()],
        "ess": {side: _r(n) for side, n in bal.ess.items()},
        "capped": bool(bal.capped.any()),
        "dropped_cells": bal.dropped,
        "tiny_cells": tiny,
    }
