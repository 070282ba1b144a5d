"""How the served read-out's fitting procedure does on its own, on LIDC, by patient folds.

The served read-out sees pooled slice features and the CLIP image embedding; this benchmark
feeds it the pooled slice features only (what the strong baselines see), so the fitting
procedure is compared without training a CLIP model per fold: `logreg` (class-balanced
logistic regression, C chosen on inner patient folds) against `logreg+trees` (the same, or
class-balanced gradient-boosted trees where they win on the inner folds). Both are
calibrated by isotonic maps fitted on the inner folds' held-out predictions. Prints per field
the median over outer folds of macro-F1 and ECE (15 bins, top class), which read-out each
outer fold chose, and the CPU seconds per fit (process time: fair on a busy machine).

    .venv/bin/python bench/served_fit.py --cohort data/lidc [--folds 5]
"""

from __future__ import annotations

import argparse
import collections
import time
from pathlib import Path

import numpy as np

from model import metrics
from model.cohort import Cohort
from model.evaluate import patient_folds
from model.served import LOGREG_ONLY, LOGREG_OR_TREES, fit_served, pooled_features


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cohort", type=Path, default=Path("data/lidc"))
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--max-slices", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    cohort = Cohort.load(args.cohort)
    x = pooled_features(cohort, args.max_slices)
    y, groups = cohort.labels, cohort.patients
    n_classes = [len(f.values) for f in cohort.schema.fields]
    names = [f.name for f in cohort.schema.fields]
    scores: dict = collections.defaultdict(list)
    chosen: dict = collections.defaultdict(collections.Counter)
    cpu: dict = collections.defaultdict(list)
    for fold, (train, test) in enumerate(patient_folds(groups, args.folds, args.seed)):
        for procedure in (LOGREG_ONLY, LOGREG_OR_TREES):
            start = time.process_time()
            served = fit_served(
                x[train], y[train], groups[train], n_classes, args.seed + fold, procedure
            )
            cpu[procedure].append(time.process_time() - start)
            pred, confidence, dists = served.predict(x[test])
            for j, name in enumerate(names):
                known = y[test, j] >= 0
                rep = metrics.classification_report(
                    y[test, j][known], pred[known, j], n_classes[j], ordinal=False
                )
                cal = metrics.calibration(y[test, j], confidence[:, j], pred[:, j], dists[j])
                scores[procedure, name, "f1"].append(rep["macro_f1"])
                scores[procedure, name, "ece"].append(cal["ece"])
                chosen[procedure, name][served.fields[j].readout.split(" (")[0]] += 1
        print(f"fold {fold + 1}/{args.folds} done", flush=True)

    print(f"\n{len(cohort)} cases, {len(np.unique(groups))} patients, {args.folds} patient folds")
    print(
        "\n| field | macro-F1 logreg | macro-F1 logreg+trees | ECE logreg | ECE logreg+trees |"
        " logreg+trees chose |"
    )
    print("|---|---:|---:|---:|---:|---|")
    for name in names:
        cells = [
            f"{np.median(scores[p, name, m]):.3f}"
            for m in ("f1", "ece")
            for p in (LOGREG_ONLY, LOGREG_OR_TREES)
        ]
        picks = ", ".join(f"{k} {v}x" for k, v in chosen[LOGREG_OR_TREES, name].items())
        print(f"| {name} | " + " | ".join(cells) + f" | {picks} |")
    for p in (LOGREG_ONLY, LOGREG_OR_TREES):
        print(f"\nCPU seconds per fit, {p}: median {np.median(cpu[p]):.1f}")


if __name__ == "__main__":
    main()
