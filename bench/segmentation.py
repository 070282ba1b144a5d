"""Segmentation inputs: feature extraction time, and a full explanation from contours against
one from a feature file, measured in the same run.

1. In process: p50/p90 of model.segmentation on a 64 x 64 x 10 binary mask (an ellipsoid of
   about LIDC's median size) and on 10 contour slices (a held-out LIDC read's outline, else
   the ellipsoid's), after a warm-up.
2. Over HTTP: starts `clipmed serve` on the data folder (as bench/serve.py does, throwaway
   SQLite database), then posts the held-out example cases of <data>/examples one client at a
   time, alternating a contours JSON body and the same read's .npy features; prints both p50s
   and their ratio (the target: contours <= 2x the feature file).

    .venv/bin/python bench/segmentation.py [--data data] [--requests 200]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from serve import Server  # noqa: E402

from model.cohort import Cohort  # noqa: E402
from model.segmentation import from_contours, from_mask  # noqa: E402


def ellipsoid(shape=(10, 64, 64), radii=(9.0, 8.0, 6.0), spacing=(2.5, 0.7, 0.7)) -> np.ndarray:
    grid = np.indices(shape, dtype=np.float64)
    center = [(n - 1) / 2 for n in shape]
    parts = zip(grid, center, spacing, radii, strict=True)
    return sum(((g - c) * s / a) ** 2 for g, c, s, a in parts) <= 1.0


def timed(fn, n: int, clock=time.perf_counter) -> list[float]:
    for _ in range(5):
        fn()
    out = []
    for _ in range(n):
        t = clock()
        fn()
        out.append((clock() - t) * 1000)
    return out


def summary(ms: list[float]) -> str:
    return f"p50 {statistics.median(ms):.2f} ms, p90 {np.percentile(ms, 90):.2f} ms (n={len(ms)})"


def extraction(label: str, fn, n: int) -> None:
    """Wall time, and this process's CPU time (what a busy shared machine distorts least)."""
    print(f"{label}: wall {summary(timed(fn, n))}")
    print(f"{label}: CPU  {summary(timed(fn, n, time.process_time))}")


def v1_slices(ref: str, box: np.ndarray) -> None:
    """The per-slice 2-D measures of extractor v1 (from git `ref`) against v2's, same run."""
    import importlib.util
    import subprocess

    source = subprocess.run(
        ["git", "show", f"{ref}:model/datasets/morphometry.py"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    path = Path(tempfile.mkdtemp()) / "morphometry_v1.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("morphometry_v1", path)
    v1 = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(v1)
    from model.datasets.morphometry import slice_morphometry

    planes = [p for p in box if p.any()]
    for name, fn in (("v1", v1.slice_morphometry), ("v2", slice_morphometry)):
        extraction(
            f"2-D measures of {len(planes)} slices, {name}",
            lambda f=fn: [f(p, 0.7) for p in planes],
            50,
        )


def example_reads(data: Path) -> list[tuple[str, dict, bytes]]:
    """(case id, contours JSON, .npy bytes) of each held-out example with an outline."""
    cohort = Cohort.load(data / "lidc")
    reads = []
    for path in sorted((data / "examples").glob("*.npy")):
        outline = cohort.outlines.get(path.stem) if cohort.outlines else None
        if outline is None:
            continue
        document = json.loads(json.dumps(outline.to_json(decimals=6)))
        try:
            from_contours(document)
        except ValueError:
            continue  # a read drawn broken (refused as any such upload is)
        reads.append((path.stem, document, path.read_bytes()))
    return reads


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data"))
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--extractions", type=int, default=200)
    parser.add_argument(
        "--v1-ref", help="also time extractor v1's 2-D measures from this git ref (e.g. 3f6432c)"
    )
    args = parser.parse_args()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
        f", load average {os.getloadavg()[0]:.1f}"
    )

    mask = ellipsoid()
    if args.v1_ref:
        v1_slices(args.v1_ref, mask)
    label = f"mask 64x64x10 ({int(mask.sum())} voxels)"
    extraction(label, lambda: from_mask(mask, (2.5, 0.7, 0.7)), args.extractions)
    reads = example_reads(args.data)
    ten = next((d for _, d, _ in reads if len(d["slices"]) >= 10), None)
    if ten is None:
        ten = from_mask(mask, (2.5, 0.7, 0.7)).outline.to_json()
    ten = {**ten, "slices": ten["slices"][:10]}
    extraction(
        f"contours, {len(ten['slices'])} slices", lambda: from_contours(ten), args.extractions
    )

    if not reads:
        print(f"no examples with outlines in {args.data}: run `clipmed demo --data {args.data}`")
        return 2
    with tempfile.TemporaryDirectory(prefix="clipmed-bench-") as tmp:
        server = Server(args.data.resolve(), keep_db=False, log_dir=Path(tmp))
        try:
            server.wait_ready(300)
            headers = {"Authorization": f"Bearer {server.api_token()}"}
            times: dict[str, list[float]] = {"features .npy": [], "contours JSON": []}
            with httpx.Client(base_url=server.url, headers=headers, timeout=60) as client:
                for i in range(args.requests + 10):
                    case_id, document, npy = reads[i % len(reads)]
                    for label in times:
                        t = time.perf_counter()
                        if label == "contours JSON":
                            r = client.post("/api/v1/explanations", json={**document, "k": 5})
                        else:
                            files = {"file": (f"{case_id}.npy", io.BytesIO(npy))}
                            r = client.post("/api/v1/explanations", files=files, data={"k": "5"})
                        elapsed = (time.perf_counter() - t) * 1000
                        if r.status_code != 201:
                            print(f"{label}: {r.status_code} {r.text[:300]}")
                            return 1
                        if i >= 10:  # warm-up
                            times[label].append(elapsed)
        finally:
            server.stop()
    for label, ms in times.items():
        print(f"explanation from {label}, 1 client: {summary(ms)}")
    ratio = statistics.median(times["contours JSON"]) / statistics.median(times["features .npy"])
    print(f"contours / features p50 ratio: {ratio:.2f} (target <= 2)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
