"""The classifier audit finds a planted bias (issue 26): two small smile classifiers trained on the
real faces, one on a gender-balanced sample, one on a sample where 90% of the smiling faces are
women and 90% of the non-smiling faces are men. Both are exported with torch.export.save and audited
by `faceedit.classifier_audit.audit_classifier_folders` (what `faceedit audit-classifier` runs), with
balanced and naive vectors. Prints JSON: each classifier's val accuracy, Male's rank and change of
P(smile) with its standard error, the top of each ranking, and the differences that matter:

- biased vs balanced classifier, Male's change (balanced vectors): should lie outside the standard
  errors;
- the balanced classifier under naive vs balanced vectors: naive vectors make it look biased.

    bench/bench_classifier_audit.py --base /work/runs/base --out /work/runs/issue-26/planted

--base is a main-job folder (cache/, bundle/, bank/, judge/); the classifiers and both reports go
under --out. Figures: BENCHMARKS.md, "Classifier audit".
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from faceedit.attributes import ATTRIBUTES, attribute_index
from faceedit.cache import Cache, to_float
from faceedit.classifier_audit import ClassifierAuditConfig, audit_classifier_folders


def smile_net(width: int = 16) -> nn.Module:
    """A small plain CNN, (B, 3, 64, 64) in [0, 1] -> (B, 1) logit of Smiling."""
    layers, cin = [], 3
    for i in range(4):  # 64 -> 32 -> 16 -> 8 -> 4
        cout = width * 2**i
        layers += [nn.Conv2d(cin, cout, 3, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                   nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
        cin = cout
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, 1))


def sample(labels: np.ndarray, rows: np.ndarray, per_side: int, women_share: float, seed: int) -> np.ndarray:
    """per_side smiling and per_side non-smiling rows; women_share of the smiling are women and
    women_share of the non-smiling are men (0.5: gender-balanced on both sides)."""
    rng = np.random.default_rng(seed)
    s = labels[rows, attribute_index("Smiling")] > 0
    m = labels[rows, attribute_index("Male")] > 0
    out = []
    for smiling, first_is_woman in ((True, True), (False, False)):
        k = round(per_side * women_share)
        a = rows[(s == smiling) & (m != first_is_woman)]  # the majority gender of this side
        b = rows[(s == smiling) & (m == first_is_woman)]
        if k > len(a) or per_side - k > len(b):
            raise ValueError(f"not enough faces: need {k} and {per_side - k}, have {len(a)} and {len(b)}")
        out += [rng.choice(a, k, replace=False), rng.choice(b, per_side - k, replace=False)]
    return np.sort(np.concatenate(out))


def train(cache: Cache, rows: np.ndarray, epochs: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = smile_net()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    y_all = torch.from_numpy(cache.labels[:, attribute_index("Smiling")].astype(np.float32))
    rng = np.random.default_rng(seed)
    steps = epochs * math.ceil(len(rows) / 64)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=steps)
    model.train()
    for _ in range(epochs):
        order = rng.permutation(rows)
        for i in range(0, len(order), 64):
            b = np.sort(order[i:i + 64])
            x = to_float(cache.images[b])
            flip = torch.rand(len(b)) < 0.5
            x[flip] = x[flip].flip(-1)
            loss = F.binary_cross_entropy_with_logits(model(x)[:, 0], y_all[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


@torch.no_grad()
def val_accuracy(model: nn.Module, cache: Cache) -> dict[str, float]:
    rows = cache.indices("val")
    logits = torch.cat([model(to_float(cache.images[rows[i:i + 256]]))[:, 0] for i in range(0, len(rows), 256)])
    y = cache.labels[rows, attribute_index("Smiling")] > 0
    m = cache.labels[rows, attribute_index("Male")] > 0
    yes = logits.numpy() > 0
    return {"accuracy": float((yes == y).mean()), "accuracy_men": float((yes == y)[m].mean()),
            "accuracy_women": float((yes == y)[~m].mean())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", type=Path, required=True, help="main-job folder: cache/ bundle/ bank/ judge/")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--per-side", type=int, default=2000, help="smiling (and non-smiling) training faces")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--faces", type=int, default=64, help="audited faces per attribute and side")
    p.add_argument("--strengths", type=float, nargs="+", default=[1.0, 2.0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--target-tolerance", type=float, default=ClassifierAuditConfig.target_tolerance,
                   help="sd of the judge's Smiling logit a kept counterfactual may move (BENCHMARKS.md)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--only", nargs="+", choices=("balanced", "biased"), default=None,
                   help="audit only these classifiers (the summary reads every report present)")
    p.add_argument("--summary-only", action="store_true", help="audit nothing: summarise the "
                   "reports in --out")
    p.add_argument("--reuse", action="store_true", help="keep classifiers an earlier run trained "
                   "(smile-*.pt2 and smile-*.json in --out) instead of training them again")
    args = p.parse_args()

    cache = Cache.open(args.base / "cache")
    rows = cache.indices("train")
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict = {"per_side": args.per_side, "epochs": args.epochs, "faces": args.faces}
    for name, share in (("balanced", 0.5), ("biased", 0.9)):
        record = args.out / f"smile-{name}.json"
        trained = record.is_file() and (args.out / f"smile-{name}.pt2").is_file()
        if (args.reuse or args.summary_only) and trained:
            report[name] = json.loads(record.read_text())  # trained by an earlier run, same settings
            continue
        chosen = sample(cache.labels, rows, args.per_side, share, args.seed)
        start = time.perf_counter()
        model = train(cache, chosen, args.epochs, args.seed)
        path = args.out / f"smile-{name}.pt2"
        ep = torch.export.export(model, (torch.rand(2, 3, cache.size, cache.size),),
                                 dynamic_shapes=({0: torch.export.Dim("batch")},))
        torch.export.save(ep, str(path))
        report[name] = {"train_faces": int(len(chosen)), "train_s": round(time.perf_counter() - start, 1),
                        **val_accuracy(model, cache)}
        report[name]["settings"] = {"per_side": args.per_side, "epochs": args.epochs, "seed": args.seed}
        record.write_text(json.dumps(report[name]) + "\n")
        print(f"trained {name}: {json.dumps(report[name])}", file=sys.stderr, flush=True)
    for name in args.only or ("balanced", "biased"):
        if args.summary_only:
            break
        path = args.out / f"smile-{name}.pt2"
        config = ClassifierAuditConfig(methods=("balanced", "naive"), strengths=tuple(args.strengths),
                                       headline=max(args.strengths), faces=args.faces, target="Smiling",
                                       target_tolerance=args.target_tolerance)
        start = time.perf_counter()
        audit_classifier_folders(path, "0", args.base / "bundle", args.base / "bank", args.base / "cache",
                                 args.out / f"report-{name}", [args.base / "judge"], config,
                                 device=args.device, progress=False)
        report[name]["audit_s"] = round(time.perf_counter() - start, 1)
        print(f"audited {name} in {report[name]['audit_s']} s", file=sys.stderr, flush=True)
    from faceedit.audit import phi_matrix

    phi = phi_matrix(cache.labels[rows])[:, attribute_index("Male")]  # (40,) with Male, train split
    linked = [a for k, a in enumerate(ATTRIBUTES) if a != "Male" and abs(phi[k]) >= 0.4]
    report["gender_linked"] = {a: round(float(phi[attribute_index(a)]), 2) for a in linked}
    for name in ("balanced", "biased"):
        doc_path = args.out / f"report-{name}" / "report.json"
        if doc_path.is_file():
            doc = json.loads(doc_path.read_text())
            report[name].update(summary(doc))
            ranks = {e["attribute"]: e for e in doc["ranking"]}
            report[name]["gender_linked_ranks"] = {
                a: [ranks[a]["rank"], round(ranks[a]["change"], 3), round(ranks[a]["change_se"], 3)]
                if a in ranks else None for a in ["Male", *linked]}
            report[name]["ranked"] = len(doc["ranking"])
    if all("male_change" in report[n] for n in ("balanced", "biased")):
        b, u = report["biased"], report["balanced"]
        report["male_difference_biased_minus_balanced"] = b["male_change"] - u["male_change"]
        report["male_difference_se"] = math.hypot(b["male_change_se"], u["male_change_se"])
        report["balanced_clf_naive_minus_balanced_vectors_unfiltered"] = (u["male_naive_unfiltered"]
                                                                          - u["male_unfiltered"])
        report["balanced_clf_naive_minus_balanced_vectors_unfiltered_se"] = math.hypot(
            u["male_naive_unfiltered_se"], u["male_unfiltered_se"])
    print(json.dumps(report, indent=1))
    (args.out / "planted.json").write_text(json.dumps(report, indent=1) + "\n")


def summary(doc: dict) -> dict:
    """Male's figures (and the top of the ranking) from a classifier audit's report.json."""
    head = doc["settings"]["headline"]

    def sens(method: str) -> dict:
        return next(s for s in doc["sensitivities"] if s["attribute"] == "Male" and s["method"] == method
                    and s["strength"] == head)

    bal, naive = sens("balanced"), sens("naive")
    groups = {(g["attribute"], g["value"]): g for g in doc["real_data"]["groups"]}
    return {
        "male_rank": next((e["rank"] for e in doc["ranking"] if e["attribute"] == "Male"), None),
        "male_change": bal["kept"]["change"], "male_change_se": bal["kept"]["change_se"],
        "male_flip": bal["kept"]["flip"], "male_kept": bal["kept"]["n"], "male_made": bal["made"],
        "male_unfiltered": bal["unfiltered"]["change"], "male_unfiltered_se": bal["unfiltered"]["change_se"],
        "male_naive_change": naive["kept"]["change"], "male_naive_change_se": naive["kept"]["change_se"],
        "male_naive_kept": naive["kept"]["n"],
        "male_naive_unfiltered": naive["unfiltered"]["change"],
        "male_naive_unfiltered_se": naive["unfiltered"]["change_se"],
        "male_naive_left_out_smile": naive["target_changed"],
        "own_change": (doc.get("own_attribute") or {}).get("kept", {}).get("change"),
        "top": [(e["attribute"], e["change"], e["change_se"]) for e in doc["ranking"][:6]],
        "real_error_men_women": [groups[("Male", True)]["error"], groups[("Male", False)]["error"]],
    }


if __name__ == "__main__":
    main()
