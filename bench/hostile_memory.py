"""The service's resident memory while it refuses maximum-size hostile bodies.

Starts `clipmed serve` as bench/serve.py does (a throwaway SQLite database, the data folder's
default checkpoint), explains one real example to warm it up, then sends --clients concurrent
bodies of just under the upload limit that are refused (422), for --rounds rounds. The corpus
(--corpus): `json`, feature cases: more slices than accepted, rows thousands of values wide,
the wrong width, full of NaN; `segmentation` (issue 12): a gzip bomb NIfTI, a NIfTI declaring
more voxels than the cap, .npy masks that are empty, of two parts, or not binary, and contours
of one self-intersecting ring of 250,000 points; `all` (default): both. Reports the server's
RSS when idle (after the warm-up), its peak while refusing (VmHWM, reset after the idle
reading), and its RSS a few seconds after the last answer, as a markdown table with the
machine. Exits 1 if any body got
anything but a 422, or the targets are missed (peak <= 1.3 x idle, after within 50 MiB).

    .venv/bin/python bench/hostile_memory.py [--data data] [--clients 16] [--rounds 3]
        [--corpus all|json|segmentation]
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
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


def as_json(body: bytes) -> dict:
    return {"content": body, "headers": {"content-type": "application/json"}}


def as_file(name: str, data: bytes, spacing: str | None = "2.5,0.7,0.7") -> dict:
    return {
        "files": {"file": (name, data, "application/octet-stream")},
        "data": {"spacing_mm": spacing} if spacing else {},
    }


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def nifti(shape: tuple[int, ...], data: bytes = b"") -> bytes:
    """A NIfTI-1 file: a header declaring `shape` (uint8, 0.7 x 0.7 x 2.5 mm), then `data`."""
    import nibabel as nib

    image = nib.Nifti1Image(np.zeros((1, 1, 1), np.uint8), np.diag([0.7, 0.7, 2.5, 1.0]))
    header = image.header.copy()
    header.set_data_shape(shape)
    return header.binaryblock + b"\0" * 4 + data


def hostile_segmentations() -> dict[str, dict]:
    """Segmentations of just under the upload limit (or inflating far past it), each refused."""
    slices = (UPLOAD_LIMIT - 4096) // (512 * 512)  # uint8 voxels that fit the body limit
    empty = np.zeros((slices, 512, 512), np.uint8)
    two_parts = empty.copy()
    two_parts[1:3, 10:40, 10:40] = 1
    two_parts[-3:-1, 400:440, 400:440] = 1
    not_binary = two_parts * 2
    ring = np.linspace(0, 2 * np.pi, 250_000, endpoint=False)
    points = np.stack([256 + 200 * np.cos(ring), 256 + 200 * np.sin(ring)], axis=1).round(3)
    points[[10, 125_000]] = points[[125_000, 10]]  # two far points swapped: the ring crosses
    contours = {
        "slice_thickness_mm": 2.5,
        "pixel_spacing_mm": 0.7,
        "slices": [{"z_mm": 0.0, "contours": [points.tolist()]}],
    }
    bodies = {
        "NIfTI gzip bomb (inflates to 256 MiB)": as_file(
            "m.nii.gz", gzip.compress(nifti((16, 64, 64)) + bytes(256 << 20), 9), None
        ),
        "NIfTI declaring 64 x 512 x 512 voxels": as_file(
            "m.nii", nifti((512, 512, 64), bytes(UPLOAD_LIMIT - 8192)), None
        ),
        f"empty .npy mask {slices} x 512 x 512": as_file("m.npy", npy(empty)),
        f".npy mask of two parts, {slices} x 512 x 512": as_file("m.npy", npy(two_parts)),
        f"non-binary .npy mask {slices} x 512 x 512": as_file("m.npy", npy(not_binary)),
        "contours: one crossing ring of 250,000 points": as_json(json.dumps(contours).encode()),
    }
    return bodies


def hostile_bodies(feature_dim: int) -> dict[str, dict]:
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
    return {name: as_json(body) for name, body in bodies.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data"), help="data folder [data]")
    parser.add_argument("--clients", type=int, default=16, help="concurrent bodies [16]")
    parser.add_argument("--rounds", type=int, default=3, help="times each client sends [3]")
    parser.add_argument("--corpus", choices=["all", "json", "segmentation"], default="all")
    args = parser.parse_args()
    example = next(iter(sorted((args.data / "examples").glob("*.npy"))), None)
    if example is None:
        print(f"no example cases in {args.data / 'examples'} (`make run`)", file=sys.stderr)
        return 2
    feature_dim = int(np.load(example).shape[1])
    corpus = {}
    if args.corpus in ("all", "json"):
        corpus |= hostile_bodies(feature_dim)
    if args.corpus in ("all", "segmentation"):
        corpus |= hostile_segmentations()
    bodies = list(corpus.items())
    for name, request in bodies:
        size = len(request.get("content") or request["files"]["file"][1])
        assert size < UPLOAD_LIMIT, (name, size)
    statuses: list[tuple[str, int]] = []

    with tempfile.TemporaryDirectory() as tmp:
        server = Server(args.data.resolve(), keep_db=False, log_dir=Path(tmp))
        try:
            server.wait_ready(240)
            headers = {"Authorization": f"Bearer {server.api_token()}"}
            with httpx.Client(base_url=server.url, headers=headers, timeout=120) as http:
                warm = http.post(EXPLAIN, files={"file": ("case.npy", example.read_bytes())})
                assert warm.status_code == 201, warm.text
                for _, request in bodies:  # lazy imports and first-use caches are not the cost
                    http.post(EXPLAIN, **request)
            time.sleep(2)
            idle = proc_memory_mb(server.pid)["VmRSS"]
            Path(f"/proc/{server.pid}/clear_refs").write_text("5")  # VmHWM := VmRSS

            def client(i: int) -> None:
                with httpx.Client(base_url=server.url, headers=headers, timeout=300) as http:
                    for r in range(args.rounds):
                        name, request = bodies[(i + r) % len(bodies)]
                        answer = http.post(EXPLAIN, **request)
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
    print(f"\n{args.clients} concurrent clients x {args.rounds} hostile bodies each")
    print(f"(corpus {args.corpus}: {len(statuses)} requests in {seconds:.1f} s;")
    print(f"bodies of up to {UPLOAD_LIMIT} bytes:")
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
