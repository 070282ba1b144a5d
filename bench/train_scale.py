"""Training time and memory as the cohort grows: one epoch of the `lidc` preset at 10k and 100k
simulated cases.

For each size a SIMULATED cohort (model.datasets.simulated, the simulator's default 1,024
features per slice) is generated on disk, streamed into features.npy; then a fresh process loads
it memory-mapped and trains one epoch of the `lidc` preset (its 10% validation split, evaluated
at the end of the epoch, included). A thread samples /proc/self/status every 20 ms.

Memory is reported three ways, because a memory-mapped cohort shows up in the resident set:
peak RSS (VmHWM, what ru_maxrss reports), peak anonymous RSS (the process's own allocations:
what would grow if training copied the features) and peak file-backed RSS (pages of
features.npy mapped while reading them; page cache the kernel drops under pressure). Flat
memory means the anonymous peak does not grow with the cohort.

    .venv/bin/python bench/train_scale.py [--sizes 10000 100000] [--work reports/bench/train_scale]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

SEED = 0


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def memory_now() -> dict[str, int]:
    """VmRSS, VmHWM, RssAnon and RssFile of this process, in KiB."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            out[key] = int(value.split()[0])
    return out


class MemorySampler(threading.Thread):
    """Peaks of RssAnon and RssFile, sampled until stop()."""

    def __init__(self, every: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.every, self.peak = every, {"RssAnon": 0, "RssFile": 0}
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            now = memory_now()
            for key in self.peak:
                self.peak[key] = max(self.peak[key], now[key])
            self._done.wait(self.every)

    def stop(self) -> dict[str, int]:
        self._done.set()
        self.join()
        return self.peak


def train_one(folder: Path, threads: int) -> dict:
    """One epoch of the lidc preset on the cohort in `folder`, in this process."""
    import torch

    from model.cohort import Cohort
    from model.config import preset
    from model.encoders import FrozenTextEncoder
    from model.train import train

    torch.set_num_threads(threads)
    sampler = MemorySampler()
    sampler.start()
    cohort = Cohort.load(folder)
    mcfg, tcfg = preset("lidc", epochs=1)
    encoder = FrozenTextEncoder.for_config(mcfg)
    loaded = memory_now()
    batches = []
    n_classes = cohort.schema.class_counts
    result = train(
        cohort,
        mcfg,
        tcfg,
        encoder,
        on_progress=lambda p: batches.append(p.batches) if p.batch == 1 else None,
        field_classes=n_classes,
    )
    peak = sampler.stop()
    end = memory_now()
    features = folder / "features.npy"
    return {
        "cases": len(cohort),
        "slices": int(cohort.cases["n_slices"].sum()),
        "feature_dim": cohort.feature_dim,
        "features_gb": round(features.stat().st_size / 1e9, 2),
        "batches": batches[0],
        "batch_size": tcfg.batch_size,
        "epoch_seconds": round(result.seconds, 1),
        "text_seconds": round(result.text_seconds, 1),
        "rss_after_load_mb": round(loaded["VmRSS"] / 1024),
        "peak_rss_mb": round(end["VmHWM"] / 1024),
        "peak_anon_mb": round(peak["RssAnon"] / 1024),
        "peak_file_mb": round(peak["RssFile"] / 1024),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--work", type=Path, default=Path("reports/bench/train_scale"))
    parser.add_argument("--out", type=Path, default=Path("reports/bench/train_scale.json"))
    parser.add_argument("--keep", action="store_true", help="keep the simulated cohorts")
    parser.add_argument("--one", type=Path, help=argparse.SUPPRESS)  # internal: train here
    args = parser.parse_args()
    if args.one:
        print(json.dumps(train_one(args.one, args.threads)))
        return

    import shutil

    from model.datasets.simulated import simulate_cohort

    rows = []
    for n in args.sizes:
        folder = args.work / f"simulated-{n}"
        if not folder.exists():
            t0 = time.perf_counter()
            simulate_cohort(n, folder, seed=SEED, progress=True)
            print(f"simulated {n} cases in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        load = os.getloadavg()[0]
        proc = subprocess.run(
            [sys.executable, __file__, "--one", str(folder), "--threads", str(args.threads)],
            capture_output=True,
            text=True,
        )
        if proc.returncode:
            sys.exit(f"training {n} cases failed:\n{proc.stderr}")
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        row["load_average"] = [round(load, 2), round(os.getloadavg()[0], 2)]
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
        if not args.keep:
            shutil.rmtree(folder)

    machine = (
        f"{cpu_model()}, {os.cpu_count()} CPUs, {args.threads} torch threads, "
        f"Python {platform.python_version()}"
    )
    print(f"Machine: {machine}")
    print("Cohorts: SIMULATED (model.datasets.simulated), one epoch of the lidc preset\n")
    print(
        "| cases | slices | features on disk | batches | s / epoch | peak RSS | "
        "peak anonymous | peak file-backed | load avg |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        print(
            f"| {r['cases']:,} | {r['slices']:,} | {r['features_gb']} GB | {r['batches']} | "
            f"{r['epoch_seconds']} | {r['peak_rss_mb']} MB | {r['peak_anon_mb']} MB | "
            f"{r['peak_file_mb']} MB | {r['load_average'][0]}–{r['load_average'][1]} |"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
