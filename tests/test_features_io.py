import io
import zipfile

import numpy as np
import pytest

from model.features_io import MAX_NPZ_MEMBERS, load_features_file, read_features
from model.inference import InputError


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
