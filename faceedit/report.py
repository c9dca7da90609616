"""The audit's report: report.json, leakage.csv, PNG figures and a self-contained report.html.

Everything is a pure function of the audit's numbers and the input hashes: no timestamps, no host
names, fixed matplotlib metadata (PNG "Software" removed), sorted keys, floats rounded to 6
significant digits; so the same inputs give the same bytes. The folder is written atomically
(faceedit/files.py `atomic_dir`). Numbers of attributes the judge cannot judge (held-out AUC below
its threshold) are kept in the json and csv with a flag, and greyed out in the html.
"""

from __future__ import annotations

import csv
import dataclasses
import html
import io
import json
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from faceedit.attributes import ATTRIBUTES, attribute_index
from faceedit.audit import AuditResult, EditStats
from faceedit.codemap import MapFigure
from faceedit.config import config_to_dict
from faceedit.files import atomic_dir
from faceedit.opening import CSS as OPENING_CSS
from faceedit.opening import data_uri, edit_audit_headlines, edit_audit_key_figure, opening_html


# ---------------------------------------------------------------------------- json

def _num(x: Any) -> float | None:
    """A float rounded to 6 significant digits (float noise below that is not part of the
    report); None for NaN/inf (JSON has neither)."""
    x = float(x)
    return float(f"{x:.6g}") if math.isfinite(x) else None


def _alpha_key(alpha: float) -> str:
    return f"{alpha:+g}"


def _by_attr(values: Any) -> dict[str, Any]:
    return {a: _jsonable(v) for a, v in zip(ATTRIBUTES, np.asarray(values).tolist())}


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(_alpha_key(k) if isinstance(k, float) else k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return _num(x)
    return x


def report_document(result: AuditResult, inputs: dict[str, Any]) -> dict[str, Any]:
    """The JSON document: settings, inputs (paths and hashes), every number of the audit."""
    judge, bias = result.judge, result.bias
    doc = {
        "format": 1,
        "inputs": inputs,
        "settings": config_to_dict(result.settings),
        "attributes": list(result.attributes),
        "judge": {"members": judge.members, "min_auc": judge.min_auc, "auc": _by_attr(judge.auc),
                  "can_judge": _by_attr(judge.can_judge), "cannot_judge": cannot_judge(result)},
        "logit_sd": _by_attr(result.logit_sd),
        "faces": {"table": len(result.faces.rows),
                  "per_attribute": {a: result.faces.counts(a) for a in result.attributes}},
        "edited_images": result.edited_images,
        "latents": {},
        "bias": {"split": bias.split, "faces": bias.faces, "rates": _by_attr(bias.rates),
                 "rates_all": _by_attr(bias.rates_all),
                 "phi": {"attributes": list(ATTRIBUTES), "matrix": _jsonable(bias.phi)},
                 "vectors": result.bank_cells},
        "verdicts": verdicts(result),
        "vae_vs_pca": latent_comparison(result),
        "vae_vs_pca_within": latent_comparison(result, key="leak_mean_within"),
    }
    for name, lat in result.latents.items():
        edits = {}
        for attr, by_method in lat.edits.items():
            edits[attr] = {m: {_alpha_key(a): _edit_json(s) for a, s in by_alpha.items()}
                           for m, by_alpha in by_method.items()}
        rec = lat.reconstruction
        doc["latents"][name] = {"feature_scale": _num(lat.feature_scale),
                                "reconstruction": {f.name: _by_attr(getattr(rec, f.name))
                                                   for f in dataclasses.fields(rec)},
                                "edits": edits}
    return _jsonable(doc)


def _edit_json(s: EditStats) -> dict[str, Any]:
    return {f.name: (_by_attr(v) if f.name in EditStats.PER_ATTRIBUTE else _jsonable(v))
            for f in dataclasses.fields(s) for v in [getattr(s, f.name)]}


def cannot_judge(result: AuditResult) -> list[str]:
    """The attributes the judge cannot judge, in ATTRIBUTES order."""
    return [a for a, ok in result.can().items() if not ok]


# ---------------------------------------------------------------------------- verdicts

WEAK_EFFICACY = 0.1  # a verdict whose best method changes P(attribute) less says the edit barely works


def best_method(by_method: dict[str, EditStats]) -> str:
    """The method with the least mean leakage among those reaching 90% of the best efficacy
    (efficacy per leakage: an edit that barely works leaks little for a poor reason)."""
    eff = {m: s.efficacy for m, s in by_method.items()}
    top = max(eff.values())
    ok = [m for m in by_method if eff[m] >= 0.9 * top] or list(by_method)
    return min(ok, key=lambda m: (_finite(by_method[m].leak_mean), list(by_method).index(m)))


def _finite(x: float) -> float:
    return x if x is not None and math.isfinite(x) else math.inf


def verdicts(result: AuditResult, latent: str = "vae") -> dict[str, dict[str, Any]]:
    """Per attribute: a one-line verdict, the recommended method, the naive vector's most leaked
    attribute and how much each method leaks into it."""
    can = result.can()
    auc = dict(zip(ATTRIBUTES, np.asarray(result.judge.auc, np.float64).tolist()))
    out = {}
    for attr, by_method in result.headline(latent).items():
        if not by_method:
            continue
        best = best_method(by_method)
        ref = "naive" if "naive" in by_method else next(iter(by_method))
        named = _named_leaks(by_method[ref], confounders(result, attr), can)
        s = by_method[best]
        line = f"{attr}, {best}: {s.efficacy:+.2f} P({attr})"
        for i, b in enumerate(named):
            k = attribute_index(b)
            se = s.leakage_se[k]
            line += (f", {b}{' leakage' if i == 0 else ''} {abs(s.leakage[k]):.2f}"
                     f"{f' ± {se:.2f}' if se is not None and math.isfinite(se) else ''} sd vs "
                     f"{abs(by_method[ref].leakage[k]):.2f} sd {ref}")
        top = s.leak_max_attribute
        if top is not None and top not in named:
            line += f"; its largest: {top} {s.leak_max:.2f} sd"
        b = named[0] if named else None
        strongest = max(abs(v.efficacy) for v in by_method.values())
        if strongest < WEAK_EFFICACY:
            line += (f" [weak: no method changes P({attr}) by {WEAK_EFFICACY} at the headline "
                     "strength, so its leakages say little]")
        if not can[attr]:
            a = auc[attr]
            line += (f" [the judge cannot judge {attr}: AUC "
                     f"{'n/a' if not math.isfinite(a) else f'{a:.2f}'} < {result.judge.min_auc}]")
        out[attr] = {"text": line, "method": best, "can_judge": bool(can[attr]), "most_leaked": b,
                     "leak_into_most_leaked": ({m: _num(abs(v.leakage[attribute_index(b)]))
                                                for m, v in by_method.items()} if b else {})}
    return out


def confounders(result: AuditResult, attr: str) -> list[str] | None:
    """The confounders attr's balanced vector was balanced over (bank.json), None where unknown."""
    return result.bank_cells[attr].get("confounders") if attr in result.bank_cells else None


def _named_leaks(ref: EditStats, confounders: Sequence[str] | None, can: dict[str, bool]) -> list[str]:
    """The attributes a verdict names: the vector's judgeable confounders (bank.json), else the
    reference vector's most leaked attribute."""
    judged = [c for c in confounders or () if can.get(c)]
    if judged:
        return judged
    return [ref.leak_max_attribute] if ref.leak_max_attribute else []


def leak_at_efficacy(points: Sequence[tuple[float, float]], target: float) -> float:
    """Mean leakage where efficacy reaches `target`, by linear interpolation through (0, 0) and
    the (efficacy, leakage) points of increasing strength; NaN where it is never reached."""
    xs, ys = [0.0], [0.0]
    for e, l in points:
        if e is None or l is None or not (math.isfinite(e) and math.isfinite(l)):
            return math.nan
        xs.append(e)
        ys.append(l)
    for i in range(1, len(xs)):
        if xs[i] >= target > xs[i - 1] or xs[i] == target:
            t = 1.0 if xs[i] == xs[i - 1] else (target - xs[i - 1]) / (xs[i] - xs[i - 1])
            return ys[i - 1] + t * (ys[i] - ys[i - 1])
    return math.nan


def latent_comparison(result: AuditResult, a: str = "vae", b: str = "pca",
                      key: str = "leak_mean") -> dict[str, Any]:
    """Mean leakage of each latent's edits at the same efficacy (positive strengths): per method,
    over judgeable attributes, at the smaller of the two latents' largest efficacies. `key`: the
    edit's summary leakage ("leak_mean", or "leak_mean_within" for the within-group one)."""
    lats = result.latents
    if a not in lats or b not in lats:
        return {}
    can = result.can()
    out: dict[str, Any] = {}
    for method in result.settings.methods:
        rows = []
        for attr in result.attributes:
            if not can[attr]:
                continue
            curves = []
            for name in (a, b):
                by_alpha = lats[name].strengths(attr, method)
                curves.append([(by_alpha[s].efficacy, getattr(by_alpha[s], key))
                               for s in sorted(by_alpha) if s > 0])
            if not all(curves):
                continue
            target = min(max(e for e, _ in c) for c in curves)
            if not target > 0:
                continue
            la, lb = (leak_at_efficacy(c, target) for c in curves)
            if math.isfinite(la) and math.isfinite(lb):
                rows.append((attr, target, la, lb))
        diff = np.array([r[2] - r[3] for r in rows])
        cleaner = int(sum(r[2] < r[3] for r in rows))
        out[method] = {
            "attributes": len(rows),
            f"{a}_mean_leakage": _num(np.mean([r[2] for r in rows])) if rows else None,
            f"{b}_mean_leakage": _num(np.mean([r[3] for r in rows])) if rows else None,
            f"{a}_cleaner": cleaner,
            # paired over attributes: the mean of (a - b) and its standard error, and the two-sided
            # sign test of "a cleaner on `cleaner` of them" against a coin toss
            "difference": _num(diff.mean()) if len(diff) else None,
            "difference_se": _num(diff.std(ddof=1) / math.sqrt(len(diff))) if len(diff) > 1 else None,
            "sign_test_p": _num(sign_test(cleaner, len(rows))) if rows else None,
            "per_attribute": {r[0]: {"efficacy": _num(r[1]), a: _num(r[2]), b: _num(r[3])} for r in rows},
        }
    return out


def sign_test(k: int, n: int) -> float:
    """Two-sided exact binomial test of k successes in n >= 1 against p = 1/2."""
    from scipy.stats import binomtest

    return float(binomtest(k, n, 0.5).pvalue)


# ---------------------------------------------------------------------------- csv

def leakage_csv(result: AuditResult) -> str:
    """One row per (latent, attribute, method, strength, other attribute)."""
    can = np.asarray(result.judge.can_judge)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["latent", "attribute", "method", "strength", "other", "leakage_sd", "ad_sd",
                "leakage_vs_original_sd", "leakage_se_sd", "leakage_within_sd", "attribute_judgeable",
                "other_judgeable"])
    for name, lat in result.latents.items():
        for attr, by_method in lat.edits.items():
            for method, by_alpha in by_method.items():
                for alpha, s in by_alpha.items():
                    for k, other in enumerate(ATTRIBUTES):
                        w.writerow([name, attr, method, _alpha_key(alpha), other,
                                    _fmt(s.leakage[k]), _fmt(s.ad[k]),
                                    _fmt(s.leakage_vs_original[k]), _fmt(s.leakage_se[k]),
                                    _fmt(s.leakage_within[k]), int(can[attribute_index(attr)]), int(can[k])])
    return buf.getvalue()


def _fmt(x: float) -> str:
    v = _num(x)
    return "" if v is None else repr(v)


# ---------------------------------------------------------------------------- figures

def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    import matplotlib.pyplot as plt
    plt.close(fig)
    return buf.getvalue()


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def heatmap_png(result: AuditResult, latent: str, method: str, vmax: float) -> bytes:
    """Attribute x attribute leakage (signed, sd units) at the headline strength: a row per edited
    attribute, a column per other attribute; the diagonal (the edit's own target) is black, cells
    the judge cannot judge are grey."""
    plt = _pyplot()
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    attrs = result.attributes
    can = np.asarray(result.judge.can_judge)
    alpha = float(result.settings.headline)
    M = np.full((len(attrs), len(ATTRIBUTES)), np.nan)
    for i, a in enumerate(attrs):
        s = result.latents[latent].edit(a, method, alpha)
        if s is not None:
            M[i] = s.leakage
    grey = np.zeros_like(M)
    for i, a in enumerate(attrs):
        grey[i, ~can] = 1
        if not can[attribute_index(a)]:
            grey[i] = 1
    diag = np.zeros_like(M)
    for i, a in enumerate(attrs):
        diag[i, attribute_index(a)] = 1
    # One RGBA image (a single imshow draws fast): colour by the diverging map, then grey and black.
    cmap, norm = plt.get_cmap("RdBu_r"), Normalize(-vmax, vmax)
    rgba = cmap(norm(np.nan_to_num(M)))  # (A, 40, 4)
    rgba[(grey == 1) | np.isnan(M)] = (0.8, 0.8, 0.8, 1.0)
    rgba[diag == 1] = (0.0, 0.0, 0.0, 1.0)
    fig, ax = plt.subplots(figsize=(11, 2.2 + 0.22 * len(attrs)))
    ax.imshow(rgba, aspect="auto", interpolation="nearest")
    im = ScalarMappable(norm=norm, cmap=cmap)
    ax.set_xticks(range(len(ATTRIBUTES)), ATTRIBUTES, rotation=90, fontsize=7)
    ax.set_yticks(range(len(attrs)), attrs, fontsize=7)
    ax.set_xlabel("other attribute b (grey: the judge cannot judge it)")
    ax.set_ylabel("edited attribute a")
    ax.set_title(f"{latent.upper()} {method}, alpha {alpha:+g}: change of b's logit in sd "
                 "(black: the target)", fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.025, pad=0.01, label="sd")
    fig.tight_layout()
    return _png(fig)


def efficacy_plot_png(result: AuditResult, labelled: Sequence[str] = ("Smiling", "Heavy_Makeup",
                                                                          "Eyeglasses")) -> bytes:
    """Efficacy (change in P(a)) against mean leakage (sd) at the headline strength, one point per
    judgeable attribute and method; a panel per latent model (VAE, PCA) on shared axes."""
    plt = _pyplot()
    can = np.asarray(result.judge.can_judge)
    colours = {"naive": "#d62728", "balanced": "#1f77b4", "projection": "#2ca02c", "boundary": "#9467bd"}
    latents = [lat for lat in ("vae", "pca") if lat in result.latents]
    fig, axes = plt.subplots(1, len(latents), figsize=(6 * len(latents), 5), sharex=True, sharey=True,
                             squeeze=False)
    for ax, latent in zip(axes[0], latents):
        head = result.headline(latent)
        for method in result.settings.methods:
            pts = [(a, s[method].leak_mean, s[method].efficacy) for a, s in head.items()
                   if method in s and can[attribute_index(a)]]
            pts = [p for p in pts if p[1] is not None and math.isfinite(p[1])]
            if not pts:
                continue
            ax.scatter([p[1] for p in pts], [p[2] for p in pts], s=18, alpha=0.75,
                       color=colours.get(method, "k"), label=method)
            for a, x, y in pts:
                if a in labelled:
                    ax.annotate(a, (x, y), fontsize=6, xytext=(3, 2), textcoords="offset points")
        ax.axhline(0, color="#888", lw=0.5)
        ax.set_title(f"{latent.upper()} latent", fontsize=10)
        ax.set_xlabel("mean leakage into other judgeable attributes (sd)")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    axes[0][0].set_ylabel("efficacy: change in P(attribute)")
    fig.suptitle(f"Efficacy vs leakage at alpha {float(result.settings.headline):+g}, one point "
                 "per attribute and method", fontsize=10)
    fig.tight_layout()
    return _png(fig)


def phi_png(result: AuditResult) -> bytes:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 8))
    im = ax.imshow(np.asarray(result.bias.phi, np.float64), cmap="RdBu_r", vmin=-1, vmax=1,
                   interpolation="nearest")
    ax.set_xticks(range(len(ATTRIBUTES)), ATTRIBUTES, rotation=90, fontsize=6)
    ax.set_yticks(range(len(ATTRIBUTES)), ATTRIBUTES, fontsize=6)
    ax.set_title(f"phi between labels ({result.bias.split} split, {result.bias.faces} faces)",
                 fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.04)
    fig.tight_layout()
    return _png(fig)


def figures(result: AuditResult) -> dict[str, bytes]:
    """file name -> PNG bytes: a heatmap per latent and method, the plot, the phi matrix."""
    alpha = float(result.settings.headline)
    vals = [abs(v) for lat in result.latents.values() for bm in lat.edits.values()
            for ba in bm.values() if alpha in ba for v in np.asarray(ba[alpha].leakage)[
                np.asarray(result.judge.can_judge)] if math.isfinite(v)]
    vmax = float(np.percentile(vals, 99)) if vals else 1.0
    vmax = max(round(vmax, 1), 0.1)
    out = {f"heatmap_{lat}_{m}.png": heatmap_png(result, lat, m, vmax)
           for lat in result.latents for m in result.settings.methods}
    out["efficacy_leakage.png"] = efficacy_plot_png(result)
    out["phi.png"] = phi_png(result)
    return out


# ---------------------------------------------------------------------------- writing

def write_report(out: str | Path, result: AuditResult, inputs: dict[str, Any],
                 strips: dict[str, bytes] | None = None, codemap: MapFigure | None = None) -> Path:
    """Write the whole report folder at `out` (atomically) and return it. `codemap`: the audited
    VAE's map of the codes during training (faceedit.codemap), shown and kept as codemap.gif."""
    strips = strips or {}
    doc = report_document(result, inputs)
    pngs = figures(result)
    key = edit_audit_key_figure(doc)
    if key is not None:
        pngs["key_figure.png"] = key
    for attr, png in strips.items():
        pngs[f"strip_{attr}.png"] = png
    out = Path(out)
    with atomic_dir(out) as tmp:
        tmp.chmod(0o755)  # mkdtemp makes it owner-only; a report is for every reader
        (tmp / "report.json").write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
        (tmp / "leakage.csv").write_text(leakage_csv(result))
        for name, data in pngs.items():
            (tmp / name).write_bytes(data)
        if codemap is not None:
            (tmp / "codemap.gif").write_bytes(codemap.gif)
        (tmp / "report.html").write_text(render_html(result, inputs, pngs, list(strips), codemap))
    return out


def esc(x: Any) -> str:
    return html.escape(str(x))


# ---------------------------------------------------------------------------- html

CSS = """
body{font-family:system-ui,sans-serif;margin:24px;max-width:1150px;color:#222}
h1{font-size:22px}h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:12px;margin:8px 0}
td,th{border:1px solid #ddd;padding:2px 6px;text-align:right}th{background:#f4f4f4}
td.l,th.l{text-align:left}.cj{color:#aaa}.cj td{color:#aaa}.good{color:#2a7}.bad{color:#c33}
.note{font-size:12px;color:#555}img{max-width:100%}code{font-size:12px}
"""


def _f(x: Any, digits: int = 2, sign: bool = False) -> str:
    """A number as the report shows it: first rounded as report.json holds it (`_num`), so the page
    and the json agree to the digit; n/a for None, NaN or inf."""
    x = None if x is None else _num(x)
    if x is None:
        return "n/a"
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def _table(header: Sequence[str], rows: Sequence[tuple[Sequence[str], bool]], left: int = 1) -> str:
    """rows: (cells, greyed). The first `left` columns are left-aligned. Cells are already escaped."""
    th = "".join(f'<th class="l">{h}</th>' if i < left else f"<th>{h}</th>" for i, h in enumerate(header))
    body = []
    for cells, grey in rows:
        tds = "".join(f'<td class="l">{c}</td>' if i < left else f"<td>{c}</td>" for i, c in enumerate(cells))
        body.append(f'<tr class="cj" title="the judge cannot judge this attribute">{tds}</tr>' if grey
                    else f"<tr>{tds}</tr>")
    return f"<table><tr>{th}</tr>{''.join(body)}</table>"


def _img(pngs: dict[str, bytes], name: str, alt: str) -> str:
    return f'<p><img alt="{esc(alt)}" src="{data_uri(pngs[name])}"></p>' if name in pngs else ""


KEY_FIGURE_CAPTION = ("For the attributes whose naive vectors change another attribute most: how much "
                      "each method's edit changes that other attribute (the judge's logit, in its sd; "
                      "± the recommended method's standard error). Long red and short blue bars: the "
                      "dataset's correlations that balancing removes.")


def render_html(result: AuditResult, inputs: dict[str, Any], pngs: dict[str, bytes],
                strips: Sequence[str], codemap: MapFigure | None = None) -> str:
    """The self-contained page (every image inlined as base64): the audit's numbers as report.json
    rounds them, its figures and strips."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>faceedit audit</title>"
             f"<style>{CSS}{OPENING_CSS}</style></head><body>"]
    # One screen first: the findings as sentences, then the key figure; the detail below.
    parts.append(opening_html("faceedit attribute-bias audit",
                              edit_audit_headlines(report_document(result, inputs)),
                              pngs.get("key_figure.png"), KEY_FIGURE_CAPTION))
    parts.append("<h2>Verdicts</h2><p class='note'>At the headline strength; the recommended method "
                 "has the least mean leakage among those within 90% of the best efficacy. Weak: no "
                 f"method changes P(attribute) by {WEAK_EFFICACY}. Grey: the judge cannot judge the "
                 "attribute, so its numbers are not evidence.</p>")
    parts.append(_table(["verdict"], [([esc(v["text"])], not v["can_judge"])
                                      for v in verdicts(result).values()]))
    parts.append(_edits_html(result))
    parts.append(_comparison_html(result))
    parts.append("<h2>Leakage heatmaps</h2>")
    for name in pngs:  # in the order `figures` made them: VAE methods, then PCA
        if name.startswith("heatmap_"):
            parts.append(_img(pngs, name, name))
    parts.append("<h2>Efficacy vs leakage</h2>" + _img(pngs, "efficacy_leakage.png", "efficacy vs leakage"))
    if strips:
        parts.append("<h2>Figure-7 strips of the most leaking attributes</h2><p class='note'>One "
                     "held-out face edited from -2 to +2 (0: the unedited reconstruction), one row "
                     "per method (White 2016, Figure 7).</p>")
        for attr in strips:
            parts.append(f"<h3>{esc(attr)}</h3>" + _img(pngs, f"strip_{attr}.png", attr))
    if codemap is not None:
        parts.append(_codemap_html(codemap))
    parts.append(_judge_html(result))
    parts.append(_bias_html(result, pngs))
    parts.append("<h2>Settings and inputs</h2>" + _summary_html(result, inputs))
    parts.append("</body></html>\n")
    return "".join(parts)


def _codemap_html(codemap: MapFigure) -> str:
    """The audited VAE's codes of fixed val faces, one frame per epoch of its training."""
    src = data_uri(codemap.gif, "image/gif")
    return (f"<h2>The map of the codes during training</h2><p class='note'>mu of {codemap.faces} "
            f"fixed val faces in {codemap.epochs} frames of the audited VAE's training (the first before "
            f"it, then one per epoch), on "
            f"one 2-D projection (the last epoch's principal axes), coloured by "
            f"{esc(codemap.attribute)}; the grey circle is radius 2 of the prior N(0, I). The codes "
            f"pack towards the prior as the KL term works (also codemap.gif beside this page).</p>"
            f'<p><img alt="map of the codes" src="{src}"></p>')


def _summary_html(result: AuditResult, inputs: dict[str, Any]) -> str:
    st = result.settings
    items = [("attributes audited", len(result.attributes)), ("methods", ", ".join(st.methods)),
             ("strengths", ", ".join(f"{s:+g}" for s in st.strengths)),
             ("headline strength", f"{st.headline:+g}"),
             ("faces per attribute and side (at most)", st.faces), ("split", st.split),
             ("held-out faces scored", len(result.faces.rows)), ("edited images scored", result.edited_images),
             ("judge: attributes it cannot judge", ", ".join(cannot_judge(result)) or "none"),
             ("seed", st.seed)]
    rows = [([esc(k), esc(v)], False) for k, v in items]
    rows += [([esc(f"input {k}"), f"<code>{esc(v)}</code>"], False) for k, v in sorted(inputs.items())]
    return ("<p class='note'>Leakage of an edit into attribute b: the mean change of the judge's "
            "logit of b between the edited and the unedited reconstruction, in units of b's logit "
            "standard deviation over the held-out originals (Attribute Dependency, Wu et al. 2021). "
            "Efficacy: the mean change of P(a). Identity: distance of the judge's penultimate "
            "features over the median distance between two different faces (1 = another face), "
            "and PSNR against the unedited reconstruction.</p>" + _table(["setting", "value"], rows, 2))


def _edits_html(result: AuditResult) -> str:
    alpha = float(result.settings.headline)
    vae, pca = result.latents.get("vae"), result.latents.get("pca")
    can = result.can()
    rows = []
    for attr in result.attributes:
        naive = vae.edit(attr, "naive", alpha) if vae is not None else None
        ref = naive.leak_max_attribute if naive is not None else None
        conf = confounders(result, attr) or []
        for method in result.settings.methods:
            s = vae.edit(attr, method, alpha) if vae is not None else None
            if s is None:
                continue
            p = pca.edit(attr, method, alpha) if pca is not None else None
            cells = [esc(attr), esc(method), _f(s.efficacy, 2, True), _f(s.flip),
                     _f(s.target_sd, 2, True), _f(s.leak_mean, 3), _f(s.leak_max, 2),
                     esc(s.leak_max_attribute or ""),
                     (f"{esc(ref)} {_f(s.leakage[attribute_index(ref)], 2, True)}" if ref else ""),
                     "<br>".join(f"{esc(c)} {_f(s.leakage[attribute_index(c)], 2, True)}" for c in conf),
                     _f(s.leak_mean_vs_original, 3), _f(s.identity_feature), _f(s.psnr, 1)]
            cells += [_f(p.efficacy, 2, True), _f(p.leak_mean, 3)] if p is not None else ["", ""]
            rows.append((cells, not can[attr]))
    return (f"<h2>Edits at alpha {_alpha_key(alpha)}</h2>" + _table(
        ["attribute", "method", "&Delta;P(a)", "flip", "&Delta;a (sd)", "leak mean (sd)", "leak max",
         "into", "naive's most leaked (sd)", "into its confounders (sd)", "leak mean vs original", "identity", "PSNR dB",
         "PCA &Delta;P(a)", "PCA leak mean"], rows, 2))


def _comparison_html(result: AuditResult) -> str:
    comp = latent_comparison(result)
    if not comp:
        return ""
    rows = []
    for label, table in (("", comp), (", within groups", latent_comparison(result, key="leak_mean_within"))):
        rows += [([esc(m + label), str(c["attributes"]), _f(c["vae_mean_leakage"], 3),
                   _f(c["pca_mean_leakage"], 3), _pm(c["difference"], c["difference_se"]),
                   f"{c['vae_cleaner']} of {c['attributes']}", _f(c["sign_test_p"], 3)], False)
                 for m, c in table.items()]
    return ("<h2>VAE vs PCA latent at the same efficacy</h2><p class='note'>Mean leakage of each "
            "latent's edits where both reach the same change in P(a) (the smaller of the two "
            "largest, interpolated over the positive strengths), judgeable attributes only. "
            "VAE - PCA: the mean paired difference over those attributes, with its standard "
            "error; p: two-sided sign test of the count of attributes where the VAE leaks less. "
            "Within groups: each other attribute b's shift measured separately among the faces "
            "labelled b and not b (a shift that moves the two groups apart cancels in the plain "
            "mean, not here).</p>"
            + _table(["method", "attributes", "VAE mean leakage", "PCA mean leakage", "VAE - PCA",
                      "VAE cleaner", "p"], rows))


def _pm(value: float | None, se: float | None) -> str:
    if value is None:
        return ""
    return f"{value:+.3f}" + (f" &plusmn; {se:.3f}" if se is not None else "")


def _judge_html(result: AuditResult) -> str:
    j = result.judge
    can = result.can()
    rec = {name: lat.reconstruction for name, lat in result.latents.items()}
    header = ["attribute", "judge AUC (val)", "rate (train)"]
    for lat in rec:
        header += [f"{lat.upper()} AUC on recon.", f"{lat.upper()} recon. shift (sd)"]
    rows = []
    for k, a in enumerate(ATTRIBUTES):
        cells = [esc(a) + ("" if can[a] else " (cannot judge)"), _f(j.auc[k], 3),
                 _f(result.bias.rates[k], 3)]
        for lat, r in rec.items():
            cells += [_f(r.auc_reconstruction[k], 3), _f(r.shift[k], 2, True)]
        rows.append((cells, not can[a]))
    who = ("An image classifier independent of the VAE" if j.members == 1 else
           f"A committee of {j.members} image classifiers independent of the VAE, trained alike "
           "from different seeds, scoring with the mean of their logits (AUC: the committee's)")
    return (f"<h2>The judge</h2><p class='note'>{who}; "
            f"attributes with held-out AUC below {_jsonable(j.min_auc)} cannot be judged and are greyed out "
            "everywhere. The reconstruction columns show what encoding and decoding alone do to "
            "each attribute (the judge's AUC on reconstructions of the audited faces, and the mean "
            "logit shift from the original).</p>" + _table(header, rows))


def _bias_html(result: AuditResult, pngs: dict[str, bytes]) -> str:
    out = ["<h2>Dataset bias</h2>", _img(pngs, "phi.png", "phi matrix")]
    vec = _jsonable(result.bank_cells)  # bank.json's record of each vector, as report.json holds it
    rows = []
    for attr, rec in vec.items():
        cells_txt = "; ".join(
            f"{','.join(f'{k}={v}' for k, v in c['values'].items())}: {c['count']} x{c['factor']:.3g}"
            + (" capped" if c.get("capped") else "") for c in rec.get("cells", []))
        ess = rec.get("ess", {})
        rows.append(([esc(attr), esc(", ".join(rec.get("confounders", [])) or "none"),
                      esc(cells_txt), _f(ess.get("positive"), 0), _f(ess.get("negative"), 0),
                      esc("; ".join(rec.get("tiny_cells", [])) or "")], False))
    if rows:
        out.append("<p class='note'>Cells of each balanced vector (attribute x confounders): count "
                   "and replication factor (White 2016), Kish effective sample size per side, and "
                   "warnings about tiny cells.</p>")
        out.append(_table(["attribute", "confounders", "cells: count x factor", "ESS +", "ESS -",
                           "tiny cells"], rows, 3))
    return "".join(out)
