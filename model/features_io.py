"""Reading a case's per-slice features from a file, without ever unpickling anything.

Accepted: ``.npy`` (a 2-D numeric array), ``.npz`` with a ``features`` member, ``.csv`` with one
row per slice (an optional header row of names). Sizes are checked before arrays are read.
"""

from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path

import numpy as np

from model.inference import InputError

MAX_NPZ_MEMBERS = 4  # a features .npz needs one member; a few are tolerated
MAX_ARRAY_BYTES = 64 << 20  # declared uncompressed size of the features array


def read_features(data: bytes, filename: str) -> np.ndarray:
    suffix = Path(filename).suffix.lower()
    if suffix == ".npy":
        return _read_npy(io.BytesIO(data))
    if suffix == ".npz":
        return _read_npz(data)
    if suffix == ".csv":
        return _read_csv(data)
    raise InputError(f"unsupported file type {suffix or '(none)'!r}; use .npy, .npz or .csv")


def load_features_file(path: Path) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"no such features file: {path}")
    return read_features(path.read_bytes(), path.name)


def _read_npy(fh) -> np.ndarray:
    try:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
    except ValueError as e:
        raise InputError(f"not a valid .npy file: {e}") from None
    if dtype.hasobject:
        raise InputError("the .npy array holds Python objects; only numeric arrays are read")
    declared = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if declared > MAX_ARRAY_BYTES:
        raise InputError(f"the array declares {declared} bytes; the limit is {MAX_ARRAY_BYTES}")
    fh.seek(0)
    try:
        return np.load(fh, allow_pickle=False)
    except (ValueError, EOFError, OSError) as e:
        raise InputError(f"could not read the .npy array: {e}") from None


def _read_npz(data: bytes) -> np.ndarray:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise InputError("not a valid .npz file (not a zip archive)") from None
    members = archive.infolist()
    if len(members) > MAX_NPZ_MEMBERS:
        raise InputError(
            f".npz has {len(members)} members; at most {MAX_NPZ_MEMBERS} are "
            "accepted (one named 'features' is needed)"
        )
    member = next((m for m in members if m.filename in ("features", "features.npy")), None)
    if member is None:
        names = ", ".join(m.filename for m in members) or "none"
        raise InputError(f".npz has no 'features' array (members: {names})")
    if member.file_size > MAX_ARRAY_BYTES + 4096:
        raise InputError(
            f".npz member 'features' declares {member.file_size} bytes; the limit "
            f"is {MAX_ARRAY_BYTES}"
        )
    try:
        with archive.open(member) as fh:
            raw = fh.read(MAX_ARRAY_BYTES + 4097)
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise InputError(f"could not read the .npz member 'features': {e}") from None
    return _read_npy(io.BytesIO(raw))


def _read_csv(data: bytes) -> np.ndarray:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError("the .csv file is not UTF-8 text") from None
    rows = [r for r in csv.reader(io.StringIO(text)) if any(cell.strip() for cell in r)]
    if rows and not _is_number(rows[0][0]):
        rows = rows[1:]  # header
    if not rows:
        raise InputError("the .csv file has no rows of features")
    width = len(rows[0])
    out = np.empty((len(rows), width), np.float32)
    for i, row in enumerate(rows):
        if len(row) != width:
            raise InputError(f"csv row {i + 1} has {len(row)} values, the first has {width}")
        for j, cell in enumerate(row):
            if not _is_number(cell):
                raise InputError(
                    f"csv row {i + 1}, column {j + 1}: {cell.strip()!r} is not a number"
                )
            out[i, j] = float(cell)
    return out


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True
