"""Edit methods head to head, whatever model they edit in: vectors in a VAE's latent (naive,
balanced, projection: faceedit/vectors.py), the conditional VAE's label change (faceedit/cvae.py)
and the latent score search (faceedit/search.py), on the same held-out faces, scored by the same
judge, with the audit's own statistics (`faceedit.audit.edit_stats`: efficacy as the change in
P(attribute) against the method's own unedited reconstruction, leakage in logit sd units of the
judge over the originals), and compared where their efficacies are equal.

A method is anything with `encode(x, labels) -> code`, `reconstruct(code) -> images` and
`edit(code, attr, strength) -> images`; its strengths are its own units (vector lengths, label
flips, movement budgets), which is why the comparison is made at equal efficacy.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

import numpy as np
import torch

from faceedit.attributes import ATTRIBUTES, attribute_index
from faceedit.audit import EditScores, EditStats, edit_stats, logit_sd, median_pair_distance, select_faces
from faceedit.cache import to_float
from faceedit.metrics import psnr
from faceedit.report import leak_at_efficacy


class EditMethod(Protocol):
    name: str
    strengths: tuple[float, ...]  # +s edits faces without the attribute, -s faces with it

    def encode(self, x: torch.Tensor, labels: torch.Tensor) -> Any: ...

    def reconstruct(self, code: Any) -> torch.Tensor: ...

    def edit(self, code: Any, attr: str, strength: float) -> torch.Tensor: ...


@dataclass
class VectorEdit:
    """decode(mu + s v): a vector of the bank, s in units of its length."""
    model: Any  # a VAE
    bank: Any  # its AttributeBank
    method: str
    strengths: tuple[float, ...] = (-2.0, -1.0, 1.0, 2.0)

    @property
    def name(self) -> str:
        return self.method

    def encode(self, x, labels):
        return self.model.encode(x)[0]

    def reconstruct(self, code):
        return self.model.decode(code)

    def edit(self, code, attr, strength):
        return self.model.decode(code + strength * self.bank.vector(attr, self.method))


@dataclass
class ConditionalEdit:
    """decode(mu, y with y_a + 2 s): the same z, the label changed (s in flips)."""
    model: Any  # a CVAE
    strengths: tuple[float, ...] = (-1.5, -1.0, -0.5, 0.5, 1.0, 1.5)
    name: str = "conditional"

    def encode(self, x, labels):
        y = self.model.condition_of(labels)
        return self.model.encode(x, y)[0], y

    def reconstruct(self, code):
        return self.model.decode(*code)

    def edit(self, code, attr, strength):
        from faceedit.cvae import edit_labels

        mu, y = code
        return self.model.decode(mu, edit_labels(y, {attr: strength}, self.model.config.condition))


@dataclass
class SearchEdit:
    """decode(search(mu)): at most |s| naive-vector lengths of movement, up for s > 0."""
    model: Any  # a VAE with its fitted prior
    predictor: Any  # faceedit.search.LatentPredictor on its codes
    bank: Any  # for the naive vectors' lengths (the unit of the budget)
    config: Any = None  # faceedit.search.SearchConfig
    strengths: tuple[float, ...] = (-2.0, -1.0, 1.0, 2.0)
    name: str = "search"

    def encode(self, x, labels):
        return self.model.encode(x)[0]

    def reconstruct(self, code):
        return self.model.decode(code)

    def edit(self, code, attr, strength):
        from faceedit.search import SearchConfig, search

        unit = float(self.bank.vector(attr, "naive").norm())
        z = search(code, self.predictor, attr, abs(strength) * unit, self.model.prior_mean,
                   self.model.prior_scale_tril, self.config or SearchConfig(), up=strength > 0)
        return self.model.decode(z)


@dataclass(frozen=True)
class CompareConfig:
    attributes: tuple[str, ...] = field(default=("Smiling", "Heavy_Makeup", "Eyeglasses", "Blond_Hair"),
                                        metadata={"help": "attributes to edit"})
    faces: int = field(default=64, metadata={"help": "held-out faces per attribute and side (the "
                       "audit's choice of faces for the same seed)"})
    seed: int = field(default=0, metadata={"help": "seed of the choice of faces (the audit's)"})
    split: str = field(default="val", metadata={"help": "cache split the faces come from"})
    batch_size: int = field(default=64, metadata={"help": "faces decoded and scored at once"})

    def __post_init__(self) -> None:
        for a in self.attributes:
            attribute_index(a)
        if self.faces < 1 or self.batch_size < 1:
            raise ValueError(f"CompareConfig: faces={self.faces}, batch_size={self.batch_size}: expected >= 1")


@dataclass
class Comparison:
    attributes: tuple[str, ...]
    methods: tuple[str, ...]
    edits: dict[str, dict[str, dict[float, EditStats]]]  # method -> attr -> strength -> edit_stats
    reconstruction_psnr: dict[str, float]  # method -> mean dB of its reconstruction vs the original
    can_judge: np.ndarray  # (40,)
    faces: dict[str, dict[str, int]]  # attr -> {"without", "with"}


@torch.no_grad()
def compare(cache, judge, methods: Sequence[EditMethod], config: CompareConfig = CompareConfig(),
            progress: bool = True) -> Comparison:
    """Edit the held-out faces of each attribute by every method and strength; score with `judge`
    (a faceedit.judge.LoadedJudge). Leakage is in units of the judge's logit sd over the originals
    of the audit's whole face table (all 40 attributes' faces), as in the audit."""
    from tqdm import tqdm

    score = judge.model.score
    full_table = select_faces(cache, ATTRIBUTES, config).rows
    orig_all = np.concatenate([score(to_float(cache.images[full_table[i: i + 256]]))[0].float().numpy()
                               for i in range(0, len(full_table), 256)])
    sd = logit_sd(orig_all)
    selection = select_faces(cache, config.attributes, config)
    table, slots = selection.rows, selection.slots
    edits: dict = {m.name: {} for m in methods}
    recon_db: dict[str, list[float]] = {m.name: [] for m in methods}
    rec_feats: dict[str, list[np.ndarray]] = {m.name: [] for m in methods}
    parts: dict = {}
    jobs = [(a, pos, slots[(a, pos)][i: i + config.batch_size]) for a in config.attributes
            for pos in (True, False) for i in range(0, len(slots[(a, pos)]), config.batch_size)]
    for attr, positive, idx in tqdm(jobs, desc="compare", unit="batch", disable=not progress):
        rows = table[idx]
        x = to_float(cache.images[rows])
        labels = torch.from_numpy(cache.labels[rows].astype(np.float32))
        orig_logits = score(x)[0].float().numpy()
        for m in methods:
            code = m.encode(x, labels)
            rec = m.reconstruct(code)
            rec_logits, rec_f = (t.float() for t in score(rec))
            recon_db[m.name].append(psnr(rec, x).numpy())
            rec_feats[m.name].append(rec_f.numpy())
            for s in m.strengths:
                if (s > 0) != positive:
                    continue
                out = m.edit(code, attr, s)
                logits, feats = score(out)
                parts.setdefault((m.name, attr, s), []).append((
                    logits.float().numpy(), rec_logits.numpy(), orig_logits,
                    (feats.float() - rec_f).norm(dim=1).numpy(), psnr(out, rec).numpy(),
                    cache.labels[rows]))
    scale = {name: median_pair_distance(np.concatenate(f)) for name, f in rec_feats.items()}
    for (name, attr, s), p in parts.items():
        cat = [np.concatenate([q[i] for q in p]) for i in range(6)]
        scores = EditScores(edited=cat[0], rec=cat[1], orig=cat[2], feature_distance=cat[3], psnr=cat[4],
                            labels=cat[5])
        edits[name].setdefault(attr, {})[s] = edit_stats(attr, s, scores, sd=sd, can_judge=judge.can_judge,
                                                         feature_scale=scale[name])
    return Comparison(tuple(config.attributes), tuple(m.name for m in methods), edits,
                      {k: float(np.concatenate(v).mean()) for k, v in recon_db.items()},
                      np.asarray(judge.can_judge),
                      {a: {"without": len(slots[(a, True)]), "with": len(slots[(a, False)])}
                       for a in config.attributes})


def at_equal_efficacy(comp: Comparison, attr: str, watch: str = "Male", positive: bool = True,
                      min_efficacy: float = 0.1) -> dict[str, Any]:
    """Each method's leakage where the methods reach the same efficacy: the smallest of their
    largest |change in P(attr)| on this side, among the methods whose largest reaches
    `min_efficacy` (a comparison at a change of a few hundredths says little), by linear
    interpolation through (0, 0) over its strengths (faceedit.report.leak_at_efficacy).
    -> {"efficacy", method: {"leak_mean", "<watch>", "psnr", "identity", "largest"}}; the numbers
    are NaN for a method that never gets there ("largest" says how far it got)."""
    w = attribute_index(watch)
    sign = 1.0 if positive else -1.0
    curves = {}
    for m in comp.methods:
        by_s = comp.edits[m].get(attr, {})
        pts = [(sign * by_s[s].efficacy, by_s[s]) for s in sorted(by_s, key=abs) if (s > 0) == positive]
        if pts:
            curves[m] = pts
    largest = {m: max(e for e, _ in pts) for m, pts in curves.items()}
    reaching = [v for v in largest.values() if v >= min_efficacy]
    if not reaching:
        return {"efficacy": math.nan}
    target = min(reaching)
    out: dict[str, Any] = {"efficacy": sign * target}
    for m, pts in curves.items():
        def at(get) -> float:
            return leak_at_efficacy([(e, float(get(st))) for e, st in pts], target)

        out[m] = {"leak_mean": at(lambda st: st.leak_mean), watch: at(lambda st: st.leakage[w]),
                  "psnr": at(lambda st: st.psnr), "identity": at(lambda st: st.identity_feature),
                  "largest": sign * largest[m]}
    return out


def comparison_markdown(comp: Comparison, watch: str = "Male") -> str:
    """The tables: per attribute and method, every strength (change in P, leakage into `watch`
    and mean leakage), then all methods at equal efficacy, then reconstruction PSNR."""
    w = attribute_index(watch)
    lines = []
    for attr in comp.attributes:
        lines += [f"### {attr}", "", f"| method | strength | faces | dP({attr}) | {watch} (sd) | "
                  "mean leak (sd) | identity |", "|---|---|---|---|---|---|---|"]
        for m in comp.methods:
            for s, st in sorted(comp.edits[m].get(attr, {}).items()):
                se = st.leakage_se[w]
                lines.append(f"| {m} | {s:+g} | {st.faces} | {st.efficacy:+.2f} | "
                             f"{st.leakage[w]:+.2f} ± {se:.2f} | {st.leak_mean:.3f} | "
                             f"{st.identity_feature:.2f} |")
        for positive in (True, False):
            eq = at_equal_efficacy(comp, attr, watch, positive)
            if not math.isfinite(eq["efficacy"]):
                continue
            lines += ["", f"At equal efficacy, dP({attr}) = {eq['efficacy']:+.2f} "
                      f"({'adding' if positive else 'removing'}; the smallest largest change of the "
                      "methods that change it by 0.1 or more):", "",
                      f"| method | {watch} (sd) | mean leak (sd) | identity |", "|---|---|---|---|"]
            for m in comp.methods:
                if m in eq:
                    e = eq[m]
                    if math.isfinite(e[watch]):
                        lines.append(f"| {m} | {e[watch]:+.2f} | {e['leak_mean']:.3f} | {e['identity']:.2f} |")
                    else:
                        lines.append(f"| {m} | does not get there (largest dP {e['largest']:+.2f}) | | |")
        lines.append("")
    lines += ["### Reconstruction (unedited), PSNR vs the original", "", "| method | dB |", "|---|---|"]
    lines += [f"| {m} | {comp.reconstruction_psnr[m]:.2f} |" for m in comp.methods]
    return "\n".join(lines) + "\n"


def comparison_json(comp: Comparison, watch: str = "Male") -> dict[str, Any]:
    """JSON-ready: every edit's summary numbers (leakage as {attribute: sd} for the judgeable ones)."""
    def clean(st: EditStats) -> dict[str, Any]:
        out = {f.name: v for f in dataclasses.fields(st) for v in [getattr(st, f.name)]
               if not isinstance(v, np.ndarray)}
        out["leakage"] = {a: float(st.leakage[i]) for i, a in enumerate(ATTRIBUTES) if comp.can_judge[i]}
        out["leakage_se"] = {a: float(st.leakage_se[i]) for i, a in enumerate(ATTRIBUTES) if comp.can_judge[i]}
        return out

    return {"attributes": list(comp.attributes), "methods": list(comp.methods), "faces": comp.faces,
            "reconstruction_psnr": comp.reconstruction_psnr,
            "edits": {m: {a: {str(s): clean(st) for s, st in by.items()} for a, by in e.items()}
                      for m, e in comp.edits.items()},
            "equal_efficacy": {a: {side: at_equal_efficacy(comp, a, watch, side == "add")
                                   for side in ("add", "remove")} for a in comp.attributes}}


@torch.no_grad()
def strips(cache, methods: Sequence[EditMethod], attr: str, faces: int = 2, seed: int = 0,
           split: str = "val", scale: int = 2):
    """A sheet per attribute: for `faces` held-out faces without it, one row per method: the
    original, its reconstruction, then its positive strengths. -> PIL image."""
    from faceedit.audit import choose_faces
    from faceedit.edit import image_grid

    rows_ = choose_faces(cache.labels, cache.indices(split), attr, True, faces, seed)
    x = to_float(cache.images[rows_])
    labels = torch.from_numpy(cache.labels[rows_].astype(np.float32))
    grid_rows, names = [], []
    for f in range(len(x)):
        for m in methods:
            code = m.encode(x[f: f + 1], labels[f: f + 1])
            ups = [s for s in m.strengths if s > 0]
            grid_rows.append([x[f], m.reconstruct(code)[0]] + [m.edit(code, attr, s)[0] for s in ups])
            names.append(f"{m.name} " + " ".join(f"{s:+g}" for s in ups))
    return image_grid(grid_rows, row_labels=names, scale=scale,
                      title=f"{attr}: original | reconstruction | edits at the method's strengths")


@dataclass
class Optimism:
    """The lecture's question for one attribute: codes the latent predictor scores above every
    training face -- does the judge score their decodes above the training faces too?"""
    attr: str
    budgets: tuple[float, ...]  # in naive-vector lengths
    predicted: np.ndarray  # (K, F) predictor logits of the searched codes, per budget
    judged: np.ndarray  # (K, F) judge logits of their decodes
    start_predicted: np.ndarray  # (F,) at the faces' own codes
    start_judged: np.ndarray  # (F,) judge logits of their reconstructions
    train_predicted_max: float  # the predictor's highest logit over the training faces' codes
    train_judged_max: float  # the judge's highest logit over the training faces' reconstructions

    @property
    def beyond(self) -> np.ndarray:
        """(K, F) bool: predicted above every training face."""
        return self.predicted > self.train_predicted_max

    def summary(self) -> dict[str, Any]:
        b = self.beyond
        from scipy.special import expit as sig
        return {"attribute": self.attr, "codes": int(b.size), "beyond_training": int(b.sum()),
                "judged_beyond_training": int((self.judged[b] > self.train_judged_max).sum()),
                "mean_logit_gap": float((self.predicted[b] - self.judged[b]).mean()) if b.any() else None,
                "per_budget": [{"budget": s, "predicted_p": float(sig(self.predicted[i]).mean()),
                                "judged_p": float(sig(self.judged[i]).mean()),
                                "predicted_logit": float(self.predicted[i].mean()),
                                "judged_logit": float(self.judged[i].mean())}
                               for i, s in enumerate(self.budgets)],
                "start": {"predicted_p": float(sig(self.start_predicted).mean()),
                          "judged_p": float(sig(self.start_judged).mean())},
                "train_predicted_max": self.train_predicted_max, "train_judged_max": self.train_judged_max}


@torch.no_grad()
def optimism(model, predictor, bank, judge, cache, attr: str,
             budgets: Sequence[float] = (1.0, 2.0, 4.0, 8.0), faces: int = 32,
             train_faces: int = 2000, seed: int = 0, search_config: Any = None) -> Optimism:
    """Search up from `faces` held-out faces without `attr` with growing budgets (no stop at a
    target), decode, and score with the judge; the training faces' best scores are over the
    predictor's training codes and over `train_faces` evenly spaced training reconstructions."""
    from dataclasses import replace as dc_replace

    from faceedit.audit import choose_faces
    from faceedit.search import SearchConfig, search

    k = attribute_index(attr)
    cfg = dc_replace(search_config or SearchConfig(), target=1 - 1e-9)
    rows = choose_faces(cache.labels, cache.indices("val"), attr, True, faces, seed)
    x = to_float(cache.images[rows])
    mu = model.encode(x)[0]
    unit = float(bank.vector(attr, "naive").norm())
    predicted, judged = [], []
    for s in budgets:
        z = search(mu, predictor, attr, s * unit, model.prior_mean, model.prior_scale_tril, cfg)
        predicted.append(predictor.logits(z.double())[:, k].numpy())
        judged.append(judge.model.score(model.decode(z))[0][:, k].float().numpy())
    train = cache.indices("train")
    train = train[np.linspace(0, len(train) - 1, min(train_faces, len(train))).astype(int)]
    best = -np.inf
    for i in range(0, len(train), 256):
        xt = to_float(cache.images[train[i: i + 256]])
        best = max(best, float(judge.model.score(model.reconstruct(xt))[0][:, k].max()))
    return Optimism(attr, tuple(float(b) for b in budgets), np.stack(predicted), np.stack(judged),
                    predictor.logits(mu.double())[:, k].numpy(),
                    judge.model.score(model.decode(mu))[0][:, k].float().numpy(),
                    float(predictor.train_max[k]), best)


def optimism_png(results: Sequence[Optimism]) -> bytes:
    """One panel per attribute: predictor logit (x) vs judge logit (y) of every searched code,
    coloured by budget; dashed: the training faces' best predictor and judge scores; dotted: y = x."""
    from faceedit.report import _png, _pyplot

    plt = _pyplot()
    fig, axes = plt.subplots(1, len(results), figsize=(4.2 * len(results), 4), squeeze=False)
    for ax, r in zip(axes[0], results):
        ax.scatter(r.start_predicted, r.start_judged, s=8, c="grey", label="start")
        for i, s in enumerate(r.budgets):
            ax.scatter(r.predicted[i], r.judged[i], s=8, label=f"budget {s:g}")
        ax.axvline(r.train_predicted_max, ls="--", c="k", lw=0.8)
        ax.axhline(r.train_judged_max, ls="--", c="k", lw=0.8)
        lo = min(r.start_predicted.min(), r.start_judged.min())
        hi = max(r.predicted.max(), r.judged.max())
        ax.plot([lo, hi], [lo, hi], ":", c="k", lw=0.8)
        summ = r.summary()
        ax.set_title(f"{r.attr}: {summ['judged_beyond_training']}/{summ['beyond_training']} beyond "
                     "training also judged so", fontsize=8)
        ax.set_xlabel("latent predictor logit")
        ax.set_ylabel("judge logit of the decoded face")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return _png(fig)


def compare_folders(cache: str, judge: Sequence[str], bundle: str, bank: str, out: str,
                    cvae: Sequence[str] = (), search: bool = True,
                    vector_methods: Sequence[str] = ("naive", "balanced", "projection"),
                    config: CompareConfig = CompareConfig(), optimism_attributes: Sequence[str] = (),
                    probe_faces: int = 3000, search_config: Any = None,
                    progress: bool = True) -> dict[str, Any]:
    """`faceedit compare`: load, probe every model's code for the labels, compare the methods,
    write compare.json, compare.md, strips/<attr>.png and (optimism_attributes) optimism.png into
    the folder `out` (replaced atomically). Returns the JSON document."""
    import json
    from pathlib import Path

    from faceedit.bank import AttributeBank, check_built_from
    from faceedit.bundle import load_bundle
    from faceedit.cache import Cache
    from faceedit.edit import png_bytes
    from faceedit.files import atomic_dir
    from faceedit.judge import load_committee
    from faceedit.search import SearchConfig, label_probe

    c = Cache.open(cache)
    jd = load_committee(list(judge), c)
    vae, bk = load_bundle(bundle), AttributeBank.load(bank)
    check_built_from(bk, vae.model, bundle)
    cvaes = {Path(p).name: load_bundle(p) for p in cvae}
    for name, b in [("bundle", vae), *cvaes.items()]:
        if b.config.image_size != c.size:
            raise ValueError(f"{name}: {b.config.image_size} px model, {c.size} px cache")
    if any(b.kind != "cvae" for b in cvaes.values()):
        raise ValueError(f"--cvae {list(cvae)}: expected bundles of kind cvae (faceedit train --kind cvae)")
    probes = {Path(bundle).name: label_probe(vae.model, c, probe_faces)}
    probes.update({name: label_probe(b.model, c, probe_faces) for name, b in cvaes.items()})
    methods: list = [VectorEdit(vae.model, bk, m) for m in vector_methods]
    methods += [ConditionalEdit(b.model, name=f"conditional:{name}") for name, b in cvaes.items()]
    predictor = probes[Path(bundle).name]  # the latent predictor is the VAE's probe
    if search:
        methods.append(SearchEdit(vae.model, predictor, bk, search_config))
    comp = compare(c, jd, methods, config, progress)
    doc = comparison_json(comp)
    conditioned = {name: b.config.condition for name, b in cvaes.items()}
    doc["probe"] = {name: _probe_json(p, conditioned.get(name, ATTRIBUTES), config.attributes)
                    for name, p in probes.items()}
    doc["search_config"] = {k: getattr(search_config or SearchConfig(), k) for k in ("hold", "prior", "steps", "target")}
    doc["inputs"] = {"cache": c.hash, "bundle": str(bundle), "bank": str(bank), "cvae": list(cvae),
                     "judge": list(judge), "settings": {k: getattr(config, k) for k in
                                                        ("attributes", "faces", "seed", "split")}}
    opt = [optimism(vae.model, predictor, bk, jd, c, a, search_config=search_config)
           for a in optimism_attributes]
    doc["optimism"] = [o.summary() for o in opt]
    with atomic_dir(Path(out)) as tmp:
        (tmp / "compare.json").write_text(json.dumps(doc, indent=1, sort_keys=True, default=float) + "\n")
        (tmp / "compare.md").write_text(_probe_markdown(doc["probe"]) + comparison_markdown(comp))
        (tmp / "strips").mkdir()
        for a in config.attributes:
            (tmp / "strips" / f"{a}.png").write_bytes(png_bytes(strips(c, methods, a)))
        if opt:
            (tmp / "optimism.png").write_bytes(optimism_png(opt))
    return doc


def _probe_json(p, conditioned: Sequence[str], shown: Sequence[str]) -> dict[str, Any]:
    idx = [attribute_index(a) for a in conditioned]
    return {"mean_auc_conditioned": float(np.nanmean(p.val_auc[idx])),
            "auc": {a: float(p.val_auc[attribute_index(a)]) for a in (*shown, "Male")}}


def _probe_markdown(probe: dict[str, Any]) -> str:
    names = list(next(iter(probe.values()))["auc"])
    lines = ["### How much of the labels the code mu carries (linear probe, val AUC; 0.5 = none)", "",
             "| model | mean over its labels | " + " | ".join(names) + " |",
             "|---|---|" + "---|" * len(names)]
    for m, p in probe.items():
        lines.append(f"| {m} | {p['mean_auc_conditioned']:.3f} | " +
                     " | ".join(f"{p['auc'][a]:.3f}" for a in names) + " |")
    return "\n".join(lines) + "\n\n"
