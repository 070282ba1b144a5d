"""The service's resident memory while it refuses maximum-size hostile JSON bodies.

Starts `clipmed serve` as bench/serve.py does (a throwaway SQLite database, the data folder's
default checkpoint), explains one real example to warm it up, then sends --clients concurrent
JSON bodies of just under the upload limit that are refused (422): a case of more slices than
accepted, a case of the right slice count but rows thousands of values wide, a case of the
wrong width, and one full of NaN, for --rounds rounds. Reports the server's RSS when idle (after
the warm-up), its peak while refusing (VmHWM, reset after the idle reading), and its RSS a few
seconds after the last answer, as a markdown table with the machine. Exits 1 if any body got
anything but a 422, or the targets are missed (peak <= 1.3 x idle, after within 50 MiB).

    .venv/bin/python bench/hostile_memory.py [--data data] [--clients 16] [--rounds 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from serve import EXPLAIN, Server, machine, proc_memory_mb

UPLOAD_LIMIT = 8 << 20  # the service's default max_upload_bytes
PEAK_TARGET = 1.3  # x idle RSS
AFTER_TARGET_MIB = 50.0


def json_case(rows: int, width: int, value: str = "0.123456") -> bytes:
    """{"features": rows x width copies of value, "k": 5}, filled to just under the limit."""
    row = "[" + ",".join([value] * width) + "]"
    return ('{"features": [' + ",".join([row] * rows) + '], "k": 5}').encode()


def hostile_bodies(feature_dim: int) -> dict[str, bytes]:
    budget = UPLOAD_LIMIT - 1024
    per_value = len("0.123456,")
    too_many_rows = budget // (per_value * feature_dim + 3)
    wide = budget // (512 * per_value)
    bodies = {
        f"{too_many_rows} slices": json_case(too_many_rows, feature_dim),
        f"512 slices x {wide} values": json_case(512, wide),
        f"{budget // (per_value * (feature_dim + 1) + 3)} x {feature_dim + 1} (wrong width)": (
            json_case(budget // (per_value * (feature_dim + 1) + 3), feature_dim + 1)
        ),
        f"512 x {wide} NaN": json_case(512, wide, "NaN"),
    }
    for name, body in bodies.items():
        assert len(body) < UPLOAD_LIMIT, (name, len(body))
    return bodies


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data"), help="data folder [data]")
    parser.add_argument("--clients", type=int, default=16, help="concurrent bodies [16]")
    parser.add_argument("--rounds", type=int, default=3, help="times each client sends [3]")
    args = parser.parse_args()
    example = next(iter(sorted((args.data / "examples").glob("*.npy"))), None)
    if example is None:
        print(f"no example cases in {args.data / 'examples'} (`make run`)", file=sys.stderr)
        return 2
    feature_dim = int(np.load(example).shape[1])
    bodies = list(hostile_bodies(feature_dim).items())
    statuses: list[tuple[str, int]] = []

    with tempfile.TemporaryDirectory() as tmp:
        server = Server(args.data.resolve(), keep_db=False, log_dir=Path(tmp))
        try:
            server.wait_ready(240)
            headers = {"Authorization": f"Bearer {server.api_token()}"}
            with httpx.Client(base_url=server.url, headers=headers, timeout=120) as http:
                warm = http.post(EXPLAIN, files={"file": ("case.npy", example.read_bytes())})
                assert warm.status_code == 201, warm.text
                for _, body in bodies:  # lazy imports and first-use caches are not the cost
                    http.post(EXPLAIN, content=body, headers={"content-type": "application/json"})
            time.sleep(2)
            idle = proc_memory_mb(server.pid)["VmRSS"]
            Path(f"/proc/{server.pid}/clear_refs").write_text("5")  # VmHWM := VmRSS

            def client(i: int) -> None:
                with httpx.Client(base_url=server.url, headers=headers, timeout=300) as http:
                    for r in range(args.rounds):
                        name, body = bodies[(i + r) % len(bodies)]
                        answer = http.post(
                            EXPLAIN, content=body, headers={"content-type": "application/json"}
                        )
                        statuses.append((name, answer.status_code))

            started = time.perf_counter()
            threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            seconds = time.perf_counter() - started
            peak = proc_memory_mb(server.pid)["VmHWM"]
            time.sleep(3)
            after = proc_memory_mb(server.pid)["VmRSS"]
        finally:
            server.stop()

    wrong = [(name, status) for name, status in statuses if status != 422]
    print(f"\n{args.clients} concurrent clients x {args.rounds} hostile JSON bodies each")
    print(f"({len(statuses)} requests in {seconds:.1f} s; bodies of up to {UPLOAD_LIMIT} bytes:")
    print(", ".join(name for name, _ in bodies) + ")\n")
    print("| idle RSS | peak RSS | peak / idle | RSS 3 s after | after - idle |")
    print("|---:|---:|---:|---:|---:|")
    print(
        f"| {idle:.0f} MiB | {peak:.0f} MiB | {peak / idle:.2f} | {after:.0f} MiB "
        f"| {after - idle:+.0f} MiB |"
    )
    print(f"\nmachine: {machine()}")
    if wrong:
        print(f"answers other than 422: {wrong[:5]}", file=sys.stderr)
    missed = peak > PEAK_TARGET * idle or after - idle > AFTER_TARGET_MIB
    if missed:
        print(
            f"targets missed: peak <= {PEAK_TARGET} x idle, after within {AFTER_TARGET_MIB} MiB",
            file=sys.stderr,
        )
    return 1 if wrong or missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
