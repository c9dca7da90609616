"""The real-face model that ships inside the package: a bundle and its attribute bank.

Trained by the main job on 19,000 real CelebA faces (64 px), stored with fp16 weights; its
config.json ("shipped") records the command, commit, cache hash and validation PSNR, and
scripts/ship_model.py remakes it from a run. CelebA is for non-commercial research use only, and so
is this model (README, "The shipped real-face model").
"""

from __future__ import annotations

import json
from pathlib import Path

SHIPPED = "celeba64"  # faceedit/data/<SHIPPED>/{bundle,bank}
SAMPLE_FILES = 200  # val files whose reconstruction PSNR config.json records (tests recompute it)
LABEL = "real faces (CelebA 64 px, shipped with faceedit; non-commercial use)"


def shipped_paths() -> tuple[Path, Path]:
    """(bundle folder, bank folder) of the shipped model; FileNotFoundError naming what is missing."""
    root = Path(__file__).with_name("data") / SHIPPED
    bundle, bank = root / "bundle", root / "bank"
    for path, what in ((bundle / "config.json", "bundle"), (bank / "bank.json", "bank")):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: the shipped real-face {what} is missing from this "
                                    "installation (reinstall faceedit, or give --bundle and --bank)")
    return bundle, bank


def model_or_shipped(bundle: str | Path | None, bank: str | Path | None) -> tuple[Path, Path]:
    """The (bundle, bank) a command was given, or the shipped model's when neither was; one alone is
    refused (a bank belongs to the model it was built from)."""
    if bundle is None and bank is None:
        return shipped_paths()
    if bundle is None or bank is None:
        raise ValueError("give both --bundle and --bank (a model and the bank built from it), or "
                         "neither for the real-face model shipped with faceedit")
    return Path(bundle), Path(bank)


def shipped_record() -> dict:
    """How the shipped model was made: its config.json's "shipped" section."""
    bundle, _ = shipped_paths()
    return json.loads((bundle / "config.json").read_text())["shipped"]
