"""Hostile uploads against a real server process: each refused with its 4xx, nothing stored,
nothing unpickled, and the server's memory flat while it refuses them over and over.

The server runs in its own process (not the test's thread) so that its resident memory is its
own, and with the default upload limit, so that the 10,000-member archive reaches the archive
checks instead of the body limit.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from support.checkpoints import FEATURE_DIM
from support.databases import DATABASES, fresh_database
from support.http import add_user, bearer
from support.servers import free_port

from app import migrate, registry
from app.config import Settings
from app.db import make_engine, make_session_factory
from model.features_io import MAX_CSV_COLUMNS, MAX_NPZ_MEMBERS
from model.inference import MAX_SLICES_PER_CASE

REPO = Path(__file__).resolve().parents[2]
UPLOAD_LIMIT = Settings.model_fields["max_upload_bytes"].default
ROUNDS = 20  # times the whole corpus is refused while memory is watched
MEMORY_GROWTH_LIMIT_KIB = 50 * 1024

# Serves the app as `clipmed serve` does, minus the first-run setup the fixture already did.
SERVE = """
import sys
import uvicorn
from app.config import Settings
from app.main import create_app
from app.malloc import pin_mmap_threshold
pin_mmap_threshold()
uvicorn.run(create_app(Settings()), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


@dataclass(frozen=True)
class ServerProcess:
    url: str
    pid: int
    token: str  # an admin's: sees every stored explanation


@pytest.fixture(scope="module", params=DATABASES)
def server(request, tmp_path_factory, small_checkpoints) -> Iterator[ServerProcess]:
    tmp_dir = tmp_path_factory.mktemp("hostile-server")
    with fresh_database(request.param, tmp_dir) as url:
        migrate.upgrade(url)
        engine = make_engine(url)
        sessions = make_session_factory(engine)
        with sessions() as session:
            row = registry.register_checkpoint(session, small_checkpoints.first)
            registry.activate_version(session, row.version)
        token = add_user(sessions, "admin", "admin")
        engine.dispose()
        env = {k: v for k, v in os.environ.items() if not k.startswith("CLIPMED_")}
        env.update(
            {
                "CLIPMED_DATA_DIR": str(tmp_dir),
                "DATABASE_URL": url,
                "CLIPMED_EMBEDDED_WORKER": "off",
            }
        )
        port = free_port()
        log_path = tmp_dir / "server.log"
        with log_path.open("w") as log:
            proc = subprocess.Popen(
                [sys.executable, "-c", SERVE, str(port)],
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            base = f"http://127.0.0.1:{port}"
            wait_until_ready(base, proc, log_path)
            yield ServerProcess(base, proc.pid, token)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_until_ready(base: str, proc: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + 120
    while True:
        assert proc.poll() is None, log_path.read_text()
        try:
            if httpx.get(f"{base}/readyz", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, (
            f"the server did not become ready\n{log_path.read_text()}"
        )
        time.sleep(0.25)


@pytest.fixture
def client(server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60, headers=bearer(server.token)) as http:
        yield http


# -- the corpus --------------------------------------------------------------------------------
def case(slices: int = 5, dim: int = FEATURE_DIM) -> np.ndarray:
    return np.random.default_rng(slices).normal(size=(slices, dim)).astype(np.float32)


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=array.dtype.hasobject)
    return buffer.getvalue()


def npy_header_only(shape: tuple[int, ...], descr: str = "<f4") -> bytes:
    buffer = io.BytesIO()
    header = {"descr": descr, "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue()


def npy_shape_text(shape_text: str) -> bytes:
    """A .npy header spelling its shape as given (numpy writes only plain ints), and data."""
    header = f"{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_text}, }}".encode()
    header += b" " * (63 - (10 + len(header)) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + bytes(4096)


def npz(
    members: dict[str, bytes], declared_size: int | None = None, deflate: bool = False
) -> bytes:
    """A zip of raw members; `declared_size` overrides what the directory says 'features.npy'
    holds (zipfile writes its directory at close, from the member's info)."""
    buffer = io.BytesIO()
    compression = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        if declared_size is not None:
            archive.getinfo("features.npy").file_size = declared_size
    return buffer.getvalue()


def csv_text(rows: list[list[str]]) -> bytes:
    header = ",".join(f"sim_{j:04d}" for j in range(len(rows[0])))  # the model's feature names
    return ("\n".join([header, *(",".join(row) for row in rows)]) + "\n").encode()


def numbers(slices: int) -> list[list[str]]:
    return [[repr(float(v)) for v in row] for row in case(slices)]


class WritesAFile:
    """Unpickling this creates a file: proof that nothing was unpickled if the file is absent."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@dataclass(frozen=True)
class HostileUpload:
    filename: str
    make: Callable[[Path], bytes]  # the file's bytes, given where an unpickling would write
    status: int
    detail: str  # a part of the error's detail that names the problem


def with_value(value: float, at: tuple[int, int], dtype=np.float32) -> np.ndarray:
    array = case(4).astype(dtype)
    array[at] = value
    return array


def text_cell_rows() -> list[list[str]]:
    rows = numbers(4)
    rows[2][4] = "spiculated"
    return rows


def cut_at_last_comma(data: bytes) -> bytes:
    return data[: data.rindex(b",")]


def pickled(marker: Path) -> np.ndarray:
    return np.array([WritesAFile(marker)], dtype=object)


def zeros_npy(nbytes: int) -> bytes:
    return npy(np.zeros((nbytes // (4 * FEATURE_DIM), FEATURE_DIM), np.float32))


SLICES = MAX_SLICES_PER_CASE
BOMB_BYTES = 64 << 20  # inflated, more than the memory budget; deflated, about 64 KiB
CORPUS = {
    # archives: judged from their directory before anything is decompressed
    "npz declaring an 8 GiB member": HostileUpload(
        "case.npz",
        lambda _: npz({"features.npy": npy(case())}, declared_size=8 << 30),
        422,
        "declares 8589934592 bytes",
    ),
    "npz with 10,000 members": HostileUpload(
        "case.npz",
        lambda _: npz({"features.npy": npy(case())} | {f"m{i}": b"" for i in range(9_999)}),
        422,
        f"has 10000 members; at most {MAX_NPZ_MEMBERS}",
    ),
    "npz inflating to 64 MiB": HostileUpload(
        "case.npz",
        lambda _: npz({"features.npy": zeros_npy(BOMB_BYTES)}, deflate=True),
        422,
        f"declares {BOMB_BYTES + 128} bytes; the limit is {UPLOAD_LIMIT}",
    ),
    "npz member inflating past its declared size": HostileUpload(
        "case.npz",
        lambda _: npz({"features.npy": zeros_npy(BOMB_BYTES)}, declared_size=4096, deflate=True),
        422,
        "Bad CRC-32",
    ),
    "npz truncated": HostileUpload(
        "case.npz",
        lambda _: npz({"features.npy": npy(case(40))})[:1500],
        422,
        "not a valid .npz file",
    ),
    # pickles: refused from the .npy header, never loaded
    "npy of pickled objects": HostileUpload(
        "case.npy", lambda marker: npy(pickled(marker)), 422, "Python objects"
    ),
    "npz of pickled objects": HostileUpload(
        "case.npz",
        lambda marker: npz({"features.npy": npy(pickled(marker))}),
        422,
        "Python objects",
    ),
    "a pickle file": HostileUpload(
        "case.pkl", lambda marker: npy(pickled(marker)), 415, "unsupported file type '.pkl'"
    ),
    # arrays: the header first, then the values
    "npy with NaN": HostileUpload(
        "case.npy", lambda _: npy(with_value(np.nan, (2, 3))), 422, "slice(s) 2"
    ),
    "npy with Inf": HostileUpload(
        "case.npy", lambda _: npy(with_value(-np.inf, (0, 0))), 422, "slice(s) 0"
    ),
    "npy of 3 dimensions": HostileUpload(
        "case.npy", lambda _: npy(np.zeros((4, 4, FEATURE_DIM))), 422, "needs its voxel spacing"
    ),
    "npy of the wrong width": HostileUpload(
        "case.npy",
        lambda _: npy(case(dim=FEATURE_DIM + 1)),
        422,
        f"expected {FEATURE_DIM} features per slice, got {FEATURE_DIM + 1}",
    ),
    "npy of zero slices": HostileUpload("case.npy", lambda _: npy(case(0)), 422, "no slices"),
    "npy of 10,000 slices": HostileUpload(
        "case.npy",
        lambda _: npy(np.zeros((10_000, FEATURE_DIM), np.float32)),
        422,
        f"features have 10000 slices; at most {SLICES} are accepted",
    ),
    "npy whose shape overflows int64": HostileUpload(
        "case.npy",
        lambda _: npy_header_only((2**32 + 1, 2**32)),
        422,
        f"the limit is {UPLOAD_LIMIT}",
    ),
    "npy of complex numbers": HostileUpload(
        "case.npy", lambda _: npy(case() * 1j), 422, "only real numbers"
    ),
    "npy truncated": HostileUpload(
        "case.npy", lambda _: npy(case(40))[:-100], 422, "the file is truncated"
    ),
    "npy of garbage after the magic": HostileUpload(
        "case.npy", lambda _: b"\x93NUMPY\x01\x00\xff\xff{", 422, "not a valid .npy file"
    ),
    "npy of float64 beyond any feature's range": HostileUpload(
        "case.npy",
        lambda _: npy(with_value(-3e38, (1, 3)).astype(np.float64)),
        422,
        "feature 'sim_0003' (3) of slice 1 is -3e+38, far outside",
    ),
    "npy of int64 beyond any feature's range": HostileUpload(
        "case.npy",
        lambda _: npy(np.full((4, FEATURE_DIM), 2**62, np.int64)),
        422,
        "feature 'sim_0000' (0) of slice 0 is 4.61169e+18",
    ),
    "npy whose shape holds a bool": HostileUpload(
        "case.npy", lambda _: npy_shape_text("(True, 16)"), 422, "got (True, 16)"
    ),
    "npy whose shape holds a float": HostileUpload(
        "case.npy", lambda _: npy_shape_text("(1.5, 16)"), 422, "shape is not valid"
    ),
    "npy whose shape nests a tuple": HostileUpload(
        "case.npy", lambda _: npy_shape_text("((2,), 16)"), 422, "shape is not valid"
    ),
    "npy whose shape is a 5000-digit number": HostileUpload(
        "case.npy", lambda _: npy_shape_text(f"({'9' * 5000}, 16)"), 422, "not a valid .npy file"
    ),
    # new since the attack: other extreme finite values and integer dtypes, odd headers
    "npy of float16 at its largest": HostileUpload(
        "case.npy",
        lambda _: npy(np.full((3, FEATURE_DIM), 65504, np.float16)),
        422,
        "feature 'sim_0000' (0) of slice 0 is 65504, far outside",
    ),
    "npy of float64 at its largest": HostileUpload(
        "case.npy",
        lambda _: npy(with_value(np.finfo(np.float64).max, (3, 7), np.float64)),
        422,
        "NaN or infinite values in slice(s) 3",  # read as float32, where it is infinite
    ),
    "npy of uint64 at its largest": HostileUpload(
        "case.npy",
        lambda _: npy(np.full((2, FEATURE_DIM), np.iinfo(np.uint64).max, np.uint64)),
        422,
        "feature 'sim_0000' (0) of slice 0 is 1.84467e+19",
    ),
    "npy of int64 at its smallest": HostileUpload(
        "case.npy",
        lambda _: npy(np.full((2, FEATURE_DIM), np.iinfo(np.int64).min, np.int64)),
        422,
        "feature 'sim_0000' (0) of slice 0 is -9.22337e+18",
    ),
    "npy whose shape holds a negative number": HostileUpload(
        "case.npy", lambda _: npy_shape_text("(-1, 16)"), 422, "got (-1, 16)"
    ),
    "npy whose shape holds a string": HostileUpload(
        "case.npy", lambda _: npy_shape_text("('5', 16)"), 422, "shape is not valid"
    ),
    "npy whose shape is a list": HostileUpload(
        "case.npy", lambda _: npy_shape_text("[5, 16]"), 422, "shape is not valid"
    ),
    "npy whose shape is 9,000 minus signs deep": HostileUpload(
        "case.npy",
        lambda _: npy_shape_text("(" + "-" * 9000 + "5, 16)"),
        422,
        "its header nests too deeply to read",
    ),
    "npy whose shape is an expression": HostileUpload(
        "case.npy", lambda _: npy_shape_text("(10**9, 16)"), 422, "not a valid .npy file"
    ),
    "npy of a structured dtype": HostileUpload(
        "case.npy",
        lambda _: npy(np.zeros(3, [("a", "<f4", (FEATURE_DIM,))])),
        422,
        "only real numbers are read",
    ),
    # text
    "csv with 3.5e38 (finite in float64, not in float32)": HostileUpload(
        "case.csv",
        lambda _: csv_text(numbers(3)[:2] + [["3.5e38"] * FEATURE_DIM]),
        422,
        "NaN or infinite values in slice(s) 2",  # read as float32, where it is infinite
    ),
    "csv with 1e30": HostileUpload(
        "case.csv",
        lambda _: csv_text(numbers(3)[:2] + [["1e30"] * FEATURE_DIM]),
        422,
        "feature 'sim_0000' (0) of slice 2 is 1e+30",
    ),
    "csv with a text cell": HostileUpload(
        "case.csv",
        lambda _: csv_text(text_cell_rows()),
        422,
        "csv row 4, column 5: 'spiculated' is not a number",
    ),
    "csv of 10,000 rows": HostileUpload(
        "case.csv",
        lambda _: csv_text([["0"] * FEATURE_DIM] * 10_000),
        422,
        f"more than {SLICES} rows",
    ),
    "csv line of 100,000 values": HostileUpload(
        "case.csv",
        lambda _: ("0," * 100_000 + "0\n").encode(),
        422,
        f"more than {MAX_CSV_COLUMNS} values",
    ),
    "csv cell over the csv module's field limit": HostileUpload(
        "case.csv",
        lambda _: b'"' + b"9" * 200_000 + b'"\n',
        422,
        "could not read the .csv file at row 1",
    ),
    "csv that is not UTF-8": HostileUpload(
        "case.csv", lambda _: b"\xff\xfe1\x00,\x002\x00", 422, "not UTF-8"
    ),
    "csv truncated mid-row": HostileUpload(
        "case.csv",
        lambda _: cut_at_last_comma(csv_text(numbers(3))),
        422,
        f"csv row 4 has {FEATURE_DIM - 1} values, the first has {FEATURE_DIM}",
    ),
}


@pytest.fixture(scope="module")
def pickle_marker(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("hostile-corpus") / "unpickled"


@pytest.fixture(scope="module")
def corpus(pickle_marker) -> dict[str, tuple[HostileUpload, bytes]]:
    """Each upload with its bytes, built once."""
    return {name: (upload, upload.make(pickle_marker)) for name, upload in CORPUS.items()}


def post(client: httpx.Client, upload: HostileUpload, data: bytes) -> httpx.Response:
    return client.post(
        "/api/v1/explanations",
        files={"file": (upload.filename, data, "application/octet-stream")},
        data={"k": "5"},
    )


def post_all(client: httpx.Client, corpus: dict[str, tuple[HostileUpload, bytes]]) -> None:
    for name, (upload, data) in corpus.items():
        assert post(client, upload, data).status_code == upload.status, name


def stored_ids(client: httpx.Client) -> list[str]:
    response = client.get("/api/v1/explanations", params={"limit": 200})
    assert response.status_code == 200, response.text
    return [row["id"] for row in response.json()]


# -- the tests -----------------------------------------------------------------------------------
def test_every_hostile_upload_fits_the_body_limit(corpus):
    # otherwise the body limit would refuse it before the checks this file is about
    assert all(len(data) < UPLOAD_LIMIT // 2 for _, data in corpus.values())


@pytest.mark.parametrize("name", CORPUS)
def test_a_hostile_upload_is_refused_naming_the_problem(client, corpus, pickle_marker, name):
    upload, data = corpus[name]
    response = post(client, upload, data)
    assert response.status_code == upload.status, response.text
    body = response.json()
    assert upload.detail in body["detail"], body
    assert body["code"] == {415: "unsupported_media_type", 422: "invalid_input"}[upload.status]
    assert not pickle_marker.exists()


def test_refused_uploads_store_nothing(client, corpus, pickle_marker):
    before = stored_ids(client)
    post_all(client, corpus)
    assert stored_ids(client) == before
    assert not pickle_marker.exists()
    # the listing does show what is stored: a case at the cap is sub-sampled, and kept
    accepted = client.post(
        "/api/v1/explanations",
        files={"file": ("case.npy", npy(case(SLICES)), "application/octet-stream")},
    )
    assert accepted.status_code == 201, accepted.text
    slices = accepted.json()["explanation"]["slices"]
    assert slices["received"] == SLICES and slices["subsampled"]
    assert stored_ids(client) == [accepted.json()["id"], *before]


def test_a_json_case_over_the_slice_cap_is_refused(client):
    rows = [[0.0] * FEATURE_DIM] * (SLICES + 1)
    response = client.post("/api/v1/explanations", json={"features": rows, "k": 5})
    assert response.status_code == 422, response.text
    assert f"at most {SLICES} are accepted" in response.json()["detail"]


def memory_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux)")
def test_refusing_the_corpus_over_and_over_keeps_memory_flat(server, client, corpus, pickle_marker):
    post_all(client, corpus)  # once first: lazy imports and first-use caches are not growth
    baseline = memory_kib(server.pid, "VmRSS")
    Path(f"/proc/{server.pid}/clear_refs").write_text("5")  # VmHWM := VmRSS from here on
    for _ in range(ROUNDS):
        post_all(client, corpus)
    grown = memory_kib(server.pid, "VmRSS") - baseline
    peak = memory_kib(server.pid, "VmHWM") - baseline
    print(
        f"\n{ROUNDS} x {len(corpus)} hostile uploads refused: RSS {baseline / 1024:.1f} MiB "
        f"at start, grew {grown / 1024:+.1f} MiB, peaked {peak / 1024:+.1f} MiB above it"
    )
    assert grown < MEMORY_GROWTH_LIMIT_KIB
    assert peak < MEMORY_GROWTH_LIMIT_KIB
    assert not pickle_marker.exists()


# -- numbers, nesting and sizes that Python's own parsers choke on ---------------------------------
@pytest.mark.parametrize(
    "k",
    ["\u0663", "\u00b2", "--3", "+-3", "3 3", "0x5", "9" * 5000, "-" + "9" * 5000, "1e1"]
    # new since the attack: fullwidth and mathematical digits, Unicode minus and spaces
    + ["\uff13", "\U0001d7d1", "\u22123", "\u207b3", "3\u200b", "\u00a03", "\x1c3", "+", "-"],
)
def test_a_k_that_is_not_a_plain_ascii_integer_is_refused_naming_k(client, k):
    response = client.post(
        "/api/v1/explanations",
        files={"file": ("case.npy", npy(case()), "application/octet-stream")},
        data={"k": k},
    )
    assert response.status_code == 422, response.text
    assert response.json()["detail"].startswith("k must be"), response.json()
    assert len(response.json()["detail"]) < 200  # the 5000 digits are not echoed back


def test_a_k_with_a_sign_and_in_range_is_still_a_number(client):
    response = client.post(
        "/api/v1/explanations",
        files={"file": ("case.npy", npy(case()), "application/octet-stream")},
        data={"k": " +3 "},
    )
    assert response.status_code == 201, response.text
    assert response.json()["k"] == 3


def features_body(array: np.ndarray, **extra) -> bytes:
    return json.dumps({"features": array.tolist(), **extra}).encode()


DEEP = 10_000
HOSTILE_JSON = {
    "1e30 in a feature": (
        lambda: features_body(with_value(1e30, (2, 5))),
        "feature 'sim_0005' (5) of slice 2 is 1e+30, far outside",
    ),
    "-3e38 in a feature": (
        lambda: features_body(with_value(-3e38, (0, 15))),
        "feature 'sim_0015' (15) of slice 0 is -3e+38",
    ),
    "a 5000-digit feature": (
        lambda: b'{"features": [[' + b"9" * 5000 + b"" + b", 0" * (FEATURE_DIM - 1) + b"]]}",
        "NaN or infinite values in slice(s) 0",
    ),
    "a 5000-digit k": (
        lambda: features_body(case(2))[:-1] + b', "k": ' + b"9" * 5000 + b"}",
        "k: Input should be a finite number",
    ),
    # read as float32 (numpy), where these are infinite: refused as such
    "4e38, finite in float64 but not in float32": (
        lambda: features_body(with_value(4e38, (3, 2), np.float64)),
        "NaN or infinite values in slice(s) 3",
    ),
    "the largest float64": (
        lambda: b'{"features": [[1.7976931348623157e308' + b", 0" * (FEATURE_DIM - 1) + b"]]}",
        "NaN or infinite values in slice(s) 0",
    ),
    "1e309, beyond float64": (
        lambda: b'{"features": [[0, 1e309' + b", 0" * (FEATURE_DIM - 2) + b"]]}",
        "NaN or infinite values in slice(s) 0",
    ),
    "a feature of 10,000 minus signs": (
        lambda: b'{"features": [[' + b"-" * 10_000 + b"1" + b", 0" * (FEATURE_DIM - 1) + b"]]}",
        "features",
    ),
    "NaN in a feature": (
        lambda: features_body(with_value(np.nan, (1, 1))),
        "NaN or infinite values in slice(s) 1",
    ),
    "arrays 10,000 deep": (lambda: b"[" * DEEP + b"]" * DEEP, "more than 64 levels deep"),
    "features 10,000 deep": (
        lambda: b'{"features": ' + b"[" * DEEP + b"]" * DEEP + b"}",
        "more than 64 levels deep",
    ),
    "objects 10,000 deep": (lambda: b'{"a": ' * DEEP + b"1" + b"}" * DEEP, "64 levels"),
    "contours 10,000 deep": (
        lambda: b'{"slice_thickness_mm": 1, "slices": ' + b"[" * DEEP + b"]" * DEEP + b"}",
        "64 levels",
    ),
    "text of brackets is not nesting, a ragged case is refused": (
        lambda: b'{"nodule_label": "' + b"[" * 200 + b'", "features": [[1, 2], [3]]}',
        "every slice needs the same number of features, got widths [1, 2]",
    ),
    "a string among the features": (
        lambda: b'{"features": [[1, "2"]]}',
        "features.0.1: not a number",
    ),
    "a row over the width limit": (
        lambda: b'{"features": [[' + b"0," * 9000 + b"0]]}",
        "features.0 has more than 8192 values",
    ),
}


@pytest.mark.parametrize("name", HOSTILE_JSON)
def test_a_hostile_json_body_is_refused_naming_the_problem(client, name):
    make, detail = HOSTILE_JSON[name]
    response = client.post(
        "/api/v1/explanations", content=make(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert detail in response.json()["detail"], response.json()
    # the keep-alive connection is kept: the answer was a refusal, not a crash
    assert response.headers.get("connection", "keep-alive") != "close"
    assert client.get("/healthz").status_code == 200


JSON_ENDPOINTS = [
    "/api/v1/explanations",
    "/api/v1/explanations/batch",
    "/api/v1/explanations/x/flags",
    "/api/v1/flags/1/review",
    "/api/v1/admin/jobs",
]


@pytest.mark.parametrize("path", JSON_ENDPOINTS)
@pytest.mark.parametrize(
    "body",
    [
        b"[" * 1_000_000 + b"]" * 1_000_000,
        b'{"kind": "train", "overrides": ' + b'{"a": ' * 200_000 + b"1" + b"}" * 200_001,
        b'{"cases": [{"features": ' + b"[{" * 100_000 + b"}]" * 100_000 + b"}]}",
    ],
    ids=["arrays 1,000,000 deep", "objects 200,000 deep in a job", "mixed 200,000 deep"],
)
def test_deep_json_is_refused_by_every_json_endpoint(client, path, body):
    """Not only the explanation endpoint's bounded reader: each JSON body of the API."""
    response = client.post(path, content=body, headers={"content-type": "application/json"})
    assert 400 <= response.status_code < 500, response.text
    assert response.headers.get("connection", "keep-alive") != "close"
    assert client.get("/healthz").status_code == 200


def test_a_json_case_read_by_numpy_explains_as_its_npy(client):
    array = case(6)
    as_json = client.post("/api/v1/explanations", json={"features": array.tolist(), "k": 4})
    as_npy = client.post(
        "/api/v1/explanations",
        files={"file": ("case.npy", npy(array), "application/octet-stream")},
        data={"k": "4"},
    )
    assert as_json.status_code == as_npy.status_code == 201, (as_json.text, as_npy.text)
    assert as_json.json()["input_sha256"] == as_npy.json()["input_sha256"]
    assert as_json.json()["explanation"]["texts"] == as_npy.json()["explanation"]["texts"]


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux)")
def test_a_maximum_size_json_case_is_refused_without_inflating_memory(server, client):
    row = "[" + ",".join(["0.123456"] * 1800) + "]"  # a width no model takes
    body = ('{"features": [' + ",".join([row] * 512) + "]}").encode()
    assert UPLOAD_LIMIT * 0.9 < len(body) < UPLOAD_LIMIT
    client.post("/api/v1/explanations", content=body, headers={"content-type": "application/json"})
    baseline = memory_kib(server.pid, "VmRSS")
    Path(f"/proc/{server.pid}/clear_refs").write_text("5")
    for _ in range(3):
        response = client.post(
            "/api/v1/explanations", content=body, headers={"content-type": "application/json"}
        )
        assert response.status_code == 422, response.text
        assert f"expected {FEATURE_DIM} features per slice, got 1800" in response.json()["detail"]
    peak = memory_kib(server.pid, "VmHWM") - baseline
    # json.loads into Python floats cost ~+184 MiB for such a body; the body itself is ~8 MiB,
    # held once and copied once by the framework, and the array 3.5 MiB
    assert peak < 40 * 1024, f"peak {peak / 1024:.0f} MiB above {baseline / 1024:.0f} MiB"


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux)")
def test_maximum_size_masks_are_refused_without_copying_the_volume(server, client):
    """bench/hostile_memory.py's masks, one after another: 31 x 512 x 512 voxels in an 8 MiB
    .npy. Labelling the volume as 32-bit integers and counting parts in 64-bit ones cost
    ~110 MiB for the one of two parts; now the body is held once and labels cover the box
    around the voxels."""
    slices = (UPLOAD_LIMIT - 4096) // (512 * 512)
    empty = np.zeros((slices, 512, 512), np.uint8)
    two_parts = empty.copy()
    two_parts[1:3, 10:40, 10:40] = 1
    two_parts[-3:-1, 100:140, 100:140] = 1
    masks = {
        "the mask is empty": npy(empty),
        "the mask has 2 separate parts (sizes 3200, 1800 voxels)": npy(two_parts),
        "the mask is not binary: it holds the values 0, 2;": npy(two_parts * 2),
    }

    def refuse(expected: str, data: bytes) -> None:
        response = client.post(
            "/api/v1/explanations",
            files={"file": ("m.npy", data, "application/octet-stream")},
            data={"spacing_mm": "2.5,0.7,0.7"},
        )
        assert response.status_code == 422, response.text
        assert expected in response.json()["detail"]

    for expected, data in masks.items():  # once first: lazy imports, first-use caches
        refuse(expected, data)
    baseline = memory_kib(server.pid, "VmRSS")
    Path(f"/proc/{server.pid}/clear_refs").write_text("5")
    for _ in range(3):
        for expected, data in masks.items():
            refuse(expected, data)
    peak = memory_kib(server.pid, "VmHWM") - baseline
    grown = memory_kib(server.pid, "VmRSS") - baseline
    print(f"\n9 maximum-size masks refused: peak {peak / 1024:+.1f} MiB, after {grown / 1024:+.1f}")
    assert peak < 32 * 1024, f"peak {peak / 1024:.0f} MiB above {baseline / 1024:.0f} MiB"
    assert grown < 16 * 1024, f"RSS {grown / 1024:+.0f} MiB after"
