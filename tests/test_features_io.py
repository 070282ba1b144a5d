import contextlib
import io
import random
import struct
import zipfile

import numpy as np
import pytest

from model.features_io import (
    MAX_CSV_COLUMNS,
    MAX_NPZ_MEMBERS,
    MAX_ZIP_DIRECTORY_BYTES,
    load_features_file,
    read_features,
)
from model.inference import MAX_SLICES_PER_CASE, InputError


def npy_bytes(array) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=True)
    return buf.getvalue()


def test_npy_npz_and_csv_read_the_same_array(tmp_path):
    x = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
    np.save(tmp_path / "a.npy", x)
    np.savez(tmp_path / "a.npz", features=x)
    (tmp_path / "a.csv").write_text(
        "f0,f1,f2,f3\n" + "\n".join(",".join(map(repr, map(float, r))) for r in x)
    )
    for name in ("a.npy", "a.npz", "a.csv"):
        np.testing.assert_allclose(load_features_file(tmp_path / name), x, rtol=1e-6)


def test_object_arrays_are_never_unpickled(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    data = npy_bytes(np.array([Evil()], dtype=object))
    with pytest.raises(InputError, match="Python objects"):
        read_features(data, "x.npy")
    assert not marker.exists()


def npy_with_shape(shape_text: str, data: bytes = bytes(8 * 38)) -> bytes:
    """A version 1.0 .npy whose header spells its shape as given (numpy would not write it)."""
    header = f"{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_text}, }}".encode()
    header += b" " * (63 - (10 + len(header)) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + data


@pytest.mark.parametrize(
    ("shape_text", "message"),
    [
        ("(True, 38)", r"non-negative whole numbers, got \(True, 38\)"),
        ("(2, False)", r"non-negative whole numbers, got \(2, False\)"),
        ("(1.5, 38)", "shape is not valid"),
        ("((2,), 38)", "shape is not valid"),
        ("(2, -38)", r"non-negative whole numbers, got \(2, -38\)"),
        ("(" + "1, " * 9 + ")", "up to 8 non-negative whole numbers"),
        (f"({10**30}, 38)", f"declares {10**30 * 38 * 4} bytes"),
        ("(" + "9" * 5000 + ", 38)", "not a valid .npy file"),
        # new since the attack
        ("(" + "-" * 9000 + "5, 38)", "its header nests too deeply to read"),  # was MemoryError
        ("(" + "+" * 9000 + "5, 38)", "its header nests too deeply to read"),
        ("(" + "(" * 3000 + "5" + ")" * 3000 + ", 38)", "not a valid .npy file"),
        ("('5', 38)", "shape is not valid"),
        ("(None, 38)", "shape is not valid"),
        ("[5, 38]", "shape is not valid"),
        ("(10**9, 38)", "not a valid .npy file"),
        ("(__import__('os').getpid(), 38)", "not a valid .npy file"),
        ("5", "shape is not valid"),
    ],
)
def test_npy_shapes_that_are_not_plain_non_negative_ints_are_refused(shape_text, message):
    with pytest.raises(InputError, match=message):
        read_features(npy_with_shape(shape_text), "x.npy")


def test_an_npy_shape_of_minus_zero_is_the_empty_array_it_says():
    assert read_features(npy_with_shape("(-0, 38)", b""), "x.npy").shape == (0, 38)


def test_npz_member_count_and_declared_size_checked_before_reading():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for i in range(MAX_NPZ_MEMBERS + 1):
            z.writestr(f"m{i}.npy", b"")
    with pytest.raises(InputError, match="members"):
        read_features(buf.getvalue(), "x.npz")

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f4", "fortran_order": False, "shape": (10**6, 10**4)}
    )
    with pytest.raises(InputError, match="declares 40000000000 bytes"):
        read_features(header.getvalue(), "x.npy")


@pytest.mark.parametrize(
    ("data", "name", "message"),
    [
        (b"1,2\n3,abc\n", "x.csv", "row 2, column 2: 'abc' is not a number"),
        (b"1,2\n3\n", "x.csv", "row 2 has 1 values"),
        (b"", "x.csv", "no rows"),
        (b"PK\x03\x04garbage", "x.npz", "not a valid .npz"),
        (b"\x93NUMPY\x01\x00", "x.npy", "not a valid .npy"),
        (b"abc", "x.txt", "unsupported file type '.txt'"),
    ],
)
def test_malformed_files_name_the_problem(data, name, message):
    with pytest.raises(InputError, match=message):
        read_features(data, name)


def test_truncated_npy_is_refused():
    data = npy_bytes(np.ones((50, 10), np.float32))
    with pytest.raises(InputError, match="could not read"):
        read_features(data[:-100], "x.npy")


def npy_header(shape, descr="<f4") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": descr, "fortran_order": False, "shape": shape}
    )
    return buf.getvalue()


def npz_bytes(data: bytes, compression=zipfile.ZIP_STORED, declared_size=None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as z:
        z.writestr("features.npy", data)
        if declared_size is not None:  # what the directory, written at close, will say
            z.getinfo("features.npy").file_size = declared_size
    return buf.getvalue()


def with_end_record(data: bytes, members: int | None = None, directory_bytes=None) -> bytes:
    """`data` with its zip end record's member count or directory size replaced."""
    at = data.rindex(b"PK\x05\x06")
    record = list(struct.unpack_from("<4s4H2LH", data, at))
    if members is not None:
        record[3] = record[4] = members
    if directory_bytes is not None:
        record[5] = directory_bytes
    return data[:at] + struct.pack("<4s4H2LH", *record) + data[at + 22 :]


def test_too_many_slices_are_refused_from_the_header_alone():
    # header only: had the data been read, this would be "truncated"
    with pytest.raises(InputError, match=f"10000 slices; at most {MAX_SLICES_PER_CASE}"):
        read_features(npy_header((10_000, 16)), "x.npy")
    with pytest.raises(InputError, match="600 slices; at most 100"):
        read_features(npy_header((600, 16)), "x.npy", max_slices=100)
    at_cap = np.zeros((MAX_SLICES_PER_CASE, 3), np.float32)
    assert read_features(npy_bytes(at_cap), "x.npy").shape == at_cap.shape


def test_declared_sizes_are_exact_and_bounded_by_the_callers_limit():
    # int64 arithmetic would wrap this shape's size to 2**34 bytes... or less
    with pytest.raises(InputError, match=f"declares {(2**32 + 1) * 2**32 * 4} bytes"):
        read_features(npy_header((2**32 + 1, 2**32)), "x.npy")
    with pytest.raises(InputError, match=r"non-negative whole numbers, got \(-1, 4\)"):
        read_features(npy_header((-1, 4)), "x.npy")
    two_mib = npy_bytes(np.zeros((16, 1 << 15), np.float32))
    bomb = npz_bytes(two_mib, zipfile.ZIP_DEFLATED)
    assert len(bomb) < 16 << 10
    assert read_features(bomb, "x.npz").shape == (16, 1 << 15)  # under the default limit
    with pytest.raises(InputError, match=f"declares {len(two_mib)} bytes; the limit is {1 << 20}"):
        read_features(bomb, "x.npz", max_array_bytes=1 << 20)


def test_an_npz_member_that_inflates_past_its_declared_size_fails_its_crc():
    lying = npz_bytes(
        npy_bytes(np.zeros((1 << 15, 16), np.float32)), zipfile.ZIP_DEFLATED, declared_size=512
    )
    with pytest.raises(InputError, match="Bad CRC-32"):
        read_features(lying, "x.npz")


def test_npz_member_count_and_directory_size_come_from_the_end_record():
    one = npz_bytes(npy_bytes(np.zeros((2, 3), np.float32)))
    # zipfile would list one member; the end record is read first, and believed
    with pytest.raises(InputError, match=f"10000 members; at most {MAX_NPZ_MEMBERS}"):
        read_features(with_end_record(one, members=10_000), "x.npz")
    with pytest.raises(InputError, match="zip directory of 1048576 bytes"):
        read_features(with_end_record(one, directory_bytes=1 << 20), "x.npz")
    assert MAX_ZIP_DIRECTORY_BYTES < 1 << 20


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((2, 3), np.complex64), "dtype complex64; only real numbers"),
        (np.zeros((2, 3), "<U4"), "dtype <U4; only real numbers"),
        (np.zeros(2, [("a", "<f4")]), "only real numbers"),
    ],
)
def test_arrays_of_anything_but_real_numbers_are_refused_from_the_header(array, message):
    with pytest.raises(InputError, match=message):
        read_features(npy_bytes(array), "x.npy")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"f0,f1\n1,2\n3,abc\n", "row 3, column 2: 'abc' is not a number"),  # rows as lines
        (b"1,2\n" + b"x" * 1000 + b",2\n", "column 1: 'x{40}\\.\\.\\.' is not"),  # shortened
        (b"1," * MAX_CSV_COLUMNS + b"1\n", f"line 1 has more than {MAX_CSV_COLUMNS} values"),
        (b'"' + b"1" * 200_000 + b'"\n', "could not read the .csv file at row 1"),
        (b"1,2\n" * (MAX_SLICES_PER_CASE + 1), f"more than {MAX_SLICES_PER_CASE} rows"),
    ],
)
def test_hostile_csv_is_refused_naming_where(data, message):
    with pytest.raises(InputError, match=message):
        read_features(data, "x.csv")


def test_csv_values_beyond_float32_become_inf_without_a_warning():
    array = read_features(b"1e300,1\n", "x.csv")  # validation then refuses the inf
    assert np.isinf(array[0, 0]) and array[0, 1] == 1


def _mutants(data: bytes, rng: random.Random, count: int):
    yield from (data[:n] for n in range(len(data)))
    for _ in range(count):
        mutant = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            mutant[rng.randrange(len(mutant))] = rng.choice(
                [0, 0x7F, 0x80, 0xFF, rng.randrange(256)]
            )
        yield bytes(mutant)


@pytest.mark.parametrize("form", ["npy", "npz", "npz_compressed", "csv"])
def test_truncated_or_corrupted_files_only_ever_raise_input_error(form):
    x = np.arange(24, dtype=np.float32).reshape(4, 6)
    buf = io.BytesIO()
    if form == "npy":
        np.save(buf, x)
    elif form == "csv":
        buf.write(b"a,b,c,d,e,f\n" + b"\n".join(b",".join(b"%g" % v for v in r) for r in x))
    else:
        (np.savez_compressed if form == "npz_compressed" else np.savez)(buf, features=x)
    name = "x.csv" if form == "csv" else f"x.{form[:3]}"
    for mutant in _mutants(buf.getvalue(), random.Random(form), 2000):
        with contextlib.suppress(InputError):  # anything else would be a 500 in the service
            read_features(mutant, name)
