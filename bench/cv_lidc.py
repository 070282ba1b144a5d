"""Full 5-fold cross-validation on the LIDC cohort: wall time, peak memory, text-encoder share.

Runs each preset in its own process (so peak memory is that preset's alone) and prints a
markdown table with the machine it ran on. Usage:

    .venv/bin/python bench/cv_lidc.py [--presets lidc thesis] [--folds 5] [--out reports/bench]
        [--device cpu|cuda|auto] [--seed 0] [--set reader_targets=true ...]

--seed draws other folds (choose settings on one draw, report on another); --set overrides a
preset setting for the run (its value read as JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def gpu_model(device: str) -> str:
    import torch

    from model.train import resolve_device

    resolved = resolve_device(device)
    return torch.cuda.get_device_name(resolved) if resolved.type == "cuda" else ""


def run_one(
    preset: str,
    cohort: Path,
    folds: int,
    out: Path,
    device: str = "cpu",
    seed: int = 0,
    settings: dict | None = None,
) -> dict:
    from model.cohort import Cohort
    from model.config import preset as get_preset
    from model.encoders import FrozenTextEncoder
    from model.evaluate import MODEL_METHODS, cross_validate
    from model.report import write_report

    data = Cohort.load(cohort)
    mcfg, tcfg = get_preset(preset, device=device, **(settings or {}))
    start = time.perf_counter()
    encoder = FrozenTextEncoder.for_config(mcfg)
    load_seconds = time.perf_counter() - start
    result = cross_validate(data, mcfg, tcfg, encoder, folds=folds, seed=seed)
    wall = time.perf_counter() - start
    write_report(result, data, mcfg, tcfg, out / preset, preset)
    table = result.metrics
    model_rows = table[table.method.isin(MODEL_METHODS)]
    best = model_rows.groupby(["field", "method"]).macro_f1.median().groupby("field").max()
    logreg = table[table.method == "logreg"].groupby("field").macro_f1.median()
    medians = table.groupby(["method", "field"]).macro_f1.median().round(3)
    ece = result.calibration.groupby(["method", "field"]).ece.median().round(3)
    text_seconds = result.timing["text_encoder_seconds"] + load_seconds
    return {
        "preset": preset,
        "settings": settings or {},
        "device": device,
        "wall_seconds": round(wall, 1),
        "train_seconds": result.timing["train_seconds"],
        "text_encoder_seconds": round(text_seconds, 2),
        "text_encoder_share": round(text_seconds / wall, 4),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "best_mode_macro_f1": best.round(3).to_dict(),
        "logreg_macro_f1": logreg.round(3).to_dict(),
        # field x {readers, baselines, served, each read-out}: the table of docs/benchmarks.md
        "macro_f1": {m: medians[m].to_dict() for m in medians.index.levels[0]},
        "ece": {m: ece[m].to_dict() for m in ece.index.levels[0]},
    }


def seconds_per_batch(preset: str, cohort: Path, batches: int = 20, device: str = "cpu") -> dict:
    """Training cost of one batch of a preset (for presets too slow to run in full here)."""
    import numpy as np

    from model.cohort import Cohort
    from model.config import preset as get_preset
    from model.encoders import FrozenTextEncoder, TextTokenCache
    from model.train import train

    data = Cohort.load(cohort)
    mcfg, tcfg = get_preset(preset, device=device)
    n = tcfg.batch_size * batches
    subset = data.subset(np.arange(min(n, len(data))))
    encoder = FrozenTextEncoder.for_config(mcfg)
    cache = TextTokenCache(encoder, data.texts())
    one = tcfg.replace(epochs=1, val_fraction=0.0, patience=0)
    n_classes = data.schema.class_counts
    result = train(subset, mcfg, one, encoder, cache, field_classes=n_classes)
    per_batch = result.seconds / batches
    fold_batches = int(np.ceil(len(data) * (1 - 1 / 5) * (1 - tcfg.val_fraction) / tcfg.batch_size))
    return {
        "preset": preset,
        "seconds_per_batch": round(per_batch, 4),
        "estimated_5fold_training_seconds": round(per_batch * fold_batches * tcfg.epochs * 5),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["lidc", "thesis"])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--cohort", type=Path, default=Path("data/lidc"))
    parser.add_argument("--out", type=Path, default=Path("reports/bench"))
    parser.add_argument(
        "--device", default="cpu", help="cpu, cuda, or auto (cuda when available) for training"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="which patients fall in which fold (a new draw)"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a preset setting (VALUE read as JSON: --set reader_targets=true)",
    )
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one preset here
    parser.add_argument(
        "--time-batches",
        nargs="+",
        default=[],
        metavar="PRESET",
        help="only time training batches of these presets and extrapolate 5-fold CV",
    )
    args = parser.parse_args()
    settings = {}
    for item in args.set:
        name, _, value = item.partition("=")
        try:
            settings[name] = json.loads(value)
        except json.JSONDecodeError:
            parser.error(f'--set {item!r}: the value must be JSON (true, 0.5, "text")')

    if args.time_batches:
        for name in args.time_batches:
            print(json.dumps(seconds_per_batch(name, args.cohort, device=args.device)))
        return
    if args.one:
        result = run_one(
            args.one, args.cohort, args.folds, args.out, args.device, args.seed, settings
        )
        print(json.dumps(result))
        return

    from model.datasets.lidc import import_lidc

    import_lidc(args.cohort, progress=True)  # cached after the first run
    rows = []
    for name in args.presets:
        proc = subprocess.run(
            [
                sys.executable,
                __file__,
                "--one",
                name,
                "--folds",
                str(args.folds),
                "--cohort",
                str(args.cohort),
                "--out",
                str(args.out),
                "--device",
                args.device,
                "--seed",
                str(args.seed),
                *(f"--set={item}" for item in args.set),
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), file=sys.stderr)

    machine = f"{cpu_model()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    gpu = gpu_model(args.device)
    if gpu:
        machine += f", training on {gpu}"
    print(f"Machine: {machine}\n")
    print("| preset | wall time | training | text encoder (share) | peak memory |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| `{r['preset']}` | {r['wall_seconds']:.0f} s | {r['train_seconds']:.0f} s | "
            f"{r['text_encoder_seconds']:.1f} s ({100 * r['text_encoder_share']:.1f}%) | "
            f"{r['peak_rss_mb']} MB |"
        )
    fields = sorted(rows[0]["best_mode_macro_f1"])
    print("\nMedian macro-F1 across folds, the model's best prediction mode per field:\n")
    print("| field | " + " | ".join(f"`{r['preset']}`" for r in rows) + " | logistic regression |")
    print("|---|" + "---|" * (len(rows) + 1))
    for f in fields:
        cells = [f"{r['best_mode_macro_f1'][f]:.3f}" for r in rows]
        print(f"| {f} | " + " | ".join(cells) + f" | {rows[0]['logreg_macro_f1'][f]:.3f} |")
    args.out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_json(args.out / "cv_lidc.json", orient="records", indent=2)


if __name__ == "__main__":
    main()
