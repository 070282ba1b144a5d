"""Batch explanation throughput: cases/s through `clipmed explain` on a cohort and through
POST /api/v1/explanations/batch.

1. CLI: `clipmed explain <checkpoint> <cohort> --out <file>` as a subprocess (start-up and
   checkpoint loading included), then the same work in process (explain_folder, start-up
   excluded); cases/s of wall time and per CPU-second.
2. Endpoint: starts `clipmed serve` on the data folder as bench/serve.py does (throwaway SQLite
   database), posts the cohort's cases in batches of --batch (JSON), one client, then again
   as .npz uploads; cases/s and the server's CPU ms per case (each case stored and audited).

    .venv/bin/python bench/batch.py [--data data] [--cohort data/lidc] [--cases 5000]
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import faiss
import httpx
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from serve import Server, machine, proc_cpu_s  # noqa: E402

from clipmed.explain_many import explain_folder  # noqa: E402
from model.checkpoint import Checkpoint  # noqa: E402
from model.cohort import Cohort  # noqa: E402
from model.inference import Explainer  # noqa: E402


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def bench_cli(checkpoint: Path, cohort: Path, tmp: Path) -> None:
    n = len(Cohort.load(cohort))
    clipmed = Path(sys.executable).parent / "clipmed"
    out = tmp / "cli.jsonl"
    cpu0, t = children_cpu_s(), time.perf_counter()
    subprocess.run(
        [str(clipmed), "explain", str(checkpoint), str(cohort), "--out", str(out)],
        check=True,
        stderr=subprocess.DEVNULL,
    )
    wall, cpu = time.perf_counter() - t, children_cpu_s() - cpu0
    assert sum(1 for _ in out.open()) == n
    print(
        f"clipmed explain, {n} cases (process start-up included): {wall:.1f} s, "
        f"{n / wall:.0f} cases/s wall, {n / cpu:.0f} cases per CPU-second"
    )
    torch.set_num_threads(1)  # as the CLI sets them
    faiss.omp_set_num_threads(1)
    explainer = Explainer(Checkpoint.load(checkpoint))
    with (tmp / "inproc.jsonl").open("w") as sink:
        cpu0, t = time.process_time(), time.perf_counter()
        explain_folder(explainer, cohort, sink, progress=False)
        wall, cpu = time.perf_counter() - t, time.process_time() - cpu0
    print(
        f"explain_folder in process, {n} cases (JSON lines written): {wall:.1f} s, "
        f"{n / wall:.0f} cases/s wall, {n / cpu:.0f} cases per CPU-second"
    )


def bench_endpoint(data: Path, cohort: Path, batch: int, cases: int, tmp: Path) -> int:
    source = Cohort.load(cohort)
    arrays = [np.asarray(source.slices(i)) for i in range(min(cases, len(source)))]
    batches = [arrays[s : s + batch] for s in range(0, len(arrays), batch)]
    bodies = {
        "JSON": [
            json.dumps({"cases": [{"features": a.tolist()} for a in b], "k": 5}).encode()
            for b in batches
        ],
        ".npz": [],
    }
    for b in batches:
        buffer = io.BytesIO()
        np.savez(buffer, **{f"case{i}": a for i, a in enumerate(b)})
        bodies[".npz"].append(buffer.getvalue())
    server = Server(data.resolve(), keep_db=False, log_dir=tmp)
    try:
        server.wait_ready(300)
        headers = {"Authorization": f"Bearer {server.api_token()}"}
        with httpx.Client(base_url=server.url, headers=headers, timeout=300) as client:

            def post(kind: str, body: bytes) -> httpx.Response:
                url = "/api/v1/explanations/batch"
                if kind == "JSON":
                    return client.post(
                        url, content=body, headers={"content-type": "application/json"}
                    )
                return client.post(url, files={"file": ("cases.npz", body)}, data={"k": "5"})

            for kind, payloads in bodies.items():
                post(kind, payloads[0]).raise_for_status()  # warm-up
                cpu0, t = proc_cpu_s(server.pid), time.perf_counter()
                done = 0
                for body in payloads:
                    r = post(kind, body)
                    if r.status_code != 200:
                        print(f"{kind}: {r.status_code} {r.text[:300]}")
                        return 1
                    done += sum("id" in answer for answer in r.json())
                wall, cpu = time.perf_counter() - t, proc_cpu_s(server.pid) - cpu0
                print(
                    f"POST /api/v1/explanations/batch ({kind}, {batch} cases per request, "
                    f"1 client): {done} cases in {wall:.1f} s, {done / wall:.0f} cases/s, "
                    f"server {cpu / done * 1000:.2f} CPU ms per case"
                )
    finally:
        server.stop()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data"))
    parser.add_argument(
        "--checkpoint", type=Path, default=None, help="default <data>/checkpoints/default"
    )
    parser.add_argument("--cohort", type=Path, default=None, help="default <data>/lidc")
    parser.add_argument("--cases", type=int, default=5000, help="cases sent to the endpoint")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--skip-cli", action="store_true")
    args = parser.parse_args()
    checkpoint = args.checkpoint or args.data / "checkpoints" / "default"
    cohort = args.cohort or args.data / "lidc"
    print(machine())
    with tempfile.TemporaryDirectory(prefix="clipmed-bench-") as tmp:
        if not args.skip_cli:
            bench_cli(checkpoint, cohort, Path(tmp))
        status = bench_endpoint(args.data, cohort, args.batch, args.cases, Path(tmp))
    print(machine())
    return status


if __name__ == "__main__":
    sys.exit(main())
