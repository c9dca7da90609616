"""A trained model as a folder that rebuilds it without code from the run that made it:

    model.safetensors   the weights (safetensors: no pickle, nothing executes on load)
    config.json         {"format", "kind", "config": the model's dataclass fields, "weights":
                         {"sha256", "tensors"}, plus the caller's meta: e.g. "cache" (manifest
                         hash), "training" (settings), "metrics" (final figures)}

A kind ("vae"; the audit's judge adds "judge") maps to a frozen config dataclass and a module class
built as `Model(config)` (nanoGPT's `GPTConfig(**checkpoint['model_args'])`, without the pickle).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from faceedit.config import config_from_dict as _config_from_dict
from faceedit.config import config_to_dict
from faceedit.files import atomic_dir, sha256_file
from faceedit.model import VAE, VAEConfig
from faceedit.pca import PCA, PCAConfig

BUNDLE_FORMAT = 1
WEIGHTS, CONFIG = "model.safetensors", "config.json"
RESERVED = ("format", "kind", "config", "weights")

_KINDS: dict[str, tuple[type, type[nn.Module]]] = {}
# Kinds whose module registers itself on import: loading such a bundle imports it first.
_LAZY = {"judge": "faceedit.judge", "cvae": "faceedit.cvae"}


class BundleError(ValueError):
    """A bundle folder that is missing, truncated, inconsistent or of an unknown kind."""


@dataclass(frozen=True)
class Bundle:
    model: nn.Module  # eval mode, on CPU
    config: Any  # the kind's config dataclass
    meta: dict  # the whole config.json
    path: Path

    @property
    def kind(self) -> str:
        return str(self.meta["kind"])


def register_kind(kind: str, config_cls: type, model_cls: type[nn.Module]) -> None:
    """Make `kind` saveable and loadable: `model_cls(config_cls(**fields))` rebuilds the model and
    the model keeps its config as `.config`."""
    if not dataclasses.is_dataclass(config_cls):
        raise TypeError(f"register_kind({kind!r}): {config_cls!r} is not a dataclass")
    _KINDS[kind] = (config_cls, model_cls)


def config_from_dict(cls: type, values: dict[str, Any], where: str = "config") -> Any:
    """Rebuild a config dataclass; an unknown or missing field, or a bad value, is a BundleError."""
    return _config_from_dict(cls, values, where, error=BundleError)


def _kind_of(model: nn.Module) -> str:
    for kind, (_, model_cls) in _KINDS.items():
        if type(model) is model_cls:
            return kind
    raise BundleError(f"save_bundle: {type(model).__name__} is not a registered kind "
                      f"(registered: {sorted(_KINDS)}); call register_kind first")


def save_bundle(path: str | Path, model: nn.Module, meta: dict[str, Any] | None = None) -> Path:
    """Write model + config (+ meta, JSON values) as a bundle folder at `path`, atomically."""
    meta = dict(meta or {})
    clash = [k for k in RESERVED if k in meta]
    if clash:
        raise ValueError(f"save_bundle: meta may not set {clash} (written by save_bundle itself)")
    kind = _kind_of(model)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    path = Path(path)
    with atomic_dir(path) as tmp:
        save_file(tensors, str(tmp / WEIGHTS), metadata={"kind": kind})
        doc = {"format": BUNDLE_FORMAT, "kind": kind, "config": config_to_dict(model.config),
               "weights": {"sha256": sha256_file(tmp / WEIGHTS), "tensors": len(tensors)}, **meta}
        (tmp / CONFIG).write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    return path


def _read_config(path: Path) -> dict[str, Any]:
    file = path / CONFIG
    if not file.is_file():
        raise BundleError(f"{file}: missing (a bundle is a folder with {WEIGHTS} and {CONFIG})")
    try:
        doc = json.loads(file.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleError(f"{file}: not valid JSON ({e})") from e
    if not isinstance(doc, dict):
        raise BundleError(f"{file}: expected a JSON object, got {type(doc).__name__}")
    if doc.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{file}: format {doc.get('format')!r}, expected {BUNDLE_FORMAT}")
    for key, kind in (("kind", str), ("config", dict), ("weights", dict)):
        if not isinstance(doc.get(key), kind):
            raise BundleError(f"{file}: field {key!r} missing or not a {kind.__name__}")
    return doc


def _registered(kind: str, file: Path) -> tuple[type, type[nn.Module]]:
    if kind not in _KINDS and kind in _LAZY:
        importlib.import_module(_LAZY[kind])
    if kind not in _KINDS:
        raise BundleError(f"{file}: unknown kind {kind!r} (known: {sorted(set(_KINDS) | set(_LAZY))})")
    return _KINDS[kind]


def _read_weights(path: Path, expected: dict[str, Any]) -> dict[str, torch.Tensor]:
    file = path / WEIGHTS
    if not file.is_file():
        raise BundleError(f"{file}: missing")
    digest = sha256_file(file)
    if digest != expected.get("sha256"):
        raise BundleError(f"{file}: sha256 {digest[:12]}... differs from the one in {CONFIG} "
                          f"({str(expected.get('sha256'))[:12]}...): truncated, corrupted or replaced")
    try:
        return load_file(str(file), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise BundleError(f"{file}: not a readable safetensors file ({e})") from e


def load_bundle(path: str | Path) -> Bundle:
    """Rebuild the model of a bundle folder (eval mode, CPU) from its two files alone."""
    path = Path(path)
    if not path.is_dir():
        raise BundleError(f"{path}: no such bundle folder (make one with `faceedit train`)")
    doc = _read_config(path)
    config_cls, model_cls = _registered(doc["kind"], path / CONFIG)
    config = config_from_dict(config_cls, doc["config"], where=f"{path / CONFIG} field 'config'")
    model = model_cls(config)
    tensors = _read_weights(path, doc["weights"])
    state = model.state_dict()
    missing, unexpected = sorted(set(state) - set(tensors)), sorted(set(tensors) - set(state))
    wrong = [f"{k}: {tuple(tensors[k].shape)} vs {tuple(v.shape)}" for k, v in state.items()
             if k in tensors and tensors[k].shape != v.shape]
    if missing or unexpected or wrong:
        raise BundleError(f"{path / WEIGHTS}: does not fit the {doc['kind']} of {CONFIG}: missing "
                          f"{missing[:5]}, unexpected {unexpected[:5]}, shape (file vs config) {wrong[:5]}")
    model.load_state_dict(tensors)
    return Bundle(model.eval(), config, doc, path)


def weights_digest(model: nn.Module) -> str:
    """sha256 over a model's tensors (names, shapes, bytes): equal digests, equal weights."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(str(tuple(v.shape)).encode())
        h.update(v.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


register_kind("vae", VAEConfig, VAE)
register_kind("pca", PCAConfig, PCA)
