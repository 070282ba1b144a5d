"""Does the read's 3-D shape help? The strong baselines on pooled features, with and without it.

On an LIDC cohort imported by extractor v2, over the project's patient folds: the
class-balanced logistic regression (C chosen on inner patients) and class-balanced gradient
boosting of model.evaluate, fitted on pooled slice features (mean and max over slices) once
without the 17 read-level 3-D columns (the 2-D morphometry and slice context, v1's inputs up to
its solidity definition) and once with them; with --v1-cohort also on the v1 features of the
same reads. No CLIP model is trained, so this measures the
features, not the served read-out; nothing is chosen on the test folds. Prints median macro-F1
per field and method and the nodule-level agreement with the readers' majority.

    .venv/bin/python bench/features_3d.py [--cohort data/lidc] [--folds 5] [--only 1 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from model import metrics  # noqa: E402
from model.cohort import Cohort  # noqa: E402
from model.datasets.shape3d import SHAPE_FEATURES  # noqa: E402
from model.evaluate import balanced_baselines, patient_folds  # noqa: E402
from model.readers import nodule_scores  # noqa: E402
from model.served import pooled_features  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cohort", type=Path, default=Path("data/lidc"))
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--only", type=int, nargs="*", help="run these folds (1-based) only")
    parser.add_argument("--max-slices", type=int, default=12)
    parser.add_argument(
        "--v1-cohort", type=Path, help="the same reads imported by extractor v1, as a third row"
    )
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")

    cohort = Cohort.load(args.cohort)
    names = cohort.feature_names
    missing = [n for n in SHAPE_FEATURES if n not in names]
    if missing:
        print(f"{args.cohort} has no 3-D columns ({cohort.feature_extractor}); re-import it")
        return 2
    pooled = pooled_features(cohort, args.max_slices)
    dim = len(names)
    shape_cols = [names.index(n) for n in SHAPE_FEATURES]
    without = np.setdiff1d(np.arange(dim), shape_cols)
    inputs = {
        "v2 2-D": pooled[:, np.concatenate([without, without + dim])],
        "v2 2-D + 3-D": pooled,
    }
    if args.v1_cohort:
        old = Cohort.load(args.v1_cohort)
        row = {c: i for i, c in enumerate(old.cases["case_id"])}
        order = np.array([row[c] for c in cohort.cases["case_id"]])  # KeyError: not the same reads
        inputs = {"v1": pooled_features(old, args.max_slices)[order], **inputs}
        print(f"v1: {args.v1_cohort} ({old.feature_extractor})")
    n_classes = [len(f.values) for f in cohort.schema.fields]
    nodules = cohort.nodules
    rows = []
    folds = patient_folds(cohort.patients, args.folds, 0)
    for fold, (train, test) in enumerate(folds, 1):
        if args.only and fold not in args.only:
            continue
        for variant, x in inputs.items():
            start = time.perf_counter()
            stated = balanced_baselines(
                x[train],
                cohort.labels[train],
                cohort.patients[train],
                x[test],
                n_classes,
                seed=0,
            )
            seconds = time.perf_counter() - start
            for method, (pred, _, dists) in stated.items():
                for j, fld in enumerate(cohort.schema.fields):
                    y = cohort.labels[test, j]
                    report = metrics.classification_report(
                        y, pred[:, j], n_classes[j], ordinal=fld.ordinal
                    )
                    agree = nodule_scores(y, nodules[test], pred[:, j], dists[j])
                    rows.append(
                        {
                            "fold": fold,
                            "features": variant,
                            "method": method,
                            "field": fld.name,
                            "macro_f1": report["macro_f1"],
                            "nodule_agreement": agree["nodule_agreement"],
                            "reader_nll": agree["reader_nll"],
                        }
                    )
            print(f"fold {fold} {variant}: {seconds:.0f} s", flush=True)
    table = pd.DataFrame(rows)
    for value in ("macro_f1", "nodule_agreement", "reader_nll"):
        wide = table.pivot_table(
            index="field", columns=["method", "features"], values=value, aggfunc="median"
        )
        print(f"\nmedian {value} over folds {sorted(set(table.fold))}:")
        print(wide.round(3).to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
