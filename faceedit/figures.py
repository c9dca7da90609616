"""Image grids written as PNG (atomically): training figures, `faceedit sample`, `faceedit reconstruct`."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from faceedit.files import atomic_write_bytes


def grid(images: torch.Tensor, ncol: int | None = None, pad: int = 2) -> torch.Tensor:
    """(N, 3, H, W) in [0, 1] -> one image (3, rows*(H+pad)+pad, ncol*(W+pad)+pad), white gaps,
    row-major; ncol defaults to ceil(sqrt(N))."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"grid: expected images of shape (N, 3, H, W), got {tuple(images.shape)}")
    N, _, H, W = images.shape
    ncol = ncol or math.ceil(math.sqrt(N))
    nrow = math.ceil(N / ncol)
    out = torch.ones(3, nrow * (H + pad) + pad, ncol * (W + pad) + pad)
    for i, img in enumerate(images.detach().float().cpu()):
        r, c = divmod(i, ncol)
        top, left = pad + r * (H + pad), pad + c * (W + pad)
        out[:, top: top + H, left: left + W] = img.clamp(0, 1)
    return out


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) float in [0, 1] -> (H, W, 3) uint8, rounded."""
    return image.detach().float().cpu().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy()


def save_png(path: str | Path, image: torch.Tensor) -> Path:
    """Write one (3, H, W) image in [0, 1] as a PNG, atomically."""
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"save_png: expected an image of shape (3, H, W), got {tuple(image.shape)}")
    buf = io.BytesIO()
    Image.fromarray(to_uint8(image)).save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)
