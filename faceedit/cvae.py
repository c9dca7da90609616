"""A conditional VAE (Sohn et al. 2015, "Learning Structured Output Representation using Deep
Conditional Generative Models"; the lecture's "(2+10)-dimensional" CVAE, on faces).

Encoder f(x, y) -> (mu, log sigma^2) and decoder g(z, y) -> x~ both take the labels y (all 40
CelebA attributes, or a chosen subset), as +1 / -1. z is meant to carry what y does not, so a face
is edited by changing y and decoding with the same z: `edit_labels`.

Two parts beyond the plain CVAE:
- a label classifier q(y | x) on the encoder's features (the M2 model of Kingma et al. 2014,
  "Semi-Supervised Learning with Deep Generative Models", has the same q(y | x)): a photo without
  labels is encoded with the labels it predicts (`infer_labels`);
- an adversary on the code (Lample et al. 2017, "Fader Networks": a discriminator that predicts y
  from the latent, which the encoder learns to fool), trained through a gradient reversal layer
  (Ganin & Lempitsky 2015) so one optimizer and the model-agnostic loop train both sides. A plain
  CVAE's code still carries y (its encoder sees the face); `CVAEConfig.adversary` > 0 is the weight
  of the reversed gradient the encoder receives. How much of y is left in mu is measured by a
  linear probe on held-out faces (`faceedit.probe`).

Loss per image: -log p(x | z, y) + beta * KL(q(z | x, y) || N(0, I)) + BCE(q(y | x), y)
+ BCE(adversary(mu), y) (its gradient reversed, times `adversary`, on the way into the encoder; or,
with adversary_mode "confuse", the adversary learns on a detached mu while the encoder pays
`adversary` x BCE(adversary(mu), the batch's label frequencies) with the adversary's weights held:
a code on which it can only guess the base rates, as the entropy-style confusion objectives of
Roy & Boddeti 2019 ask, instead of one that makes it confidently wrong).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator, Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from faceedit.attributes import ATTRIBUTES, attribute_index
from faceedit.cache import Cache
from faceedit.figures import grid
from faceedit.metrics import psnr
from faceedit.model import VAE, Decoder, Encoder, VAEConfig, VAEOutput, vae_loss
from faceedit.objective import VAEObjective, fit_prior
from faceedit.trainer import Batch


@dataclass(frozen=True)
class CVAEConfig(VAEConfig):
    labels: tuple[str, ...] = field(default=(), metadata={
        "help": "attributes the encoder and decoder are told (none given: all 40); only these can "
                "be edited by changing the labels"})
    adversary: float = field(default=0.0, metadata={
        "help": "weight of the reversed gradient from an adversary that predicts the labels from "
                "mu (Fader Networks, Lample et al. 2017); 0: a plain CVAE, whose code still "
                "carries the labels (see BENCHMARKS.md, Conditional VAE)"})
    adversary_width: int = field(default=256, metadata={"help": "hidden units of the adversary MLP"})
    adversary_mode: Literal["reverse", "confuse"] = field(default="reverse", metadata={
        "help": "reverse: the encoder receives the adversary's gradient reversed (it is rewarded "
                "for making the adversary confidently wrong, which needs the labels); confuse: "
                "the encoder is pulled toward codes on which the adversary predicts the batch's "
                "label frequencies for every face (no information)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        for a in self.labels:
            attribute_index(a)
        if len(set(self.labels)) != len(self.labels):
            raise ValueError(f"CVAEConfig.labels={self.labels!r}: an attribute is named twice")
        if self.adversary_mode not in ("reverse", "confuse"):
            raise ValueError(f"CVAEConfig.adversary_mode={self.adversary_mode!r}: expected reverse or confuse")
        if self.adversary < 0 or self.adversary_width < 1:
            raise ValueError(f"CVAEConfig: adversary={self.adversary}, adversary_width="
                             f"{self.adversary_width}: expected adversary >= 0, width >= 1")

    @property
    def condition(self) -> tuple[str, ...]:
        """The conditioning attributes, in CelebA's order when all 40."""
        return self.labels or ATTRIBUTES


class _Reverse(torch.autograd.Function):
    """Identity forward; the gradient times -scale backward (Ganin & Lempitsky 2015)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return -ctx.scale * grad, None


class CVAEOutput(NamedTuple):
    recon: torch.Tensor  # (B, 3, S, S) g(z, y), z drawn by reparameterization
    mu: torch.Tensor  # (B, D)
    logvar: torch.Tensor  # (B, D)
    label_logits: torch.Tensor  # (B, L) q(y | x)
    adversary_logits: torch.Tensor  # (B, L) the adversary's guess of y from mu; (B, 0) without one
    confusion_logits: torch.Tensor  # (B, L) the same guess with the adversary's weights held (mode
    #                                 confuse: only the encoder learns from it); (B, 0) otherwise


class CVAELoss(NamedTuple):
    """Per-image means over the batch, in nats. total = reconstruction + beta kl + classifier +
    adversary (the adversary's term enters the encoder with its gradient reversed)."""
    total: torch.Tensor
    reconstruction: torch.Tensor
    kl: torch.Tensor
    classifier: torch.Tensor
    adversary: torch.Tensor
    confusion: torch.Tensor  # mode confuse: adversary x BCE(its guess, the batch's label frequencies)
    log_sigma: torch.Tensor


class CVAE(nn.Module):
    def __init__(self, config: CVAEConfig = CVAEConfig()):
        super().__init__()
        self.config = config
        D, L = config.latent_dim, len(config.condition)
        self.register_buffer("label_index", torch.tensor([attribute_index(a) for a in config.condition]))
        encoder = Encoder(config)
        self.features = encoder.stages  # (B, 3, S, S) -> (B, C_last, s, s)
        flat = config.channels[-1] * config.bottleneck**2
        self.head = nn.Linear(flat + L, 2 * D)  # [features, y] -> [mu, logvar]
        with torch.no_grad():  # the code starts without the labels: a random linear copy of y in
            self.head.weight[:, flat:].zero_()  # mu stays readable where the KL empties dimensions
        self.classifier = nn.Linear(flat, L)  # features -> logits of q(y | x)
        self.decoder = Decoder(replace(config, labels=(), latent_dim=D + L))  # [z, y] -> x~
        self.adversary = (nn.Sequential(nn.Linear(D, config.adversary_width), nn.SiLU(),
                                        nn.Linear(config.adversary_width, L))
                          if config.adversary > 0 else None)
        self.register_buffer("log_sigma", torch.zeros(()))  # as VAE.log_sigma
        self.register_buffer("prior_mean", torch.zeros(D))  # as VAE: the fitted sampling prior of z
        self.register_buffer("prior_scale_tril", torch.eye(D))

    # ------------------------------------------------------------------ labels
    def condition_of(self, labels: torch.Tensor) -> torch.Tensor:
        """The model's y from dataset labels: (B, 40) in {0, 1} -> (B, L) in {-1, +1}."""
        if labels.dim() != 2 or labels.shape[1] != len(ATTRIBUTES):
            raise ValueError(f"CVAE.condition_of: got labels of shape {tuple(labels.shape)}, "
                             f"expected (B, {len(ATTRIBUTES)})")
        return labels.float()[:, self.label_index] * 2 - 1

    def _check_y(self, y: torch.Tensor, B: int) -> None:
        L = len(self.config.condition)
        if y.dim() != 2 or tuple(y.shape) != (B, L):
            raise ValueError(f"CVAE: got labels y of shape {tuple(y.shape)}, expected ({B}, {L}) "
                             f"(the conditioning attributes {', '.join(self.config.condition[:4])}...)")

    # ------------------------------------------------------------------ the model
    def _features(self, x: torch.Tensor) -> torch.Tensor:
        S = self.config.image_size
        if x.dim() != 4 or tuple(x.shape[1:]) != (3, S, S):
            raise ValueError(f"CVAE: got images of shape {tuple(x.shape)}, expected (B, 3, {S}, {S})")
        return self.features(x * 2 - 1).flatten(1)  # (B, 3, S, S) -> (B, C_last * s * s)

    def encode(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, S, S) in [0, 1], y (B, L) -> mu (B, D), logvar (B, D)."""
        h = self._features(x)
        self._check_y(y, len(x))
        mu, logvar = self.head(torch.cat([h, y.to(h.dtype)], dim=1)).float().chunk(2, dim=1)
        return mu, logvar

    def decode(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """z (B, D), y (B, L) -> (B, 3, S, S) in [0, 1]."""
        D = self.config.latent_dim
        if z.dim() != 2 or z.shape[1] != D:
            raise ValueError(f"CVAE.decode: got codes of shape {tuple(z.shape)}, expected (B, {D})")
        self._check_y(y, len(z))
        return self.decoder(torch.cat([z, y.to(z.dtype)], dim=1))

    @torch.no_grad()
    def infer_labels(self, x: torch.Tensor) -> torch.Tensor:
        """y predicted by q(y | x), as +1 / -1: for faces without labels. (B, 3, S, S) -> (B, L)."""
        return torch.where(self.classifier(self._features(x)).float() > 0, 1.0, -1.0)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> CVAEOutput:
        h = self._features(x)
        self._check_y(y, len(x))
        mu, logvar = self.head(torch.cat([h, y.to(h.dtype)], dim=1)).float().chunk(2, dim=1)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        recon = self.decoder(torch.cat([z, y.to(z.dtype)], dim=1))
        conf = adv = mu.new_zeros(len(mu), 0)
        if self.adversary is not None and self.config.adversary_mode == "reverse":
            adv = self.adversary(_Reverse.apply(mu, self.config.adversary)).float()
        elif self.adversary is not None:  # confuse: the adversary learns on a detached code...
            adv = self.adversary(mu.detach()).float()
            held = {k: v.detach() for k, v in self.adversary.named_parameters()}
            conf = torch.func.functional_call(self.adversary, held, (mu,)).float()  # ...the encoder here
        return CVAEOutput(recon, mu, logvar, self.classifier(h).float(), adv, conf)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """decode(mu, y). (B, 3, S, S), (B, L) -> (B, 3, S, S)."""
        return self.decode(self.encode(x, y)[0], y)

    @torch.no_grad()
    def sample(self, y: torch.Tensor, generator: torch.Generator | None = None,
               temperature: float = 1.0, standard: bool = False) -> torch.Tensor:
        """One face per row of y from z of the (fitted) prior, as VAE.sample. (n, L) -> (n, 3, S, S)."""
        eps = torch.randn(len(y), self.config.latent_dim, generator=generator, device=self.prior_mean.device)
        z = eps * temperature if standard else self.prior_mean + temperature * eps @ self.prior_scale_tril.T
        return self.decode(z, y)

    @torch.no_grad()
    def fit_prior(self, mu: torch.Tensor, logvar: torch.Tensor) -> None:
        """The aggregate posterior's Gaussian replaces N(0, I) for `sample`, as `VAE.fit_prior`."""
        VAE.fit_prior(self, mu, logvar)


def edit_labels(y: torch.Tensor, changes: dict[str, float], condition: tuple[str, ...]) -> torch.Tensor:
    """y with y_a += 2 * s for each a: s in flips (s = 1 takes -1 to +1, as a vector edit of
    strength 1 adds the naive mean difference). (B, L) -> (B, L), a new tensor."""
    y = y.clone()
    for attr, s in changes.items():
        if attr not in condition:
            raise ValueError(f"edit_labels: {attr!r} is not one of the model's conditioning labels "
                             f"({', '.join(condition)})")
        y[:, condition.index(attr)] += 2 * float(s)
    return y


def cvae_loss(x: torch.Tensor, y: torch.Tensor, out: CVAEOutput, config: CVAEConfig,
              log_sigma: torch.Tensor | None = None) -> CVAELoss:
    """The terms of the module docstring, means over the batch. y (B, L) in {-1, +1}."""
    base = vae_loss(x, VAEOutput(out.recon, out.mu, out.logvar), config, log_sigma)
    target = (y > 0).float()
    cls = F.binary_cross_entropy_with_logits(out.label_logits, target, reduction="sum") / len(x)
    zero = torch.zeros((), device=x.device)
    adv = (F.binary_cross_entropy_with_logits(out.adversary_logits, target, reduction="sum") / len(x)
           if out.adversary_logits.shape[1] else zero)
    conf = (config.adversary * F.binary_cross_entropy_with_logits(
        out.confusion_logits, target.mean(0, keepdim=True).expand_as(target), reduction="sum") / len(x)
        if out.confusion_logits.shape[1] else zero)
    return CVAELoss(base.total + cls + adv + conf, base.reconstruction, base.kl, cls, adv, conf,
                    base.log_sigma)


class CVAEObjective(VAEObjective):
    """The CVAE's part of training (a `faceedit.trainer.Objective`); after_step (the calibrated
    decoder's running ln s) is the VAE's."""

    def __init__(self, config: CVAEConfig, figure_images: int = 32, map_faces: int = 256):
        super().__init__(config, figure_images, map_faces=map_faces)

    def codes(self, model: CVAE, batch: Batch) -> torch.Tensor:
        return model.encode(batch.images, model.condition_of(batch.labels))[0]

    def loss(self, model: nn.Module, batch: Batch) -> CVAELoss:
        bare = getattr(model, "module", model)  # DDP keeps the model in .module
        y = bare.condition_of(batch.labels)
        return cvae_loss(batch.images, y, model(batch.images, y), self.config)

    @torch.no_grad()
    def validate(self, model: CVAE, batches: Iterator[Batch]) -> dict[str, float]:
        """Means over the val images: loss terms, PSNR of decode(mu, y), accuracy of q(y | x) and
        of the adversary (0.5 would be chance for balanced labels)."""
        cfg, sums, n = self.config, {}, 0
        log_sigma = model.log_sigma if cfg.decoder == "sigma" else None
        for batch in batches:
            x, y = batch.images.float(), model.condition_of(batch.labels)
            out = model(batch.images, y)
            terms = cvae_loss(x, y, out, cfg, log_sigma)
            values = {k: v * len(x) for k, v in terms._asdict().items() if k != "log_sigma"}
            values["psnr"] = psnr(model.decode(out.mu, y), x).sum()
            values["label_accuracy"] = ((out.label_logits > 0) == (y > 0)).float().mean(1).sum()
            if out.adversary_logits.shape[1]:
                values["adversary_accuracy"] = ((out.adversary_logits > 0) == (y > 0)).float().mean(1).sum()
            for k, v in values.items():
                sums[k] = sums.get(k, 0.0) + float(v)
            n += len(x)
        out = {k: v / n for k, v in sums.items()}
        out["log_sigma"] = float(model.log_sigma)
        return out

    @torch.no_grad()
    def figures(self, model: CVAE, batch: Batch) -> dict[str, torch.Tensor]:
        """reconstructions: rows of 8 originals, each followed by decode(mu, y); samples: the same
        faces' labels decoded with z ~ N(0, I) (fixed seed)."""
        x = batch.images[: self.figure_images].float()
        y = model.condition_of(batch.labels[: self.figure_images])
        recon = model.reconstruct(x, y).float()
        rows = [t for i in range(0, len(x), 8) for t in (x[i: i + 8], recon[i: i + 8])]
        g = torch.Generator(device=x.device).manual_seed(1234)
        return {"reconstructions": grid(torch.cat(rows), ncol=8),
                "samples": grid(model.sample(y, generator=g, standard=True), ncol=8)}


@dataclass(frozen=True)
class CVAERecipe:
    """The CVAE as a `faceedit.recipe.Recipe`: trained by `faceedit.recipe.train_bundle` in this
    process or by workers/train.py on Ray; its bundle (kind "cvae") records the fitted prior of z."""

    config: CVAEConfig
    map_attribute: str = "Smiling"  # colours the map of the codes drawn into the log ("": none)

    def __post_init__(self) -> None:
        if self.map_attribute:
            attribute_index(self.map_attribute)  # a bad name fails now, not after training

    def build(self) -> CVAE:
        return CVAE(self.config)

    def objective(self) -> CVAEObjective:
        return CVAEObjective(self.config)

    def check(self, cache: Cache) -> None:
        from faceedit.recipe import check_image_size

        check_image_size(cache, self.config.image_size, "model")

    def finish(self, model: CVAE, cache: Cache, log_dir: Path | None) -> dict[str, Any]:
        from faceedit.codemap import draw_for_bundle

        record = {"prior": fit_prior(model, cache, log_dir)}
        # figures/codemap.gif in the log; the bundle points to it, so the audit report shows it
        record.update(draw_for_bundle(log_dir, cache, self.map_attribute))
        return record


def _register() -> None:
    from faceedit.bundle import register_kind

    register_kind("cvae", CVAEConfig, CVAE)


_register()
