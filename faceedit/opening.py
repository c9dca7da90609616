"""The first screen of an audit report: the findings as sentences with their numbers, then the key
figure, then (below, in the report itself) the detail. Shared by the edit audit's report
(faceedit/report.py) and the classifier audit's (faceedit/classifier_report.py).

The edit audit's sentences and figure are read from its report.json document, so they say exactly
what the tables below them say.
"""

from __future__ import annotations

import base64
import html
import io
import math
from typing import Any

CSS = (".headline{font-size:15px;line-height:1.45;background:#f7f7f2;border:1px solid #e2e2d6;"
       "padding:8px 14px 8px 30px;margin:10px 0}.headline li{margin:4px 0}")

KEY_ATTRIBUTES = 12  # bars in the edit audit's key figure


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


def opening_html(title: str, sentences: list[str], figure_png: bytes | None, caption: str) -> str:
    """A title, the findings as a list of sentences, the key figure with its caption."""
    esc = html.escape
    items = "".join(f"<li>{esc(s)}</li>" for s in sentences)
    fig = (f'<p><img alt="{esc(caption)}" src="{data_uri(figure_png)}"></p><p class="note">{esc(caption)}</p>'
           if figure_png else "")
    return f"<h1>{esc(title)}</h1><ul class='headline'>{items}</ul>{fig}"


# ---------------------------------------------------------------------------- the edit audit

def _headline_edits(doc: dict[str, Any], latent: str = "vae") -> dict[str, dict[str, dict]]:
    key = f"{float(doc['settings']['headline']):+g}"
    return {a: {m: by_alpha[key] for m, by_alpha in by_method.items() if key in by_alpha}
            for a, by_method in doc["latents"].get(latent, {}).get("edits", {}).items()}


def _leak(s: dict, attr: str | None) -> tuple[float, float]:
    if not attr:
        return math.nan, math.nan
    v = (s.get("leakage") or {}).get(attr)
    se = (s.get("leakage_se") or {}).get(attr)
    return (abs(v) if v is not None else math.nan), (se if se is not None else math.nan)


def edit_cuts(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Per judgeable attribute with a naive vector: its naive edit's most leaked attribute b (the
    verdict's), and how much each method leaks into b, with the recommended method's efficacy
    beside naive's. Sorted by naive's leak into b, largest first."""
    head = _headline_edits(doc)
    out = []
    for attr, v in doc.get("verdicts", {}).items():
        by = head.get(attr, {})
        b = v.get("most_leaked")
        if not v.get("can_judge") or "naive" not in by or not b or not doc["judge"]["can_judge"].get(b):
            continue
        rec = v["method"]
        naive, best = _leak(by["naive"], b), _leak(by[rec], b)
        if not math.isfinite(naive[0]):
            continue
        out.append({"attribute": attr, "into": b, "method": rec, "naive": naive[0], "naive_se": naive[1],
                    "best": best[0], "best_se": best[1],
                    "balanced": _leak(by["balanced"], b)[0] if "balanced" in by else math.nan,
                    "naive_efficacy": by["naive"]["efficacy"], "best_efficacy": by[rec]["efficacy"]})
    out.sort(key=lambda r: -r["naive"])
    return out


def _listing(names: list[str], most: int = 6) -> str:
    return ", ".join(names) if len(names) <= most else f"{', '.join(names[:most])} and {len(names) - most} more"


def _se(x: float) -> str:
    return f" ± {x:.2f}" if math.isfinite(x) else ""


def edit_audit_headlines(doc: dict[str, Any]) -> list[str]:
    """The edit audit's findings as sentences, from its report.json document."""
    st, out = doc["settings"], []
    alpha = f"{float(st['headline']):+g}"
    verdicts = doc.get("verdicts", {})
    judged = [a for a, v in verdicts.items() if v.get("can_judge")]
    cannot = [a for a in doc["judge"].get("cannot_judge", []) if a in doc["attributes"]]
    out.append(f"{len(doc['attributes'])} attributes were edited on up to {st['faces']} held-out faces each "
               f"({doc['edited_images']:,} edited images) by {', '.join(st['methods'])} vectors and "
               f"re-scored by an independent judge; figures are at strength {alpha}, a leakage is the change "
               "of another attribute's judged logit in its sd" + (
                   f"; the judge cannot judge {len(cannot)} of them: {_listing(cannot)}." if cannot else "."))
    cuts = edit_cuts(doc)
    head = _headline_edits(doc)
    if "Smiling" in head and {"naive", "balanced"} <= set(head["Smiling"]) and doc["judge"]["can_judge"].get("Male"):
        n, b = head["Smiling"]["naive"], head["Smiling"]["balanced"]
        (ln, sn), (lb, sb) = _leak(n, "Male"), _leak(b, "Male")
        out.append(f"White's Figure 7: the naive smile vector changes gender by {ln:.2f}{_se(sn)} sd, the "
                   f"balanced one by {lb:.2f}{_se(sb)} sd, at an efficacy of {b['efficacy']:+.2f} against "
                   f"{n['efficacy']:+.2f} P(Smiling).")
    if cuts:
        out.append("The naive vectors that change another attribute most: " + "; ".join(
            f"{r['attribute']} changes {r['into']} by {r['naive']:.2f} sd" for r in cuts[:3]) + ".")
        bal = [r for r in cuts if math.isfinite(r["balanced"]) and r["naive"] > 0]
        if bal:
            share = sum(r["balanced"] < r["naive"] for r in bal)
            med = sorted(1 - r["balanced"] / r["naive"] for r in bal)[len(bal) // 2]
            out.append(f"Balanced vectors change that attribute less than naive ones for {share} of "
                       f"{len(bal)} judgeable attributes (median cut {med:.0%}); where they also change "
                       "their own attribute much less, a method that keeps the efficacy is recommended.")
    if judged:
        counts: dict[str, int] = {}
        for a in judged:
            counts[verdicts[a]["method"]] = counts.get(verdicts[a]["method"], 0) + 1
        out.append("Recommended (least leakage within 90% of the best efficacy): " + ", ".join(
            f"{m} for {n}" for m, n in sorted(counts.items(), key=lambda t: -t[1])) +
            f" of the {len(judged)} judgeable attributes.")
    weak = [a for a, v in verdicts.items() if "[weak:" in v.get("text", "")]
    if weak:
        out.append(f"{len(weak)} weak edits (no method changes P(attribute) by 0.1): {_listing(weak)}; "
                   "their leakages say little.")
    comps = doc.get("vae_vs_pca") or {}
    method = "balanced" if "balanced" in comps else next(iter(comps), None)
    comp = comps.get(method) if method else None
    if comp and comp.get("attributes"):
        d, se = comp.get("difference"), comp.get("difference_se")
        out.append(f"At equal efficacy the VAE's {method} edits leak {comp['vae_mean_leakage']:.3f} sd on "
                   f"average, PCA's {comp['pca_mean_leakage']:.3f} (difference {d:+.3f}"
                   + (f" ± {se:.3f}" if se is not None else "") + f"; the VAE is cleaner for "
                   f"{comp['vae_cleaner']} of {comp['attributes']} attributes, sign test p = "
                   f"{comp['sign_test_p']:.2g}).")
    return out


def edit_audit_key_figure(doc: dict[str, Any]) -> bytes | None:
    """Naive vs balanced vs the recommended method: leakage into naive's most leaked attribute, for
    the attributes whose naive vectors leak most (± the recommended method's standard error)."""
    cuts = edit_cuts(doc)[:KEY_ATTRIBUTES]
    if not cuts:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = cuts[::-1]  # barh draws upwards: the largest on top
    y = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(10, 1.0 + 0.34 * len(rows)))
    ax.barh(y + 0.27, [r["naive"] for r in rows], 0.27, color="#d62728", label="naive")
    if any(math.isfinite(r["balanced"]) for r in rows):
        ax.barh(y, [r["balanced"] if math.isfinite(r["balanced"]) else 0 for r in rows], 0.27,
                color="#1f77b4", label="balanced")
    ax.barh(y - 0.27, [r["best"] for r in rows], 0.27,
            xerr=[r["best_se"] if math.isfinite(r["best_se"]) else 0 for r in rows], capsize=2,
            color="#2ca02c", label="recommended (per attribute)")
    ax.set_yticks(y, [f"{r['attribute']} -> {r['into']} ({r['method']})" for r in rows], fontsize=8)
    ax.set_xlabel(f"|change| of the other attribute's judged logit, sd, at strength "
                  f"{float(doc['settings']['headline']):+g}", fontsize=8)
    ax.set_title("what each edit also changes: naive vectors against the balanced and recommended ones",
                 fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})  # no version: same bytes
    plt.close(fig)
    return buf.getvalue()
