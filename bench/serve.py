"""Explanation latency and throughput of the running service, over HTTP on localhost.

By default starts `clipmed serve` on a free localhost port over the data folder (--data, filled by
`make run` / `clipmed demo`), waits for /readyz, measures and stops it. The service it starts gets
a throwaway SQLite database in a temporary folder (every explanation is stored, so a benchmark would
otherwise add thousands of rows to the real one); the empty registry makes `clipmed serve` register
and serve <data>/checkpoints/default. With --url it measures a service that is already running
(--pid then gives its memory).

For 1, 4 and 16 concurrent clients (one keep-alive httpx client per thread) it posts the real
example cases in <data>/examples/*.npy to POST /api/v1/explanations with k=5, as a .npy upload
(what clinicians do) and as JSON, and calls GET /healthz of the same app as the floor. Each level
runs a short warm-up, then --seconds; prints p50/p99 latency, throughput and errors as a markdown
table, the server's resident memory (VmRSS before and after, VmHWM peak) and the machine.
The client runs on the same CPUs as the server, so the figures include its cost.
Exits 1 if any request failed, 2 if the benchmark could not start.

With --profile OUT, py-spy (on PATH, beside this Python, or --py-spy) samples the server during
the recorded window of the .npy explanations at the most clients: a flame graph for OUT.svg,
speedscope for OUT.json, collapsed stacks ("raw", one line per stack and its sample count) for
any other suffix. Sampling costs the server CPU, so that level's figures are not comparable.

    .venv/bin/python bench/serve.py [--data data] [--seconds 10] [--clients 1 4 16]
    .venv/bin/python bench/serve.py --clients 16 --formats npy --profile profile.svg
    CLIPMED_API_TOKEN=... .venv/bin/python bench/serve.py --url http://127.0.0.1:8000 --pid 1234
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np

EXPLAIN = "/api/v1/explanations"
K = 5
MAX_SECONDS = 300.0  # per level, whatever --seconds says
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


@dataclass(frozen=True)
class Payload:
    """One prepared request body (encoded once, so the client spends no time re-encoding)."""

    content: bytes
    content_type: str


@dataclass
class Endpoint:
    label: str
    method: str
    path: str
    expect: int
    payloads: list[Payload] = field(default_factory=list)


@dataclass
class Result:
    latencies_ms: list[float]
    errors: int
    wall_s: float
    first_error: str | None
    server_cpu_s: float  # CPU time of the server process during the recorded window
    client_cpu_s: float  # CPU time of this benchmark process (all its client threads) during it

    @property
    def requests(self) -> int:
        return len(self.latencies_ms) + self.errors

    def pct(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")

    @property
    def rps(self) -> float:
        return len(self.latencies_ms) / self.wall_s if self.wall_s > 0 else float("nan")

    def cpu_ms_per_request(self, seconds: float) -> float:
        return seconds / self.requests * 1000 if self.requests else float("nan")


# --------------------------------------------------------------------------------------------
# The API needs a bearer token: from `clipmed users token admin` on the server this script
# starts, or from CLIPMED_API_TOKEN with --url.
AUTH_HEADERS: dict[str, str] = {}
# /metrics takes CLIPMED_METRICS_TOKEN (when the service has one), not a user's token.
METRICS_HEADERS = (
    {"Authorization": f"Bearer {os.environ['CLIPMED_METRICS_TOKEN']}"}
    if os.environ.get("CLIPMED_METRICS_TOKEN")
    else {}
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_memory_mb(pid: int | None) -> dict[str, float]:
    """VmRSS and VmHWM (peak RSS) of a process, in MiB; empty when unreadable."""
    if not pid:
        return {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024
    return out


def proc_cpu_s(pid: int | None) -> float:
    """User + system CPU seconds of a process so far; NaN when unreadable."""
    if not pid:
        return float("nan")
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{model}, {usable} usable cores ({os.cpu_count()} online); load average {load}"


def explain_payloads(examples: list[Path]) -> tuple[list[Payload], list[Payload], list[tuple]]:
    """(.npy uploads, JSON bodies, shapes) of the example cases, each encoded once."""
    uploads, bodies, shapes = [], [], []
    for path in examples:
        raw = path.read_bytes()
        request = httpx.Request(
            "POST",
            "http://127.0.0.1/",
            files={"file": (path.name, raw, "application/octet-stream")},
            data={"k": str(K)},
        )
        uploads.append(Payload(request.read(), request.headers["content-type"]))
        array = np.load(path, allow_pickle=False)
        shapes.append(array.shape)
        body = json.dumps({"features": array.tolist(), "k": K}).encode()
        bodies.append(Payload(body, "application/json"))
    return uploads, bodies, shapes


PROFILE_FORMATS = {".svg": "flamegraph", ".json": "speedscope"}  # anything else: raw


def find_py_spy(given: str | None) -> str | None:
    if given:
        return given
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.is_file() else shutil.which("py-spy")


@dataclass(frozen=True)
class Profiler:
    """py-spy recording a process for the recorded window of one level."""

    py_spy: str
    out: Path
    extra: tuple[str, ...] = ()  # more py-spy record options, e.g. --gil

    def start(self, pid: int, seconds: float) -> subprocess.Popen:
        fmt = PROFILE_FORMATS.get(self.out.suffix.lower(), "raw")
        command = [
            self.py_spy,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(max(1, round(seconds))),
        ]
        command += ["--format", fmt, "--output", str(self.out), "--subprocesses", "--nolineno"]
        command += self.extra
        return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


# --------------------------------------------------------------------------------------------
def turn_totals(url: str) -> tuple[float, float]:
    """(cases, turns) explained together so far, from the service's /metrics (0, 0 when it
    is not readable: a CLIPMED_METRICS_TOKEN the benchmark does not have)."""
    try:
        text = httpx.get(f"{url}/metrics", timeout=10, headers=METRICS_HEADERS).text
    except httpx.HTTPError:
        return 0.0, 0.0
    found = dict(re.findall(r"^clipmed_explanation_turn_cases_(sum|count) (\S+)$", text, re.M))
    return float(found.get("sum", 0)), float(found.get("count", 0))


def run_level(
    url: str,
    endpoint: Endpoint,
    clients: int,
    warmup: float,
    seconds: float,
    max_requests: int,
    pid: int | None,
    profiler: Profiler | None = None,
) -> Result:
    """`clients` threads, each with its own keep-alive client: `warmup` seconds unrecorded, then
    `seconds` recorded (or `max_requests` in all, whichever comes first)."""
    latencies: list[float] = []
    errors = 0
    first_error: list[str] = []
    lock = threading.Lock()
    started = threading.Barrier(clients + 1)
    window = {"start": 0.0, "stop": 0.0}
    issued = [0]

    def one(client: httpx.Client, n: int) -> tuple[float, str | None]:
        start = time.perf_counter()
        try:
            if endpoint.method == "GET":
                r = client.get(endpoint.path)
            else:
                p = endpoint.payloads[n % len(endpoint.payloads)]
                r = client.post(
                    endpoint.path, content=p.content, headers={"content-type": p.content_type}
                )
            r.read()
            bad = None if r.status_code == endpoint.expect else f"HTTP {r.status_code}: {r.text}"
        except Exception as e:  # a failed request, whatever the cause, is an error
            bad = f"{type(e).__name__}: {e}"
        return (time.perf_counter() - start) * 1000, bad

    def worker(i: int) -> None:
        nonlocal errors
        local: list[float] = []
        local_errors = 0
        with httpx.Client(base_url=url, timeout=60, headers=AUTH_HEADERS) as client:
            n = i
            started.wait(timeout=60)
            while time.perf_counter() < window["start"]:  # warm-up: same load, not recorded
                one(client, n)
                n += clients
            while True:
                now = time.perf_counter()
                if now >= window["stop"]:
                    break
                with lock:
                    if issued[0] >= max_requests:
                        break
                    issued[0] += 1
                ms, bad = one(client, n)
                n += clients
                if bad is None:
                    local.append(ms)
                else:
                    local_errors += 1
                    if not first_error:
                        with lock:
                            first_error.append(bad[:300])
        with lock:
            latencies.extend(local)
            errors += local_errors

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    t0 = time.perf_counter()
    window["start"] = t0 + warmup
    window["stop"] = t0 + warmup + seconds
    started.wait(timeout=60)
    time.sleep(max(0.0, window["start"] - time.perf_counter()))
    server0, client0 = proc_cpu_s(pid), time.process_time()
    recording = profiler.start(pid, seconds) if profiler is not None and pid else None
    time.sleep(max(0.0, window["stop"] - time.perf_counter()))
    server1, client1 = proc_cpu_s(pid), time.process_time()
    for t in threads:
        t.join(timeout=warmup + seconds + 120)
    if recording is not None:
        _, err = recording.communicate(timeout=120)
        if recording.returncode != 0:
            print(f"py-spy failed ({recording.returncode}): {err.decode()[-500:]}", file=sys.stderr)
    # The recorded window ends when the last request begun in it returns.
    wall = time.perf_counter() - window["start"]
    return Result(
        latencies,
        errors,
        wall,
        first_error[0] if first_error else None,
        server1 - server0,
        client1 - client0,
    )


# --------------------------------------------------------------------------------------------
class Server:
    """`clipmed serve` as a subprocess on a free localhost port, over a throwaway database."""

    def __init__(self, data: Path, keep_db: bool, log_dir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / "serve.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("CLIPMED_")}
        env["CLIPMED_DATA_DIR"] = str(data)
        env.pop("DATABASE_URL", None)
        env.pop("database_url", None)
        if not keep_db:
            env["DATABASE_URL"] = f"sqlite:///{log_dir / 'bench.db'}"
        clipmed = Path(sys.executable).parent / "clipmed"
        command = [str(clipmed), "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        self.log = self.log_path.open("wb")
        self.process = subprocess.Popen(command, env=env, stdout=self.log, stderr=self.log)
        self.pid = self.process.pid
        self.env = env

    def api_token(self, username: str = "admin") -> str:
        """A new token of the admin `clipmed serve` creates on a database without users."""
        clipmed = Path(sys.executable).parent / "clipmed"
        done = subprocess.run(
            [str(clipmed), "users", "token", username],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        return done.stdout.strip()

    def wait_ready(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"`clipmed serve` exited with {self.process.returncode}")
            try:
                r = httpx.get(f"{self.url}/readyz", timeout=2)
                if r.status_code == 200:
                    return r.json()
                last = r.text
            except httpx.HTTPError as e:
                last = type(e).__name__
            time.sleep(0.25)
        raise RuntimeError(f"the service was not ready after {timeout:.0f} s ({last})")

    def log_tail(self, lines: int = 15) -> str:
        self.log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.log.close()


def check_local(url: str) -> None:
    host = urlsplit(url).hostname
    if host not in LOCAL_HOSTS:
        print(f"--url must be a localhost service, got host {host!r}", file=sys.stderr)
        raise SystemExit(2)


# --------------------------------------------------------------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data"), help="data folder [data]")
    parser.add_argument("--url", help="a running localhost service (default: start one)")
    parser.add_argument("--pid", type=int, help="with --url: the server's pid, for its memory")
    parser.add_argument("--seconds", type=float, default=10.0, help="recorded seconds per level")
    parser.add_argument("--warmup", type=float, default=2.0, help="unrecorded seconds per level")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument(
        "--formats",
        nargs="+",
        choices=["npy", "json"],
        default=["npy", "json"],
        help="explanation request bodies to measure [npy json]",
    )
    parser.add_argument("--max-requests", type=int, default=50_000, help="cap per level")
    parser.add_argument(
        "--profile",
        type=Path,
        help="py-spy profile of the server during the .npy explanations at the most clients",
    )
    parser.add_argument("--py-spy", help="the py-spy executable (default: found on PATH)")
    parser.add_argument(
        "--profile-args",
        default="",
        help='more `py-spy record` options, e.g. "--gil" (only samples holding the GIL)',
    )
    parser.add_argument("--start-timeout", type=float, default=180.0)
    parser.add_argument(
        "--keep-db",
        action="store_true",
        help="let the started service use the data folder's database (default: a throwaway one)",
    )
    args = parser.parse_args()
    seconds = min(max(args.seconds, 0.1), MAX_SECONDS)
    warmup = min(max(args.warmup, 0.0), MAX_SECONDS)
    if any(c < 1 or c > 256 for c in args.clients):
        parser.error("--clients must be between 1 and 256")

    examples = sorted((args.data / "examples").glob("*.npy"))
    if not examples:
        print(
            f"no example cases in {args.data / 'examples'}: run `make run` or "
            f"`clipmed demo --data {args.data}` first",
            file=sys.stderr,
        )
        return 2
    profiler = None
    if args.profile is not None:
        py_spy = find_py_spy(args.py_spy)
        if py_spy is None:
            print("--profile needs py-spy: pip install py-spy, or give --py-spy", file=sys.stderr)
            return 2
        if "npy" not in args.formats:
            parser.error("--profile records the .npy explanations: keep npy in --formats")
        profiler = Profiler(py_spy, args.profile, tuple(shlex.split(args.profile_args)))
    uploads, bodies, shapes = explain_payloads(examples)
    endpoints = [Endpoint("GET /healthz", "GET", "/healthz", 200)]
    if "npy" in args.formats:
        endpoints.append(Endpoint(f"POST {EXPLAIN} (.npy upload)", "POST", EXPLAIN, 201, uploads))
    if "json" in args.formats:
        endpoints.append(Endpoint(f"POST {EXPLAIN} (JSON)", "POST", EXPLAIN, 201, bodies))

    server = None
    tmp = tempfile.TemporaryDirectory(prefix="clipmed-bench-")
    url, pid = args.url, args.pid
    try:
        if url is None:
            if not (args.data / "checkpoints" / "default" / "checkpoint.json").is_file():
                print(
                    f"no default checkpoint in {args.data / 'checkpoints'}: run "
                    f"`clipmed demo --data {args.data}` first",
                    file=sys.stderr,
                )
                return 2
            server = Server(args.data.resolve(), args.keep_db, Path(tmp.name))
            url, pid = server.url, server.pid
            try:
                ready = server.wait_ready(args.start_timeout)
                AUTH_HEADERS["Authorization"] = f"Bearer {server.api_token()}"
            except (RuntimeError, subprocess.CalledProcessError) as e:
                print(f"{e}\n{server.log_tail()}", file=sys.stderr)
                return 2
        else:
            url = url.rstrip("/")
            check_local(url)
            if os.environ.get("CLIPMED_API_TOKEN"):
                AUTH_HEADERS["Authorization"] = f"Bearer {os.environ['CLIPMED_API_TOKEN']}"
            ready = httpx.get(f"{url}/readyz", timeout=10).json()
            if ready.get("status") != "ready":
                print(f"{url} is not ready: {ready}", file=sys.stderr)
                return 2

        # One request of each kind, checked in full, before anything is timed.
        with httpx.Client(base_url=url, timeout=60, headers=AUTH_HEADERS) as client:
            for ep in endpoints[1:]:
                p = ep.payloads[0]
                r = client.post(
                    ep.path, content=p.content, headers={"content-type": p.content_type}
                )
                if r.status_code != ep.expect or len(r.json()["explanation"]["texts"]) != K:
                    print(f"{ep.label}: unexpected answer {r.status_code} {r.text[:300]}")
                    return 1
        memory_before = proc_memory_mb(pid)

        rows: list[tuple[Endpoint, int, Result]] = []
        per_turn: list[float] = []
        for clients in args.clients:
            for ep in endpoints:
                profile = clients == max(args.clients) and ep.payloads is uploads
                turns_before = turn_totals(url)
                result = run_level(
                    url,
                    ep,
                    clients,
                    warmup,
                    seconds,
                    args.max_requests,
                    pid,
                    profiler if profile else None,
                )
                rows.append((ep, clients, result))
                turns_after = turn_totals(url)
                turns = turns_after[1] - turns_before[1]
                per_turn.append((turns_after[0] - turns_before[0]) / turns if turns else math.nan)
                print(
                    f"  {ep.label}, {clients} clients: {result.requests} requests, "
                    f"p50 {result.pct(50):.1f} ms, {result.rps:.1f} req/s",
                    file=sys.stderr,
                    flush=True,
                )
        memory_after = proc_memory_mb(pid)
    finally:
        if server is not None:
            server.stop()
        tmp.cleanup()

    slices = [s[0] for s in shapes]
    print(f"Date: {dt.datetime.now().astimezone().isoformat(timespec='minutes')}")
    print(f"Machine: {machine()}")
    print(
        f"Service: {url}{' (started by the benchmark)' if server else ''}; model "
        f"{ready.get('model_version')}, catalog {ready.get('catalog_version')}"
    )
    print(
        f"Requests: {len(examples)} example cases ({min(slices)}-{max(slices)} slices x "
        f"{shapes[0][1]} features), k={K}; {warmup:g} s warm-up + {seconds:g} s per level\n"
    )
    print(
        "| endpoint | clients | requests | p50 ms | p99 ms | req/s | errors "
        "| server CPU ms/req | client CPU ms/req | cases per turn |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for (ep, clients, r), cases in zip(rows, per_turn, strict=True):
        print(
            f"| {ep.label} | {clients} | {r.requests} | {r.pct(50):.1f} | {r.pct(99):.1f} | "
            f"{r.rps:.1f} | {r.errors} | {r.cpu_ms_per_request(r.server_cpu_s):.2f} | "
            f"{r.cpu_ms_per_request(r.client_cpu_s):.2f} | "
            f"{'' if math.isnan(cases) else f'{cases:.1f}'} |"
        )
    if profiler is not None:
        print(
            f"\nProfiled (py-spy, sampling costs server CPU): the .npy explanations at "
            f"{max(args.clients)} clients, into {profiler.out}"
        )
    if memory_before:
        print(
            f"\nServer resident memory (pid {pid}): VmRSS {memory_before['VmRSS']:.0f} MiB before, "
            f"{memory_after.get('VmRSS', float('nan')):.0f} MiB after; "
            f"peak (VmHWM) {memory_after.get('VmHWM', float('nan')):.0f} MiB"
        )
    else:
        print("\nServer resident memory: not measured (give --pid with --url)")
    failed = [(ep, c, r) for ep, c, r in rows if r.errors]
    for ep, clients, r in failed:
        print(f"\n{ep.label}, {clients} clients: {r.errors} failed; first: {r.first_error}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
