"""The classifier audit's report: report.json, sensitivity.csv, real_data.csv, PNG figures and a
self-contained report.html that opens with the findings as sentences and the key figure.

Like the edit audit's report (faceedit/report.py, whose number formatting and html helpers it
shares): a pure function of the audit's result, floats rounded to 6 significant digits, no
timestamps, written atomically (faceedit/files.py `atomic_dir`). report.json's "ranking" lists the
attributes from most to least sensitive, one object each, so scripts can read it.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

from faceedit.classifier_audit import ClassifierAuditResult, Effect, RankEntry, Sensitivity
from faceedit.files import atomic_dir
from faceedit.opening import CSS as OPENING_CSS
from faceedit.opening import opening_html
from faceedit.opening import data_uri
from faceedit.report import CSS, _f, _jsonable, _num, _png, _pyplot, _table, esc

HEADLINE_ATTRIBUTES = 12  # bars in the key figure


# ---------------------------------------------------------------------------- sentences

def _pm(x: float, se: float, digits: int = 3, pct: bool = False) -> str:
    if x is None or not math.isfinite(x):
        return "n/a"
    if pct:
        return f"{x:.0%}" + (f" ± {se:.0%}" if math.isfinite(se) else "")
    return f"{x:+.{digits}f}" + (f" ± {se:.{digits}f}" if math.isfinite(se) else "")


def _distinct(e: Effect) -> bool:
    """A change more than two standard errors from zero."""
    return e.n > 1 and math.isfinite(e.change_se) and abs(e.change) > 2 * e.change_se


def headlines(result: ClassifierAuditResult) -> list[str]:
    """The findings a person reads first, as sentences with their numbers."""
    cfg, out = result.config, []
    name = f"P({result.output})"
    if not result.ranking:
        return [f"No attribute has {cfg.min_kept} counterfactuals the judge kept at strength "
                f"{cfg.headline:g}: nothing can be ranked (see the counts below; more --faces, or a "
                "stronger edit, may help)."]
    top = result.ranking[0].sensitivity
    out.append(
        f"The classifier's output {result.output!r} responds most to {top.attribute}: when a face "
        f"gains {top.attribute} ({top.method} vector, strength {top.strength:g}), {name} moves by "
        f"{_pm(top.kept.change, top.kept.change_se)} and {_pm(top.kept.flip, top.kept.flip_se, pct=True)} "
        f"of its decisions flip, over {top.kept.n} counterfactuals"
        + (" the judge confirmed." if result.judge_checks else " (no judge checked them)."))
    nxt = [e.sensitivity for e in result.ranking[1:4] if _distinct(e.sensitivity.kept)]
    if nxt:
        out.append("Next: " + "; ".join(f"{s.attribute} {_pm(s.kept.change, s.kept.change_se)} "
                                         f"({s.kept.flip:.0%} flip)" for s in nxt) + ".")
    else:
        out.append(f"No other attribute moves {name} by more than two standard errors from zero.")
    for g in cfg.groups:
        if g == top.attribute:
            continue
        yes = next(x.effect for x in top.groups if x.group == g and x.value)
        no = next(x.effect for x in top.groups if x.group == g and not x.value)
        if yes.n and no.n:
            out.append(f"By group, gaining {top.attribute} moves {name} by {_pm(yes.change, yes.change_se)} "
                       f"among faces labelled {g} ({yes.n}) and {_pm(no.change, no.change_se)} among the "
                       f"others ({no.n}).")
        break
    if result.own is not None:
        o = result.own
        strong = abs(o.kept.change) > 2 * abs(top.kept.change)
        out.append(f"For scale, gaining {o.attribute} itself moves {name} by {_pm(o.kept.change, o.kept.change_se)} "
                   f"({o.kept.flip:.0%} flip)" + (
                       ": the output answers to what it is meant to see more than to any other attribute."
                       if strong else
                       f": not much more than {top.attribute} does, so either the classifier leans on "
                       f"{top.attribute} or the counterfactuals are too weak for it."))
    real = result.real
    if real.target:
        g = real.group(top.attribute, True), real.group(top.attribute, False)
        out.append(f"On the {real.faces} real {real.split} faces, its error rate on {real.target} is "
                   f"{_pm(g[0].error, g[0].error_se, pct=True)} among faces labelled {top.attribute} and "
                   f"{_pm(g[1].error, g[1].error_se, pct=True)} among the others (overall {real.error:.0%}).")
        gaps = [(abs(e.real_error_gap), e) for e in result.ranking if e.real_error_gap is not None]
        if gaps:
            _, e = max(gaps, key=lambda t: t[0])
            if e.attribute != top.attribute:
                out.append(f"The largest real-data gap is {e.attribute}'s ({e.real_error_gap:+.1%} ± "
                           f"{e.real_error_gap_se:.1%} error with it than without), where the "
                           f"counterfactual change is {_pm(e.sensitivity.kept.change, e.sensitivity.kept.change_se)} "
                           f"(rank {e.rank}): a gap in the data is not by itself a dependence of the model.")
    if result.judge_checks:
        made = sum(s.made for s in result.sensitivities if s.strength == cfg.headline and s.method == cfg.methods[0])
        nc = sum(s.no_change for s in result.sensitivities if s.strength == cfg.headline and s.method == cfg.methods[0])
        tc = sum(s.target_changed for s in result.sensitivities if s.strength == cfg.headline and s.method == cfg.methods[0])
        out.append(f"The judge left out {nc + tc} of {made} counterfactuals at this strength: {nc} did "
                   f"not show their attribute change" + (f" and {tc} changed {result.target}" if result.target else "")
                   + ".")
    else:
        out.append("No judge was given: no counterfactual was checked, so an edit that changed the "
                   "audited attribute itself may be counted against the classifier.")
    rc = result.reconstruction
    out.append(f"The counterfactuals are VAE reconstructions: the classifier's decision on a reconstruction "
               f"agrees with that on the original photo for {rc.agreement:.0%} of the {rc.faces} faces.")
    return out


# ---------------------------------------------------------------------------- json and csv

def _effect_json(e: Effect) -> dict[str, Any]:
    return _jsonable(asdict(e))


def _entry_json(e: RankEntry) -> dict[str, Any]:
    s = e.sensitivity
    return _jsonable({
        "rank": e.rank, "attribute": e.attribute, "method": s.method, "strength": s.strength,
        "change": s.kept.change, "change_se": s.kept.change_se, "flip": s.kept.flip,
        "flip_se": s.kept.flip_se, "logit_change": s.kept.logit_change, "kept": s.kept.n,
        "made": s.made, "no_change": s.no_change, "target_changed": s.target_changed,
        "judge_can_judge": s.checked, "unfiltered_change": s.unfiltered.change,
        "unfiltered_change_se": s.unfiltered.change_se,
        "groups": [{"group": g.group, "labelled": g.value, **asdict(g.effect)} for g in s.groups],
        "real_error_gap": e.real_error_gap, "real_error_gap_se": e.real_error_gap_se})


def report_document(result: ClassifierAuditResult) -> dict[str, Any]:
    return _jsonable({
        "format": 1,
        "kind": "classifier-audit",
        "inputs": result.inputs,
        "classifier": result.classifier,
        "output": result.output,
        "target": result.target,
        "settings": result.config.to_dict(),
        "judge": {"checks": result.judge_checks, "min_auc": result.judge_min_auc, "auc": result.judge_auc},
        "faces": result.faces,
        "headline": headlines(result),
        "ranking": [_entry_json(e) for e in result.ranking],
        "own_attribute": _sens_json(result.own) if result.own else None,
        "sensitivities": [_sens_json(s) for s in result.sensitivities],
        "reconstruction": asdict(result.reconstruction),
        "real_data": asdict(result.real),
        "flips": [asdict(f) for f in result.flips],
    })


def _sens_json(s: Sensitivity) -> dict[str, Any]:
    d = asdict(s)
    d["groups"] = [{"group": g.group, "labelled": g.value, **asdict(g.effect)} for g in s.groups]
    return _jsonable(d)


def _v(x: float | None) -> str:
    v = None if x is None else _num(x)
    return "" if v is None else repr(v)


def sensitivity_csv(result: ClassifierAuditResult) -> str:
    """One row per (attribute, method, strength, subset of counterfactuals)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["attribute", "method", "strength", "subset", "n", "change", "change_se", "flip",
                "flip_se", "logit_change", "made", "no_change", "target_changed", "judge_can_judge"])
    for s in result.sensitivities:
        subsets = [("kept", s.kept), ("unfiltered", s.unfiltered), ("gain", s.gain), ("loss", s.loss)]
        subsets += [(f"{g.group}={int(g.value)}", g.effect) for g in s.groups]
        for name, e in subsets:
            w.writerow([s.attribute, s.method, f"{s.strength:g}", name, e.n, _v(e.change), _v(e.change_se),
                        _v(e.flip), _v(e.flip_se), _v(e.logit_change), s.made, s.no_change,
                        s.target_changed, int(s.checked)])
    return buf.getvalue()


def real_data_csv(result: ClassifierAuditResult) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["attribute", "labelled", "n", "error", "error_se", "false_positive", "false_negative",
                "positive_rate"])
    for g in result.real.groups:
        w.writerow([g.attribute, int(g.value), g.n, _v(g.error), _v(g.error_se), _v(g.false_positive),
                    _v(g.false_negative), _v(g.positive_rate)])
    return buf.getvalue()


# ---------------------------------------------------------------------------- figures

def key_figure_png(result: ClassifierAuditResult) -> bytes:
    """The ranking's top attributes: the counterfactual change of P(output) with its standard error
    (left) beside the real-data error gap (right)."""
    plt = _pyplot()
    top = list(result.ranking[:HEADLINE_ATTRIBUTES])[::-1]  # barh draws upwards: the first on top
    own = result.own
    names = ([f"{own.attribute} (its own)"] if own else []) + [e.attribute for e in top]
    ch = ([own.kept.change] if own else []) + [e.sensitivity.kept.change for e in top]
    se = ([own.kept.change_se] if own else []) + [e.sensitivity.kept.change_se for e in top]
    se = [x if math.isfinite(x) else 0.0 for x in se]
    real = result.real.target is not None
    fig, axes = plt.subplots(1, 2 if real else 1, figsize=(11 if real else 7, 1.2 + 0.32 * len(names)),
                             squeeze=False, sharey=True, gridspec_kw={"width_ratios": [3, 2]} if real else None)
    ax = axes[0][0]
    colours = ["#999999" if own and i == 0 else ("#c33" if c < 0 else "#2a7") for i, c in enumerate(ch)]
    ax.barh(range(len(names)), ch, xerr=se, color=colours, capsize=2)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.axvline(0, color="#444", lw=0.6)
    ax.set_xlabel(f"change of P({result.output}) when the face gains the attribute "
                  f"({result.config.methods[0]}, strength {result.config.headline:g}; ± s.e.)", fontsize=8)
    ax.set_title("counterfactual faces: what the model depends on", fontsize=9)
    if real:
        ax2 = axes[0][1]
        gaps = [e.real_error_gap if e.real_error_gap is not None else 0.0 for e in top]
        gse = [e.real_error_gap_se if e.real_error_gap_se is not None else 0.0 for e in top]
        if own:
            gaps.insert(0, 0.0)
            gse.insert(0, 0.0)
        ax2.barh(range(len(names)), gaps, xerr=gse, color="#77a", capsize=2)
        ax2.axvline(0, color="#444", lw=0.6)
        ax2.set_xlabel(f"error rate on {result.target}: with the attribute minus without (± s.e.)", fontsize=8)
        ax2.set_title(f"real {result.real.split} faces: where it errs", fontsize=9)
    fig.tight_layout()
    return _png(fig)


def curves_png(result: ClassifierAuditResult, n: int = 6) -> bytes:
    """Change of P(output) against the signed strength (negative: faces with the attribute, edited
    to lose it) for the top-ranked attributes and the target, one line per method, ± s.e."""
    plt = _pyplot()
    attrs = [e.attribute for e in result.ranking[:n]] + ([result.own.attribute] if result.own else [])
    cols = min(len(attrs), 4) or 1
    rows = math.ceil(len(attrs) / cols) or 1
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False, sharey=True)
    styles = ["-", "--", ":", "-."]
    for i, a in enumerate(attrs):
        ax = axes[i // cols][i % cols]
        for j, m in enumerate(result.config.methods):
            xs, ys, es = [0.0], [0.0], [0.0]
            for s in sorted(result.config.strengths):
                st = result.sensitivity(a, m, s)
                for sign, e in ((1.0, st.gain), (-1.0, st.loss)):
                    if e.n:
                        # loss is oriented as gaining a: the actual change at -s is its negation
                        xs.append(sign * s)
                        ys.append(e.change if sign > 0 else -e.change)
                        es.append(e.change_se if math.isfinite(e.change_se) else 0.0)
            order = sorted(range(len(xs)), key=lambda k: xs[k])
            xs, ys, es = ([v[k] for k in order] for v in (xs, ys, es))
            ax.errorbar(xs, ys, yerr=es, ls=styles[j % 4], marker="o", ms=3, capsize=2, label=m)
        ax.axhline(0, color="#888", lw=0.5)
        ax.axvline(0, color="#888", lw=0.5)
        ax.set_title(a + (" (its own)" if result.own and a == result.own.attribute else ""), fontsize=9)
        ax.tick_params(labelsize=7)
        if i % cols == 0:
            ax.set_ylabel(f"change of P({result.output})", fontsize=8)
        if i // cols == rows - 1:
            ax.set_xlabel("strength (- : faces with it, made without)", fontsize=7)
        if i == 0 and len(result.config.methods) > 1:
            ax.legend(fontsize=7)
    for k in range(len(attrs), rows * cols):
        axes[k // cols][k % cols].axis("off")
    fig.tight_layout()
    return _png(fig)


def figures(result: ClassifierAuditResult) -> dict[str, bytes]:
    return {"ranking.png": key_figure_png(result), "curves.png": curves_png(result)}


# ---------------------------------------------------------------------------- html

def render_html(doc: dict[str, Any], result: ClassifierAuditResult, pngs: dict[str, bytes],
                strips: list[str]) -> str:
    cfg = result.config
    title = f"faceedit counterfactual audit of {result.classifier.get('file', 'a classifier')}, output {result.output!r}"
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title>"
             f"<style>{CSS}{OPENING_CSS}td{{white-space:nowrap}}</style></head><body>",
             opening_html(title, doc["headline"], pngs.get("ranking.png"),
                          "Left: how much the classifier's answer moves when only one attribute of a face "
                          "changes (the judge-checked counterfactuals). Right: how much more often it errs "
                          "on real faces with the attribute than without. Grey bar: the attribute it is "
                          "meant to see.")]
    parts.append(f"<h2>Ranking at strength {cfg.headline:g} ({esc(cfg.methods[0])} vectors)</h2>"
                 "<p class='note'>Change: mean change of P(output) when a face gains the attribute (faces "
                 "with it, edited to lose it, counted negated), against the unedited reconstruction; "
                 "flip: share of decisions (P &gt; 0.5) that changed; both over the counterfactuals the "
                 "judge kept, &plusmn; one standard error. Left out: the judge did not see the attribute "
                 "change / saw the audited attribute change. Unfiltered: every counterfactual. Grey: the "
                 "judge cannot judge the attribute, so its counterfactuals were not checked for it.</p>")
    header = ["#", "attribute", "change", "flip", "kept / made", "left out: no change", "left out: changed target",
              "target drift (sd)", "unfiltered change"]
    header += [f"{g} / not {g}" for g in cfg.groups]
    header += ["real error gap"]
    rows = []
    for e in result.ranking:
        s = e.sensitivity
        cells = [str(e.rank), esc(e.attribute), _pm(s.kept.change, s.kept.change_se),
                 _pm(s.kept.flip, s.kept.flip_se, pct=True), f"{s.kept.n} / {s.made}", str(s.no_change),
                 str(s.target_changed), _f(s.target_residual if math.isfinite(s.target_residual) else None, 2, True),
                 _pm(s.unfiltered.change, s.unfiltered.change_se)]
        for g in cfg.groups:
            y = next(x.effect for x in s.groups if x.group == g and x.value)
            n = next(x.effect for x in s.groups if x.group == g and not x.value)
            cells.append(f"{_f(y.change if y.n else None, 3, True)} / {_f(n.change if n.n else None, 3, True)}")
        cells.append(_pm(e.real_error_gap, e.real_error_gap_se or math.nan, 3) if e.real_error_gap is not None else "")
        rows.append((cells, not s.checked))
    parts.append(_table(header, rows, 2))
    ranked = {e.attribute for e in result.ranking}
    unranked = [s for s in result.sensitivities if s.method == cfg.methods[0] and s.strength == cfg.headline
                and s.attribute not in ranked and s.attribute != result.target]
    if unranked:
        parts.append(f"<p class='note'>Not ranked, fewer than {cfg.min_kept} counterfactuals kept: " + "; ".join(
            f"{esc(s.attribute)} {s.kept.n} of {s.made} ({s.no_change} no change, {s.target_changed} "
            f"changed the target)" for s in unranked) + ".</p>")
    if result.own is not None:
        o = result.own
        parts.append(f"<p class='note'>The audited attribute itself ({esc(o.attribute)}, not ranked): change "
                     f"{_pm(o.kept.change, o.kept.change_se)}, flip {o.kept.flip:.0%}, over {o.kept.n} of "
                     f"{o.made} counterfactuals.</p>")
    if len(cfg.methods) > 1:
        parts.append(_methods_html(result))
    parts.append("<h2>Score against strength</h2><p class='note'>The top-ranked attributes and the audited "
                 "attribute: mean change of P(output) at each strength (negative: faces with the attribute, "
                 "edited to lose it), kept counterfactuals, &plusmn; s.e.</p>"
                 f'<p><img alt="curves" src="{data_uri(pngs["curves.png"])}"></p>')
    if strips:
        parts.append("<h2>Counterfactuals that flipped its decision</h2><p class='note'>Original photo, "
                     "its reconstruction and the counterfactual, with P(output) on the reconstruction "
                     "and on the counterfactual (kept by the judge).</p>")
        for a in strips:
            parts.append(f"<h3>{esc(a)}</h3><p><img alt='{esc(a)}' src='{data_uri(pngs[f'strip_{a}.png'])}'></p>")
    parts.append(_real_html(result))
    parts.append(_settings_html(doc, result))
    parts.append("</body></html>\n")
    return "".join(parts)


def _methods_html(result: ClassifierAuditResult) -> str:
    cfg = result.config
    head = ["attribute"] + [f"{m}: change (kept)" for m in cfg.methods] + [f"{m}: unfiltered" for m in cfg.methods]
    rows = []
    for e in result.ranking:
        cells = [esc(e.attribute)]
        ss = [result.sensitivity(e.attribute, m) for m in cfg.methods]
        cells += [_pm(s.kept.change, s.kept.change_se) for s in ss]
        cells += [_pm(s.unfiltered.change, s.unfiltered.change_se) for s in ss]
        rows.append((cells, False))
    return (f"<h2>Methods compared at strength {cfg.headline:g}</h2><p class='note'>Naive vectors carry "
            "the dataset's correlations (White 2016, Figure 7): a naive edit of one attribute also moves "
            "those that go with it, and the classifier is then seen responding to them.</p>"
            + _table(head, rows))


def _real_html(result: ClassifierAuditResult) -> str:
    real = result.real
    if real.target is None:
        note = ("No target attribute is known for this output (--target), so only its rate of 'yes' "
                "by group is shown.")
    else:
        note = (f"The classifier's decisions on the {real.faces} labelled {real.split} faces as they are, "
                f"against their {real.target} labels: overall error {real.error:.1%}. Error, false "
                f"positive and false negative rates among faces labelled with each attribute and without "
                "(&plusmn; s.e.): the correlational view, beside the counterfactual one above.")
    rows = []
    for a in dict.fromkeys(g.attribute for g in real.groups):
        y, n = real.group(a, True), real.group(a, False)
        cells = [esc(a), str(y.n), str(n.n)]
        if real.target:
            cells += [_pm(y.error, y.error_se, pct=True), _pm(n.error, n.error_se, pct=True),
                      f"{_f(y.false_positive)} / {_f(n.false_positive)}", f"{_f(y.false_negative)} / {_f(n.false_negative)}"]
        cells += [f"{_f(y.positive_rate)} / {_f(n.positive_rate)}"]
        rows.append((cells, False))
    head = ["attribute", "faces with", "without"]
    if real.target:
        head += ["error with", "error without", "false pos. with / without", "false neg. with / without"]
    head += ["'yes' rate with / without"]
    return f"<h2>Real data: error rates by group</h2><p class='note'>{note}</p>" + _table(head, rows)


def _settings_html(doc: dict[str, Any], result: ClassifierAuditResult) -> str:
    st = doc["settings"]
    rc = result.reconstruction
    items = [("classifier", f"{result.classifier.get('file', '')} ({result.classifier.get('format', '')})"),
             ("audited output", f"{result.output} (index {result.classifier.get('output_index', '')} of "
                                f"{result.classifier.get('outputs', '')})"),
             ("target attribute", result.target or "none"),
             ("methods", ", ".join(st["methods"])), ("strengths", ", ".join(f"{s:g}" for s in st["strengths"])),
             ("faces per attribute and side (at most)", st["faces"]), ("split", st["split"]),
             ("held-out faces edited", result.faces),
             ("judge", "yes" if result.judge_checks else "none (no counterfactual checked)"),
             ("target tolerance (sd)", st["target_tolerance"]),
             ("decisions on reconstruction = on original", f"{rc.agreement:.1%}"),
             ("mean P(output): originals / reconstructions", f"{rc.p_original:.3f} / {rc.p_reconstruction:.3f}"),
             ("seed", st["seed"])]
    rows = [([esc(k), esc(v)], False) for k, v in items]
    rows += [([esc(f"input {k}"), f"<code>{esc(v)}</code>"], False) for k, v in sorted(result.inputs.items())]
    rows += [([esc(f"classifier {k}"), f"<code>{esc(v)}</code>"], False) for k, v in sorted(result.classifier.items())]
    return "<h2>Settings and inputs</h2>" + _table(["setting", "value"], rows, 2)


# ---------------------------------------------------------------------------- writing

def write_classifier_report(out: str | Path, result: ClassifierAuditResult,
                            strips: dict[str, bytes] | None = None) -> Path:
    """Write the report folder at `out` atomically and return it."""
    strips = strips or {}
    doc = report_document(result)
    pngs = figures(result)
    for attr, png in strips.items():
        pngs[f"strip_{attr}.png"] = png
    out = Path(out)
    with atomic_dir(out) as tmp:
        tmp.chmod(0o755)
        (tmp / "report.json").write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
        (tmp / "sensitivity.csv").write_text(sensitivity_csv(result))
        (tmp / "real_data.csv").write_text(real_data_csv(result))
        for name, data in pngs.items():
            (tmp / name).write_bytes(data)
        (tmp / "report.html").write_text(render_html(doc, result, pngs, list(strips)))
    return out
