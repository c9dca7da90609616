"""Bundles: a round trip rebuilds the same model; damaged or mismatched files are clear errors."""

import json
import shutil

import pytest
import torch
from safetensors.torch import save_file

import faceedit
from faceedit.bundle import BundleError, load_bundle, register_kind, save_bundle, weights_digest
from faceedit.model import VAE, VAEConfig
from faceedit.pca import PCA, PCAConfig

CFG = VAEConfig(image_size=32, latent_dim=6, channels=(8, 16), groups=4, blocks=1, norm="group")


@pytest.fixture()
def bundle(tmp_path):
    torch.manual_seed(0)
    model = VAE(CFG).eval()
    model.log_sigma.fill_(-2.5)
    path = save_bundle(tmp_path / "b", model, {"cache": "sha256:abc", "metrics": {"val_psnr": 20.0}})
    return path, model


def test_round_trip_gives_identical_outputs(bundle):
    path, model = bundle
    b = faceedit.load_bundle(path)
    assert b.kind == "vae" and b.config == CFG and not b.model.training
    assert b.meta["cache"] == "sha256:abc" and b.meta["metrics"]["val_psnr"] == 20.0
    assert weights_digest(b.model) == weights_digest(model)
    x = torch.rand(3, 3, 32, 32)
    assert torch.equal(b.model.reconstruct(x), model.reconstruct(x))
    g = lambda: torch.Generator().manual_seed(5)
    assert torch.equal(b.model.sample(4, g()), model.sample(4, g()))
    # the two files, and the marker that lets a later save replace the folder (faceedit/files.py)
    assert sorted(p.name for p in path.iterdir()) == [".faceedit", "config.json", "model.safetensors"]


def test_pca_is_a_bundle_kind_too(tmp_path):
    pca = PCA(PCAConfig(image_size=8, latent_dim=3))
    pca.components.copy_(torch.eye(3, 192))
    b = load_bundle(save_bundle(tmp_path / "p", pca))
    assert b.kind == "pca" and torch.equal(b.model.components, pca.components)


def test_truncated_weights_are_a_clear_error(bundle):
    path, _ = bundle
    data = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(BundleError, match="model.safetensors: sha256 .* truncated"):
        load_bundle(path)


def test_truncated_weights_with_matching_hash_still_fail_clearly(bundle):
    path, _ = bundle
    file = path / "model.safetensors"
    file.write_bytes(file.read_bytes()[:100])
    doc = json.loads((path / "config.json").read_text())
    from faceedit.files import sha256_file
    doc["weights"]["sha256"] = sha256_file(file)
    (path / "config.json").write_text(json.dumps(doc))
    with pytest.raises(BundleError, match="not a readable safetensors file"):
        load_bundle(path)


def test_weights_of_another_model_are_a_clear_error(bundle, tmp_path):
    path, _ = bundle
    other = VAE(VAEConfig(image_size=32, latent_dim=9, channels=(8, 16), groups=4, blocks=1, norm="group"))
    save_bundle(tmp_path / "other", other)
    shutil.copy(tmp_path / "other" / "model.safetensors", path / "model.safetensors")
    doc = json.loads((path / "config.json").read_text())
    doc["weights"]["sha256"] = json.loads((tmp_path / "other" / "config.json").read_text())["weights"]["sha256"]
    (path / "config.json").write_text(json.dumps(doc))
    with pytest.raises(BundleError, match=r"does not fit the vae .*shape.*encoder.head.weight: \(18, 1024\) vs \(12, 1024\)"):
        load_bundle(path)


def test_missing_tensor_is_a_clear_error(bundle):
    path, model = bundle
    tensors = {k: v.contiguous() for k, v in model.state_dict().items() if k != "log_sigma"}
    save_file(tensors, str(path / "model.safetensors"))
    doc = json.loads((path / "config.json").read_text())
    from faceedit.files import sha256_file
    doc["weights"]["sha256"] = sha256_file(path / "model.safetensors")
    (path / "config.json").write_text(json.dumps(doc))
    with pytest.raises(BundleError, match=r"missing \['log_sigma'\]"):
        load_bundle(path)


@pytest.mark.parametrize("edit,message", [
    (lambda d: "{not json", "config.json: not valid JSON"),
    (lambda d: {**d, "kind": "gan"}, "unknown kind 'gan'"),
    (lambda d: {**d, "format": 7}, "format 7, expected 1"),
    (lambda d: {**d, "config": {**d["config"], "depth": 3}}, r"unknown \['depth'\]"),
    (lambda d: {**d, "config": {k: v for k, v in d["config"].items() if k != "beta"}}, r"missing \['beta'\]"),
    (lambda d: {**d, "config": {**d["config"], "image_size": 30}}, "image_size=30"),
    (lambda d: [1, 2], "expected a JSON object"),
])
def test_bad_config_json_is_a_clear_error(bundle, edit, message):
    path, _ = bundle
    doc = json.loads((path / "config.json").read_text())
    new = edit(doc)
    (path / "config.json").write_text(new if isinstance(new, str) else json.dumps(new))
    with pytest.raises(BundleError, match=message):
        load_bundle(path)


def test_missing_folder_or_files(tmp_path, bundle):
    with pytest.raises(BundleError, match="no such bundle folder"):
        load_bundle(tmp_path / "nope")
    path, _ = bundle
    (path / "model.safetensors").unlink()
    with pytest.raises(BundleError, match="model.safetensors: missing"):
        load_bundle(path)


def test_save_refuses_unregistered_models_and_reserved_meta(tmp_path):
    with pytest.raises(BundleError, match="not a registered kind"):
        save_bundle(tmp_path / "x", torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="may not set"):
        save_bundle(tmp_path / "x", VAE(CFG), {"kind": "other"})
    assert not (tmp_path / "x").exists()


def test_register_kind_needs_a_dataclass():
    with pytest.raises(TypeError, match="not a dataclass"):
        register_kind("bad", dict, torch.nn.Linear)
