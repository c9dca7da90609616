"""The attribute bank (faceedit/bank.py) end to end: a tiny untrained VAE on a tiny cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from faceedit import vectors as V
from faceedit.attributes import ATTRIBUTES, attribute_index
from faceedit.bank import METHODS, AttributeBank, BankConfig, BankError, build_bank, confounder_sets, encode_rows
from faceedit.bundle import weights_digest
from faceedit.cache import Cache, write_arrays
from faceedit.model import VAE, VAEConfig

SMILE, MALE = attribute_index("Smiling"), attribute_index("Male")
pytestmark = pytest.mark.filterwarnings("ignore::faceedit.vectors.TinyCellWarning")


def write_tiny_cache(root: Path, n: int = 240, size: int = 16, seed: int = 0) -> Cache:
    """A cache folder in the format of faceedit/cache.py whose pictures depend on their labels:
    the top half brightens with Smiling, the red channel with Male (correlated: smiles mostly female)."""
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, len(ATTRIBUTES))) < 0.5).astype(np.int8)
    labels[:, SMILE] = rng.random(n) < np.where(labels[:, MALE] == 1, 0.3, 0.7)
    images = rng.normal(0.4, 0.1, size=(n, 3, size, size))
    images[:, :, : size // 2] += 0.3 * labels[:, SMILE, None, None, None]
    images[:, 0] += 0.3 * labels[:, MALE, None, None]
    pixels = (np.clip(images, 0, 1) * 255).astype(np.uint8)
    val, test = int(0.85 * n) - int(0.7 * n), n - int(0.85 * n)  # 70% train, 15% val, 15% test
    return Cache.open(write_arrays(root, pixels, labels, f"tiny-{seed}", val=val, test=test, source="test"))


def tiny_vae(size: int = 16) -> VAE:
    torch.manual_seed(0)
    return VAE(VAEConfig(image_size=size, latent_dim=8, channels=(8, 16), blocks=0, groups=4)).eval()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("bank")
    cache, model = write_tiny_cache(root / "cache"), tiny_vae()
    bank = build_bank(model, cache, BankConfig(batch_size=64), bundle_hash="b" * 64, progress=False)
    bank.save(root / "bank")
    return root, cache, model, bank


def test_bank_contents(built):
    root, cache, model, bank = built
    assert bank.methods == METHODS and bank.attributes == ATTRIBUTES and bank.dim == 8
    for m in METHODS:
        assert bank.matrix(m).shape == (40, 8) and bank.matrix(m).dtype == torch.float32
    train = cache.indices("train")
    info = bank.info["per_attribute"]
    assert info["Smiling"]["confounders"] == ["Male", "Mouth_Slightly_Open"]
    assert info["Eyeglasses"]["confounders"] == ["Male"]
    # the projection removes Male from a smile, not the open mouth that is part of it
    assert info["Smiling"]["projected_out"] == info["Mouth_Slightly_Open"]["projected_out"] == ["Male"]
    assert info["Male"]["projected_out"] == ["Mouth_Slightly_Open", "Smiling"]
    assert info["Eyeglasses"]["projected_out"] == ["Male"]
    assert sum(c["count"] for c in info["Smiling"]["cells"]) == len(train)
    assert bank.info["source"] == {"bundle_hash": "b" * 64, "model_digest": weights_digest(model),
                                   "cache_hash": "tiny-0",
                                   "faces": {"train": len(train), "val": len(cache.indices("val"))}}
    # The vectors are the ones vectors.py computes from the encoded train split.
    mu = encode_rows(model, cache, train, progress=False)
    labels = cache.labels[train]
    np.testing.assert_allclose(bank.vector("Smiling", "naive"), V.naive_vector(mu, labels, "Smiling"), rtol=1e-5)
    np.testing.assert_allclose(bank.vector("Smiling", "balanced"), V.balanced_vector(mu, labels, "Smiling")[0],
                               rtol=1e-5, atol=1e-7)
    for a in ("Smiling", "Male", "Bald"):
        naive = bank.vector(a, "naive").double()
        conf = torch.stack([bank.vector(c, "naive").double() for c in info[a]["projected_out"]])
        proj = bank.vector(a, "projection").double()
        assert (conf @ proj).abs().max() < 1e-4 * naive.norm() ** 2
        for m in ("boundary", "boundary_plain"):
            assert bank.vector(a, m).norm().item() == pytest.approx(naive.norm().item(), rel=1e-5)
        assert info[a]["norm"]["naive"] == pytest.approx(naive.norm().item(), rel=1e-6)
    # White's check: z . v separates the held-out faces for the planted attributes.
    assert info["Smiling"]["auc"]["balanced"] > 0.7 and info["Male"]["auc"]["naive"] > 0.7
    for a in ATTRIBUTES:
        for m in METHODS:
            auc = info[a]["auc"][m]
            assert auc is None or 0.0 <= auc <= 1.0
    cos = bank.cosine("naive")
    np.testing.assert_allclose(np.diag(cos), 1.0, atol=1e-6)
    np.testing.assert_allclose(cos, cos.T)
    assert bank.info["capped_vectors"] == []


def test_bank_round_trip_and_byte_identical_rebuild(built, tmp_path):
    root, cache, model, bank = built
    loaded = AttributeBank.load(root / "bank")
    assert loaded.path == root / "bank" and loaded.info == bank.info
    for m in METHODS:
        assert torch.equal(loaded.matrix(m), bank.matrix(m))
    again = build_bank(model, cache, BankConfig(batch_size=64), bundle_hash="b" * 64, progress=False)
    again.save(tmp_path / "again")
    for name in ("vectors.safetensors", "bank.json"):
        assert (tmp_path / "again" / name).read_bytes() == (root / "bank" / name).read_bytes()
    # (Another setting gives another bank: tests/test_edit_cli.py builds this one with --cap 1.)


def test_the_projection_removes_what_projected_out_names(built):
    _, cache, model, bank = built
    other = build_bank(model, cache, BankConfig(batch_size=64, projected_out=("Smiling=Male,Mouth_Slightly_Open",)),
                       progress=False)
    assert other.info["per_attribute"]["Smiling"]["projected_out"] == ["Male", "Mouth_Slightly_Open"]
    assert other.info["per_attribute"]["Bald"]["projected_out"] == ["Male"]  # unnamed: the default
    def cos(a, b):
        return float(torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=0))

    for c in ("Male", "Mouth_Slightly_Open"):
        assert abs(cos(bank.vector(c, "naive"), other.vector("Smiling", "projection"))) < 1e-5
    # the default keeps the mouth's direction in the smile
    assert abs(cos(bank.vector("Mouth_Slightly_Open", "naive"), bank.vector("Smiling", "projection"))) > 1e-3
    torch.testing.assert_close(other.vector("Bald", "projection"), bank.vector("Bald", "projection"))
    with pytest.raises(ValueError, match="unknown attribute 'Smile'"):
        build_bank(model, cache, BankConfig(projected_out=("Smile=Male",)), progress=False)


def test_bank_names_are_checked(built):
    bank = built[3]
    with pytest.raises(ValueError, match=r"unknown attribute 'smiling'.*Smiling"):
        bank.vector("smiling", "naive")
    with pytest.raises(ValueError, match=r"unknown method 'svm'.*naive, balanced, projection, boundary"):
        bank.vector("Smiling", "svm")
    with pytest.raises(ValueError, match="unknown method"):
        bank.cosine("svm")


def test_bank_load_errors(built, tmp_path):
    root = built[0]
    with pytest.raises(BankError, match="no such bank folder"):
        AttributeBank.load(tmp_path / "nothing")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "bank.json").write_bytes((root / "bank" / "bank.json").read_bytes())
    with pytest.raises(BankError, match="missing vectors.safetensors"):
        AttributeBank.load(broken)
    data = bytearray((root / "bank" / "vectors.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (broken / "vectors.safetensors").write_bytes(bytes(data))
    with pytest.raises(BankError, match="does not match the hash"):
        AttributeBank.load(broken)


def test_empty_cell_in_build_names_it(tmp_path):
    cache = write_tiny_cache(tmp_path / "cache", n=120, seed=3)
    # Balance Smiling over every other attribute's worth of cells: with 120 faces some cell is empty.
    spec = ("Smiling=Male,Young,Bald,Eyeglasses,Bangs,Big_Nose",)
    with pytest.raises(V.EmptyCellError, match=r"balanced vector for Smiling: cell \(Smiling=.*\) has 0 faces"):
        build_bank(tiny_vae(), cache, BankConfig(confounders=spec, empty_cells="error"), progress=False)
    # The default drops the strata lacking one side, says so, and records which cells went.
    with pytest.warns(V.EmptyCellWarning, match=r"balanced vector for Smiling: empty cell\(s\) \(Smiling="):
        bank = build_bank(tiny_vae(), cache, BankConfig(confounders=spec), progress=False)
    record = bank.info["per_attribute"]["Smiling"]
    dropped = [c for c in record["cells"] if not c["kept"]]
    assert dropped and any(c["count"] == 0 for c in dropped) and len(record["dropped_cells"]) == len(dropped)
    assert all(c["factor"] == 0 for c in dropped)


def test_confounder_sets():
    assert confounder_sets()["Smiling"] == ("Male", "Mouth_Slightly_Open")
    assert confounder_sets(("none",))["Smiling"] == ()
    shared = confounder_sets(("Male", "Young"))
    assert shared["Smiling"] == ("Male", "Young") and shared["Male"] == ("Young",)
    mixed = confounder_sets(("Smiling=Male", "Bald="))
    assert mixed["Smiling"] == ("Male",) and mixed["Bald"] == () and mixed["Eyeglasses"] == ("Male",)
    with pytest.raises(ValueError, match=r"'Smiley=Male'.*unknown attribute 'Smiley'"):
        confounder_sets(("Smiley=Male",))
    with pytest.raises(ValueError, match="unknown attribute 'Mael'"):
        confounder_sets(("Smiling=Mael",))
