"""Sustained load: N concurrent clients posting explanations for minutes, per-minute latency.

Starts `clipmed serve` over the data folder with a throwaway SQLite database (as bench/serve.py
does; `make run` or `clipmed demo` fills the folder), then for each --clients level holds that
many keep-alive clients posting the example cases (.npy uploads, k=5) for --minutes. Prints per
minute: requests, errors, p50/p99 latency and the server's resident memory; and, per level, the
memory at start and end. Every explanation is stored, so the database grows as it would.
Exits 1 if any request failed, 2 if the benchmark could not start.

    .venv/bin/python bench/load.py [--data data] [--clients 16 64] [--minutes 5] [--out f.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from serve import EXPLAIN, K, Server, explain_payloads, machine, proc_memory_mb

SAMPLE_EVERY = 5.0  # seconds between memory samples


@dataclass
class Level:
    clients: int
    events: list[tuple[float, float, bool]] = field(default_factory=list)  # (t, ms, ok)
    memory: list[tuple[float, float]] = field(default_factory=list)  # (t, VmRSS MiB)
    first_error: str | None = None


def hold(url: str, headers: dict, payloads, clients: int, seconds: float, pid: int) -> Level:
    level = Level(clients)
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds
    start = time.monotonic()

    def client(i: int) -> None:
        local: list[tuple[float, float, bool]] = []
        with httpx.Client(base_url=url, timeout=120, headers=headers) as http:
            n = i
            while time.monotonic() < stop_at:
                p = payloads[n % len(payloads)]
                n += clients
                t0 = time.monotonic()
                try:
                    r = http.post(
                        EXPLAIN, content=p.content, headers={"content-type": p.content_type}
                    )
                    ok = r.status_code == 201
                    problem = None if ok else f"HTTP {r.status_code}: {r.text[:200]}"
                except httpx.HTTPError as e:
                    ok, problem = False, f"{type(e).__name__}: {e}"
                local.append((t0 - start, (time.monotonic() - t0) * 1000, ok))
                if problem and level.first_error is None:
                    with lock:
                        level.first_error = level.first_error or problem
        with lock:
            level.events.extend(local)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    while time.monotonic() < stop_at:
        level.memory.append((time.monotonic() - start, proc_memory_mb(pid).get("VmRSS", np.nan)))
        time.sleep(min(SAMPLE_EVERY, max(0.0, stop_at - time.monotonic())))
    for t in threads:
        t.join(timeout=180)
    level.memory.append((time.monotonic() - start, proc_memory_mb(pid).get("VmRSS", np.nan)))
    return level


def per_minute(level: Level) -> list[dict]:
    rows = []
    events = np.array([(t, ms, ok) for t, ms, ok in level.events], dtype=float).reshape(-1, 3)
    minutes = int(np.ceil(events[:, 0].max() / 60)) if len(events) else 0
    for m in range(minutes):
        window = events[(events[:, 0] >= m * 60) & (events[:, 0] < (m + 1) * 60)]
        good = window[window[:, 2] == 1, 1]
        rss = [v for t, v in level.memory if m * 60 <= t < (m + 1) * 60]
        rows.append(
            {
                "minute": m + 1,
                "requests": int(len(window)),
                "errors": int((window[:, 2] == 0).sum()),
                "p50_ms": round(float(np.percentile(good, 50)), 1) if len(good) else None,
                "p99_ms": round(float(np.percentile(good, 99)), 1) if len(good) else None,
                "rss_mib": round(float(np.nanmax(rss)), 1) if rss else None,
            }
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data"))
    parser.add_argument("--clients", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--out", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args()
    examples = sorted((args.data / "examples").glob("*.npy"))
    if not examples or not (args.data / "checkpoints" / "default" / "checkpoint.json").is_file():
        print(f"run `clipmed demo --data {args.data}` first", file=sys.stderr)
        return 2
    uploads, _, _ = explain_payloads(examples)

    report = {"machine": machine(), "minutes": args.minutes, "levels": []}
    failed = False
    with tempfile.TemporaryDirectory(prefix="clipmed-load-") as tmp:
        server = Server(args.data.resolve(), keep_db=False, log_dir=Path(tmp))
        try:
            server.wait_ready(240)
            headers = {"Authorization": f"Bearer {server.api_token()}"}
            for clients in args.clients:
                start_rss = proc_memory_mb(server.pid).get("VmRSS")
                level = hold(server.url, headers, uploads, clients, args.minutes * 60, server.pid)
                rows = per_minute(level)
                end_rss = proc_memory_mb(server.pid).get("VmRSS")
                errors = sum(r["errors"] for r in rows)
                failed |= errors > 0
                report["levels"].append(
                    {
                        "clients": clients,
                        "requests": sum(r["requests"] for r in rows),
                        "errors": errors,
                        "first_error": level.first_error,
                        "rss_start_mib": start_rss,
                        "rss_end_mib": end_rss,
                        "per_minute": rows,
                    }
                )
                print(f"  {clients} clients done: {errors} errors", file=sys.stderr, flush=True)
        except (RuntimeError, OSError) as e:
            print(f"{e}\n{server.log_tail()}", file=sys.stderr)
            return 2
        finally:
            server.stop()

    print(f"Machine: {report['machine']}; {args.minutes:g} minutes per level, .npy uploads, k={K}")
    for lv in report["levels"]:
        print(
            f"\n{lv['clients']} clients: {lv['requests']} explanations, {lv['errors']} errors; "
            f"server RSS {lv['rss_start_mib']:.0f} -> {lv['rss_end_mib']:.0f} MiB"
        )
        print("\n| minute | requests | errors | p50 ms | p99 ms | peak RSS MiB |")
        print("|---|---|---|---|---|---|")
        for r in lv["per_minute"]:
            print(
                f"| {r['minute']} | {r['requests']} | {r['errors']} | {r['p50_ms']} "
                f"| {r['p99_ms']} | {r['rss_mib']} |"
            )
        if lv["first_error"]:
            print(f"\nfirst error: {lv['first_error']}")
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
