"""Reading a case's per-slice features from a file, without ever unpickling anything.

Accepted: ``.npy`` (a 2-D numeric array), ``.npz`` with a ``features`` member, ``.csv`` with one
row per slice (an optional header row of names). What a hostile file could inflate is judged
from what it declares before anything is decompressed or allocated: the zip directory's member
count and sizes, the .npy header's dtype, shape and byte count, each .csv line's width.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import struct
import tokenize
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.validation import MAX_SLICES_PER_CASE, InputError, check_slice_count

MAX_NPZ_MEMBERS = 4  # a features .npz needs one member; a few are tolerated
MAX_ZIP_DIRECTORY_BYTES = 64 << 10  # a few members' directory entries take well under 1 KiB
MAX_ARRAY_BYTES = 64 << 20  # default limit on the declared uncompressed size of the array
NPY_HEADER_BYTES = 4096  # allowance for the .npy header on top of the array (numpy writes 128)
MAX_CSV_COLUMNS = 8192  # features per slice; the widest cohort (simulated) has 1,024
MAX_NPY_DIMENSIONS = 8  # features are 2-D, mask volumes 3-D
MAX_ARRAY_ROWS = 1 << 62  # read_array leaves the slice count to the caller
NUMERIC_KINDS = "biuf"  # bool, signed, unsigned, float: what validate_features accepts

# The zip end-of-central-directory record: signature, disk numbers, member counts, directory
# size and offset, comment length. zipfile reads it too, but only after listing every member.
_ZIP_END = struct.Struct("<4s4H2LH")
_ZIP_END_SIGNATURE = b"PK\x05\x06"
# What zipfile raises on a malformed archive or member (found by mutating valid .npz files).
_ZIP_ERRORS = (
    zipfile.BadZipFile,
    NotImplementedError,  # "zip file version", flag bits it cannot handle
    ValueError,  # UnicodeDecodeError of a member name, among others
    EOFError,
    OSError,
    struct.error,
    zlib.error,
)


def read_features(
    data: bytes,
    filename: str,
    *,
    max_slices: int = MAX_SLICES_PER_CASE,
    max_array_bytes: int = MAX_ARRAY_BYTES,
    columns: Sequence[str] | None = None,
) -> np.ndarray:
    """The features in a file's bytes, or InputError naming what is wrong with them.

    `max_array_bytes` bounds what the array may declare (a service passes its upload limit, so
    compression buys no room); `max_slices` refuses longer cases from the header alone.
    `columns` are the model's feature names: a .csv header row must name them, in order (a
    .csv without a header is taken as in that order).
    """
    suffix = Path(filename).suffix.lower()
    if suffix == ".npy":
        return _read_npy(data, max_slices, max_array_bytes)
    if suffix == ".npz":
        return _read_npz(data, max_slices, max_array_bytes)
    if suffix == ".csv":
        return _read_csv(data, max_slices, columns)
    raise InputError(f"unsupported file type {suffix or '(none)'!r}; use .npy, .npz or .csv")


@dataclass(frozen=True)
class NamedArray:
    name: str  # the .npz member it came from ("array" for a .npy)
    values: np.ndarray
    spacing: tuple[float, ...] | None = None  # an .npz member 'spacing_mm', when present


def read_array(
    data: bytes,
    filename: str,
    *,
    members: tuple[str, ...] = ("features",),
    max_array_bytes: int = MAX_ARRAY_BYTES,
) -> NamedArray:
    """An array of any shape from an .npy, or the first of `members` found in an .npz (with
    its 'spacing_mm' member, if any); bounded as :func:`read_features` is. The array is a
    read-only view of the bytes it was read from: a mask volume is not copied to be checked."""
    if Path(filename).suffix.lower() == ".npy":
        return NamedArray("array", _read_npy(data, MAX_ARRAY_ROWS, max_array_bytes, view=True))
    archive = _open_zip(data)
    with archive:
        infos = archive.infolist()
        member = _member(infos, members, max_array_bytes)
        inflated = _member_bytes(archive, member)
        values = _read_npy(inflated, MAX_ARRAY_ROWS, max_array_bytes, view=True)
        spacing = None
        extra = next((m for m in infos if m.filename in ("spacing_mm", "spacing_mm.npy")), None)
        if extra is not None:
            raw = _read_npy(_member_bytes(archive, _checked(extra, 4096)), MAX_ARRAY_ROWS, 4096)
            if raw.dtype.kind not in "iuf":
                raise InputError(f"the .npz member 'spacing_mm' has dtype {raw.dtype}")
            spacing = tuple(float(v) for v in raw.ravel())
    name = member.filename.removesuffix(".npy")
    return NamedArray(name, values, spacing)


class TooManyCases(InputError):
    """An .npz of cases with more members than one batch takes."""


def read_npz_cases(
    data: bytes,
    *,
    max_cases: int,
    max_slices: int = MAX_SLICES_PER_CASE,
    max_total_bytes: int = MAX_ARRAY_BYTES,
) -> list[tuple[str, np.ndarray | InputError]]:
    """Each member of an .npz as one case, named by its member, in archive order: its
    features, or the InputError that refuses that member alone.

    The archive as a whole (not a zip, more than `max_cases` members, more than
    `max_total_bytes` declared by all members together) raises instead.
    """
    _check_zip_end_record(data, max_cases)
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except _ZIP_ERRORS as e:
        raise InputError(f"not a valid .npz file: {_said(e)}") from None
    with archive:
        members = archive.infolist()
        if len(members) > max_cases:
            raise TooManyCases(f".npz has {len(members)} members; at most {max_cases} cases")
        if not members:
            raise InputError(".npz has no members; one array per case is needed")
        declared = sum(m.file_size for m in members)
        if declared > max_total_bytes + len(members) * NPY_HEADER_BYTES:
            raise InputError(f"the .npz declares {declared} bytes; the limit is {max_total_bytes}")
        cases: list[tuple[str, np.ndarray | InputError]] = []
        for member in members:
            name = member.filename.removesuffix(".npy")
            try:
                raw = _member_bytes(archive, _checked(member, max_total_bytes))
                cases.append((name, _read_npy(raw, max_slices, max_total_bytes)))
            except InputError as e:
                cases.append((name, e))
    return cases


def load_features_file(path: Path, columns: Sequence[str] | None = None) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"no such features file: {path}")
    return read_features(path.read_bytes(), path.name, columns=columns)


def _read_npy(data: bytes, max_slices: int, max_bytes: int, *, view: bool = False) -> np.ndarray:
    """The array of an .npy file's bytes, checked from its header first; with `view`, read-only
    and in place in `data` (np.frombuffer), not a copy."""
    fh = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(fh)
        else:
            shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(fh)
    except (ValueError, TypeError, SyntaxError, tokenize.TokenError) as e:  # numpy's header parser
        raise InputError(f"not a valid .npy file: {_said(e)}") from None
    except (MemoryError, RecursionError):
        # numpy reads the header (at most 10,000 bytes) with ast.literal_eval: a deep chain such
        # as 9,000 unary minus signs overflows Python's parser, which says MemoryError
        raise InputError("not a valid .npy file: its header nests too deeply to read") from None
    if dtype.hasobject:
        raise InputError("the .npy array holds Python objects; only numeric arrays are read")
    if dtype.kind not in NUMERIC_KINDS:
        raise InputError(f"the .npy array has dtype {dtype}; only real numbers are read")
    # numpy checks that each entry is an int, and bool is one: (True, 38) would reach np.load
    if len(shape) > MAX_NPY_DIMENSIONS or any(type(n) is not int or n < 0 for n in shape):
        raise InputError(
            f"not a valid .npy file: its shape must be up to {MAX_NPY_DIMENSIONS} non-negative "
            f"whole numbers, got {_said(ValueError(repr(shape)), 80)}"
        )
    declared = math.prod(shape) * dtype.itemsize  # Python ints: a hostile shape cannot wrap
    if declared > max_bytes:
        raise InputError(f"the array declares {declared} bytes; the limit is {max_bytes}")
    if len(shape) == 2:
        check_slice_count(shape[0], max_slices)
    present = len(data) - fh.tell()
    if present < declared:
        raise InputError(
            f"could not read the .npy array: the file is truncated (its header declares "
            f"{declared} bytes of data, {present} follow)"
        )
    if view:  # the header is checked: its shape and dtype describe the bytes that follow
        flat = np.frombuffer(data, dtype, math.prod(shape), fh.tell())
        return flat.reshape(shape[::-1]).T if fortran_order else flat.reshape(shape)
    fh.seek(0)
    try:
        return np.load(fh, allow_pickle=False)
    except (ValueError, EOFError, OSError) as e:
        raise InputError(f"could not read the .npy array: {_said(e)}") from None


def _read_npz(data: bytes, max_slices: int, max_bytes: int) -> np.ndarray:
    archive = _open_zip(data)
    with archive:
        member = _member(archive.infolist(), ("features",), max_bytes)
        raw = _member_bytes(archive, member)
    return _read_npy(raw, max_slices, max_bytes)


def _member_bytes(archive: zipfile.ZipFile, member: zipfile.ZipInfo) -> bytes:
    try:
        with archive.open(member) as fh:
            # zipfile stops at the declared size and checks the CRC: a member that inflates
            # past what it declares fails here instead of growing.
            return fh.read(member.file_size + 1)
    except _ZIP_ERRORS as e:
        raise InputError(
            f"could not read the .npz member {member.filename!r}: {_said(e)}"
        ) from None


def _member(
    members: list[zipfile.ZipInfo], names: tuple[str, ...], max_bytes: int
) -> zipfile.ZipInfo:
    """The first member named one of `names` (with or without .npy), if its directory entry
    promises something readable and small."""
    if len(members) > MAX_NPZ_MEMBERS:  # a zip64 end record may say otherwise than the plain one
        raise InputError(_too_many_members(len(members)))
    by_name = {m.filename.removesuffix(".npy"): m for m in members}
    member = next((by_name[n] for n in names if n in by_name), None)
    if member is None:
        listed = ", ".join(repr(m.filename[:40]) for m in members) or "none"
        wanted = " or ".join(repr(n) for n in names)
        raise InputError(f".npz has no {wanted} array (members: {listed})")
    return _checked(member, max_bytes)


def _checked(member: zipfile.ZipInfo, max_bytes: int) -> zipfile.ZipInfo:
    if member.flag_bits & 0x1:
        raise InputError(f".npz member {member.filename!r} is encrypted")
    if member.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise InputError(
            f".npz member {member.filename!r} uses zip compression method "
            f"{member.compress_type}; only stored or deflated (np.savez, np.savez_compressed)"
        )
    if member.file_size > max_bytes + NPY_HEADER_BYTES:
        raise InputError(
            f".npz member {member.filename!r} declares {member.file_size} bytes; the limit "
            f"is {max_bytes}"
        )
    return member


def _open_zip(data: bytes) -> zipfile.ZipFile:
    """The .npz archive, once its end record's member count and directory size are sane."""
    _check_zip_end_record(data)
    try:
        return zipfile.ZipFile(io.BytesIO(data))
    except _ZIP_ERRORS as e:
        raise InputError(f"not a valid .npz file: {_said(e)}") from None


def _check_zip_end_record(data: bytes, max_members: int = MAX_NPZ_MEMBERS) -> None:
    """Member count and directory size as the archive declares them, before any is listed."""
    start = max(0, len(data) - _ZIP_END.size - 0xFFFF)  # the record ends in a comment of <64 KiB
    at = data.rfind(_ZIP_END_SIGNATURE, start)
    if at < 0 or len(data) - at < _ZIP_END.size:
        raise InputError("not a valid .npz file (not a zip archive, or truncated)")
    members, directory_bytes = _ZIP_END.unpack_from(data, at)[4:6]
    if members > max_members:
        if max_members != MAX_NPZ_MEMBERS:
            raise TooManyCases(f".npz has {members} members; at most {max_members} cases")
        raise InputError(_too_many_members(members))
    directory_limit = MAX_ZIP_DIRECTORY_BYTES * max(1, max_members // MAX_NPZ_MEMBERS)
    if directory_bytes > directory_limit:
        raise InputError(
            f".npz declares a zip directory of {directory_bytes} bytes; one of at most "
            f"{max_members} members needs under {directory_limit}"
        )


def _too_many_members(count: int) -> str:
    return (
        f".npz has {count} members; at most {MAX_NPZ_MEMBERS} are accepted "
        "(one named 'features' is needed)"
    )


def _read_csv(data: bytes, max_slices: int, columns: Sequence[str] | None) -> np.ndarray:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError("the .csv file is not UTF-8 text") from None
    reader = csv.reader(_csv_lines(text))
    rows: list[np.ndarray] = []
    width = 0
    first = True
    try:
        for cells in reader:
            if not any(cell.strip() for cell in cells):
                continue
            if first and not _is_number(cells[0]):
                first = False
                if columns is not None:
                    check_header(cells, columns)
                continue  # a header row of names
            first = False
            if not rows:
                width = len(cells)
            elif len(cells) != width:
                raise InputError(
                    f"csv row {reader.line_num} has {len(cells)} values, the first has {width}"
                )
            if len(rows) == max_slices:
                raise InputError(
                    f"the .csv file has more than {max_slices} rows of features; at most "
                    f"{max_slices} slices are accepted per case"
                )
            rows.append(_csv_row(cells, reader.line_num))
    except csv.Error as e:
        raise InputError(
            f"could not read the .csv file at row {reader.line_num}: {_said(e)}"
        ) from None
    if not rows:
        raise InputError("the .csv file has no rows of features")
    return np.stack(rows)


def csv_header(data: bytes) -> list[str] | None:
    """The header row of a .csv file that `read_features` accepted (its first row that is not
    blank, when that does not start with a number); None when it has none."""
    with contextlib.suppress(UnicodeDecodeError, csv.Error):
        for cells in csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")):
            if any(cell.strip() for cell in cells):
                return None if _is_number(cells[0]) else cells
    return None


def check_header(header: Sequence[str], columns: Sequence[str]) -> None:
    """InputError naming the header's columns that are not the model's feature names, in order:
    values under the wrong names would be explained as the wrong features."""
    header = [name.strip() for name in header]
    wrong = [
        f"column {j + 1} is {got[:40]!r}, the model's feature {j + 1} is {want!r}"
        for j, (got, want) in enumerate(zip(header, columns, strict=False))
        if got != want
    ]
    if len(header) != len(columns):
        wrong.insert(0, f"the header has {len(header)} columns, the model {len(columns)} features")
    if wrong:
        more = f" (and {len(wrong) - 3} more)" if len(wrong) > 3 else ""
        raise InputError(
            "the .csv header does not name the model's features: "
            + "; ".join(wrong[:3])
            + more
            + ". Leave the header out to give the values in the model's order."
        )


def _csv_lines(text: str) -> Iterator[str]:
    """The lines of `text`; one wider than any feature set is refused before csv splits it."""
    for number, line in enumerate(io.StringIO(text, newline=""), 1):
        if line.count(",") >= MAX_CSV_COLUMNS:
            raise InputError(
                f"csv line {number} has more than {MAX_CSV_COLUMNS} values; a slice has "
                "one value per feature"
            )
        yield line


def _csv_row(cells: list[str], row: int) -> np.ndarray:
    out = np.empty(len(cells), np.float32)
    for j, cell in enumerate(cells):
        try:
            with np.errstate(over="ignore"):  # too large -> inf, which validation refuses
                out[j] = float(cell)
        except ValueError:
            shown = cell.strip()
            shown = shown if len(shown) <= 40 else shown[:40] + "..."
            raise InputError(f"csv row {row}, column {j + 1}: {shown!r} is not a number") from None
    return out


def _said(error: Exception, limit: int = 200) -> str:
    """A library's error message, shortened: some quote the hostile input back at length."""
    text = str(error)
    return text if len(text) <= limit else text[:limit] + "..."


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True
