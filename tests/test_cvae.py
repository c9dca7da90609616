"""The conditional VAE: shapes, labels, the edit, the reversed gradient, training, its bundle."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from faceedit.attributes import ATTRIBUTES
from faceedit.bundle import load_bundle, weights_digest
from faceedit.cache import Cache, write_arrays
from faceedit.cvae import CVAE, CVAEConfig, CVAEObjective, CVAERecipe, cvae_loss, edit_labels
from faceedit.recipe import train_bundle
from faceedit.trainer import Batch, TrainConfig

TINY = CVAEConfig(image_size=16, latent_dim=4, channels=(8, 16), norm="none")
FAST = TrainConfig(epochs=4, max_minutes=0, batch_size=8, lr=3e-3, progress=False, threads=1,
                   device="cpu")


def labelled_cache(root: Path, n: int = 96, size: int = 16, seed: int = 0) -> Path:
    """Faces whose brightness is label 0 (Smiling here): a CVAE told the label can draw it."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, (n, 40))
    images = rng.integers(60, 120, (n, 3, size, size)).astype(np.uint8)
    smile = ATTRIBUTES.index("Smiling")
    images[labels[:, smile] == 1] += 100
    return write_arrays(root, images, labels, f"cvae-{seed}", val=16)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Cache:
    return Cache.open(labelled_cache(tmp_path_factory.mktemp("cvae")))


def test_shapes_and_subset_of_labels():
    model = CVAE(replace(TINY, labels=("Smiling", "Male")))
    labels = torch.zeros(5, 40)
    labels[:, ATTRIBUTES.index("Male")] = 1
    y = model.condition_of(labels)
    assert y.tolist() == [[-1.0, 1.0]] * 5  # CelebA order of the chosen subset, as +1 / -1
    x = torch.rand(5, 3, 16, 16)
    mu, logvar = model.encode(x, y)
    assert mu.shape == logvar.shape == (5, 4)
    assert model.decode(mu, y).shape == (5, 3, 16, 16)
    assert model.infer_labels(x).shape == (5, 2)
    with pytest.raises(ValueError, match=r"expected \(5, 2\)"):
        model.encode(x, torch.zeros(5, 40))
    with pytest.raises(ValueError, match="Smiles"):
        CVAEConfig(labels=("Smiles",))


def test_edit_with_labels_unchanged_is_the_reconstruction_and_changing_them_is_not():
    torch.manual_seed(0)
    model = CVAE(TINY).eval()
    x = torch.rand(3, 3, 16, 16)
    y = model.condition_of(torch.randint(0, 2, (3, 40)))
    mu = model.encode(x, y)[0]
    same = edit_labels(y, {"Smiling": 0.0}, model.config.condition)
    assert torch.equal(model.decode(mu, same), model.reconstruct(x, y))
    flipped = edit_labels(y, {"Smiling": 1.0}, model.config.condition)
    k = ATTRIBUTES.index("Smiling")
    assert torch.equal(flipped[:, k], y[:, k] + 2)  # strength 1 = one flip, -1 -> +1
    assert not torch.allclose(model.decode(mu, flipped), model.reconstruct(x, y))
    with pytest.raises(ValueError, match="not one of the model's conditioning labels"):
        edit_labels(y, {"Male": 1.0}, ("Smiling",))


def test_adversary_gradient_reaches_the_encoder_reversed():
    """The adversary learns to predict y from mu; mu receives -adversary x that gradient."""
    torch.manual_seed(0)
    config = replace(TINY, adversary=3.0)
    model = CVAE(config)
    x, y = torch.rand(4, 3, 16, 16), model.condition_of(torch.randint(0, 2, (4, 40)))
    out = model(x, y)
    grads = {}
    out.mu.register_hook(lambda g: grads.setdefault("mu", g))
    cvae_loss(x, y, out, config).adversary.backward()
    mu = out.mu.detach().requires_grad_()
    plain = torch.nn.functional.binary_cross_entropy_with_logits(
        model.adversary(mu), (y > 0).float(), reduction="sum") / 4
    (g_plain,) = torch.autograd.grad(plain, mu)
    assert torch.allclose(grads["mu"], -3.0 * g_plain, atol=1e-6)
    assert model.adversary[0].weight.grad.abs().sum() > 0
    assert model.head.weight.grad.abs().sum() > 0  # it reaches the encoder


def test_confuse_mode_trains_the_adversary_on_a_detached_code_and_the_encoder_on_held_weights():
    torch.manual_seed(0)
    config = replace(TINY, adversary=2.0, adversary_mode="confuse")
    model = CVAE(config)
    x, y = torch.rand(6, 3, 16, 16), model.condition_of(torch.randint(0, 2, (6, 40)))
    out = model(x, y)
    loss = cvae_loss(x, y, out, config)
    g_adv_from_conf = torch.autograd.grad(loss.confusion, model.adversary[0].weight, allow_unused=True,
                                          retain_graph=True)[0]
    assert g_adv_from_conf is None  # the confusion term never trains the adversary
    g_head_from_adv = torch.autograd.grad(loss.adversary, model.head.weight, allow_unused=True,
                                          retain_graph=True)[0]
    assert g_head_from_adv is None  # the adversary's own term never reaches the encoder
    assert torch.autograd.grad(loss.confusion, model.head.weight)[0].abs().sum() > 0
    torch.testing.assert_close(out.confusion_logits, out.adversary_logits)


def test_training_learns_the_label_and_round_trips_as_a_bundle(cache, tmp_path):
    # the unit-variance decoder weighs pixels lightly, so the KL term keeps brightness out of z and
    # the decoder must take it from y
    config = replace(TINY, adversary=1.0, decoder="fixed", labels=("Male", "Smiling"))
    result, _ = train_bundle(cache, tmp_path / "cvae", CVAERecipe(config), replace(FAST, epochs=8),
                             log_dir=tmp_path / "log")
    hist = result.history
    assert hist[-1]["val_total"] < hist[0]["val_total"]
    assert {"val_label_accuracy", "val_adversary_accuracy", "val_psnr"} <= set(hist[-1])
    bundle = load_bundle(tmp_path / "cvae")
    assert bundle.kind == "cvae" and bundle.config == config
    assert weights_digest(bundle.model) == weights_digest(result.model)
    assert bundle.meta["prior"]["fitted_on"] == "train"
    # the decoder uses Smiling: brightness (its only signal) follows the label for the same z
    model = bundle.model
    rows = cache.indices("val")[:8]
    x = torch.from_numpy(cache.images[rows]).float() / 255
    y = model.condition_of(torch.from_numpy(cache.labels[rows]))
    mu = model.encode(x, y)[0]
    k = config.condition.index("Smiling")
    up, down = y.clone(), y.clone()
    up[:, k], down[:, k] = 1.0, -1.0
    with torch.no_grad():
        assert (model.decode(mu, up).mean() - model.decode(mu, down).mean()) > 0.1
    # q(y | x) learned the one label the pixels show
    assert (model.infer_labels(x)[:, k] == y[:, k]).float().mean() >= 0.75


def test_objective_loss_through_a_wrapper(cache):
    """The loop calls the loss through a wrapped model (DDP keeps the bare one in .module)."""
    model = CVAE(TINY)

    class Wrapped(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.module = m

        def forward(self, *a):
            return self.module(*a)

    rows = cache.indices("train")[:4]
    batch = Batch(torch.from_numpy(cache.images[rows]).float() / 255,
                  torch.from_numpy(cache.labels[rows]).float())
    loss = CVAEObjective(TINY).loss(Wrapped(model), batch)
    assert torch.isfinite(loss.total) and loss.adversary == 0


@pytest.mark.slow  # a local Ray start: tens of seconds on 2 cores
def test_the_cvae_trains_on_ray_into_the_bundle_the_plain_loop_writes(cache, tmp_path, monkeypatch):
    """The Ray worker is model-agnostic (faceedit/recipe.py): one worker with one thread trains the
    CVAE to the plain loop's weights."""
    from test_ray_train import FAST_RAY_ENV
    from workers.train import RayConfig, train_on_ray

    for key, value in FAST_RAY_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    recipe = CVAERecipe(replace(TINY, adversary=1.0))
    train = replace(FAST, epochs=1)
    threads = torch.get_num_threads()
    try:
        train_bundle(cache, tmp_path / "plain", recipe, train)
    finally:
        torch.set_num_threads(threads)
    run = train_on_ray(cache.root, tmp_path / "ray", recipe, train, workers=1,
                       ray_config=RayConfig(storage=str(tmp_path / "storage"), cpus_per_worker=1, num_cpus=2))
    plain, on_ray = load_bundle(tmp_path / "plain"), load_bundle(run.bundle)
    assert on_ray.kind == plain.kind == "cvae" and on_ray.config == plain.config
    assert on_ray.meta["weights"]["sha256"] == plain.meta["weights"]["sha256"]
    assert on_ray.meta["steps"] == plain.meta["steps"] == 80 // 8
