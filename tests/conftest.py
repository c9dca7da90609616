"""Shared fixtures. Real CelebA faces are found at ../shared/data/celeba (or $FACEEDIT_CELEBA)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("FACEEDIT_SHARED_DATA", REPO.parent / "shared" / "data"))
REAL_CELEBA = Path(os.environ.get("FACEEDIT_CELEBA", SHARED_DATA / "celeba"))
REAL_FACES = SHARED_DATA / "real_faces"


@pytest.fixture(scope="session")
def real_celeba() -> Path:
    """The real CelebA folder; tests that need it skip, saying why, where it is absent."""
    if not (REAL_CELEBA / "list_attr_celeba.txt").is_file():
        pytest.skip(f"real CelebA not found at {REAL_CELEBA} (set FACEEDIT_CELEBA to a copy)")
    return REAL_CELEBA


@pytest.fixture(scope="session")
def real_faces() -> list[Path]:
    """Three face photographs of different sizes (no labels)."""
    photos = sorted(REAL_FACES.glob("*.jpg"))
    if not photos:
        pytest.skip(f"no photos found at {REAL_FACES}")
    return photos
