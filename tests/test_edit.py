"""Latent edits, interpolation and the strip picture (faceedit/edit.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from faceedit.attributes import ATTRIBUTES, attribute_index
from faceedit.bank import METHODS, AttributeBank
from faceedit.edit import analogy, edit, image_grid, lerp, slerp, strip


def random_bank(D: int = 6, seed: int = 0) -> AttributeBank:
    g = torch.Generator().manual_seed(seed)
    vectors = {m: torch.randn(len(ATTRIBUTES), D, generator=g) for m in METHODS}
    return AttributeBank(vectors, {"methods": list(METHODS), "attributes": list(ATTRIBUTES), "latent_dim": D})


def test_strength_zero_is_exact_identity():
    bank = random_bank()
    z = torch.randn(4, 6)
    z[0, 0] = -0.0
    for method in METHODS:
        out = edit(z, {"Smiling": 0.0, "Eyeglasses": 0}, bank, method)
        assert out.dtype == z.dtype and torch.equal(out, z)
        assert out.data_ptr() != z.data_ptr()  # a copy: the caller's z is never touched
    assert torch.equal(edit(z[1], {}, bank, "naive"), z[1])


def test_edit_adds_strength_times_vector():
    bank = random_bank()
    z = torch.randn(3, 6)
    out = edit(z, {"Smiling": 1.5, "Eyeglasses": -1}, bank, "balanced")
    want = z + 1.5 * bank.vector("Smiling", "balanced") - bank.vector("Eyeglasses", "balanced")
    torch.testing.assert_close(out, want)
    one = edit(z[0], {"Smiling": 1.0}, bank, "projection")  # (D,) in, (D,) out
    assert one.shape == (6,)
    torch.testing.assert_close(one - z[0], bank.vector("Smiling", "projection"))


def test_edit_rejects_bad_names_and_values():
    bank = random_bank()
    z = torch.zeros(6)
    with pytest.raises(ValueError, match=r"unknown attribute 'Smile'.*Smiling.*Young"):
        edit(z, {"Smile": 1.0}, bank, "balanced")
    with pytest.raises(ValueError, match=r"unknown method 'balance'.*naive, balanced, projection, boundary"):
        edit(z, {"Smiling": 1.0}, bank, "balance")
    with pytest.raises(ValueError, match="unknown method 'svm'"):
        edit(z, {}, bank, "svm")
    with pytest.raises(ValueError, match="finite"):
        edit(z, {"Smiling": float("nan")}, bank, "naive")
    with pytest.raises(ValueError, match=r"D = 6"):
        edit(torch.zeros(2, 5), {"Smiling": 1.0}, bank, "naive")


def test_slerp_endpoints_and_norm():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(128, generator=g, dtype=torch.float64), torch.randn(128, generator=g, dtype=torch.float64)
    b = b / b.norm() * a.norm()  # equal norms
    torch.testing.assert_close(slerp(a, b, 0.0), a)
    torch.testing.assert_close(slerp(a, b, 1.0), b)
    for t in (0.1, 0.25, 0.5, 0.9):
        assert slerp(a, b, t).norm().item() == pytest.approx(a.norm().item(), rel=1e-12)
        assert lerp(a, b, t).norm().item() < a.norm().item()  # the straight line cuts inside the shell
    # The arc is traversed at constant speed: the angle to a grows linearly with t.
    angle = lambda u, v: torch.arccos(u @ v / u.norm() / v.norm()).item()  # noqa: E731
    assert angle(a, slerp(a, b, 0.3)) == pytest.approx(0.3 * angle(a, b), rel=1e-9)
    # Batches: one t for every row.
    A, B = torch.randn(5, 16, generator=g), torch.randn(5, 16, generator=g)
    out = slerp(A, B, 0.4)
    assert out.shape == (5, 16) and out.dtype == A.dtype
    torch.testing.assert_close(out[2], slerp(A[2], B[2], 0.4))


def test_slerp_near_parallel_and_opposite():
    a = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    b = a * (1 + 1e-12)
    out = slerp(a, b, 0.5)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, lerp(a, b, 0.5))
    torch.testing.assert_close(slerp(a, 2 * a, 0.5), 1.5 * a)  # parallel, different norms
    with pytest.raises(ValueError, match="opposite"):
        slerp(a, -a, 0.5)
    with pytest.raises(ValueError, match="shape"):
        slerp(a, torch.zeros(4, dtype=torch.float64), 0.5)


def test_lerp_and_analogy():
    a, b, c = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]), torch.tensor([2.0, 2.0])
    torch.testing.assert_close(lerp(a, b, 0.25), torch.tensor([0.75, 0.25]))
    torch.testing.assert_close(analogy(a, b, c), torch.tensor([3.0, 1.0]))
    torch.testing.assert_close(analogy(a, a, c), c)  # no difference: c itself


class Painter(torch.nn.Module):
    """decode(z) paints a 4x4 face whose red channel is z[0] (enough to check the strip's layout)."""

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        x = torch.zeros(len(z), 3, 4, 4)
        x[:, 0] = z[:, :1, None].clamp(0, 1)
        return x


def test_strip_layout_and_content():
    bank = random_bank()
    bank.vectors["naive"][attribute_index("Smiling"), 0] = 0.25
    bank.vectors["balanced"][attribute_index("Smiling"), 0] = -0.25
    z = torch.full((2, 6), 0.5)
    img = strip(Painter(), z, bank, "Smiling", strengths=(-2, 0, 2), scale=3)
    sheet = np.asarray(img)
    # 2 faces x 2 methods = 4 rows of 3 faces of 12 px each, plus labels and padding.
    assert img.width > 3 * 12 and img.height > 4 * 12
    reds = sorted({int(v) for v in np.unique(sheet[..., 0])})
    assert 0 in reds and 255 in reds  # naive +2 saturates red: 0.5 + 2 * 0.25 = 1
    one = strip(Painter(), z[0], bank, "Smiling", scale=1)
    assert one.height < img.height
    with_photo = strip(Painter(), z[0], bank, "Smiling", scale=1, originals=torch.ones(3, 4, 4))
    assert with_photo.width == one.width + 4 + 2 and with_photo.height == one.height


def test_image_grid_keeps_pixels():
    x = np.zeros((3, 2, 2), np.float32)
    x[1, 0, 1] = 1.0
    img = image_grid([[x]], scale=2, pad=0)
    assert img.size == (4, 4)
    px = np.asarray(img)
    assert (px[0:2, 2:4, 1] == 255).all() and (px[2:4, :, 1] == 0).all()
