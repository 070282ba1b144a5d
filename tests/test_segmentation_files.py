"""model.segmentation_files: a file read by its type (contours JSON, NIfTI, DICOM SEG, a mask
array), or None where the file holds features instead."""

from __future__ import annotations

import gzip
import io
import json
import tracemalloc

import nibabel
import numpy as np
import pytest
from dicom_support import SPACING, ellipsoid, seg_dataset, to_bytes

from model.segmentation_files import load_segmentation_file, read_nifti, read_segmentation
from model.validation import InputError

CONTOURS = {
    "slice_thickness_mm": 1.0,
    "slices": [{"z_mm": 0, "contours": [[[0, 0], [4, 0], [0, 4]]]}],
}


def nifti_bytes(mask: np.ndarray) -> bytes:
    """`mask` [slices, rows, cols] as a gzipped NIfTI whose x axis runs right to left."""
    flipped = mask[:, :, ::-1].transpose(2, 1, 0).astype(np.uint8)
    affine = np.diag([-SPACING[2], SPACING[1], SPACING[0], 1.0])  # a mirror image
    affine[0, 3] = 44.1
    return gzip.compress(nibabel.Nifti1Image(flipped, affine).to_bytes())


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def test_nifti_is_read_in_its_canonical_orientation():
    mask = ellipsoid()
    read, spacing, _ = read_nifti(nifti_bytes(mask), max_voxels=10**6)
    assert spacing == SPACING
    np.testing.assert_array_equal(read.astype(bool), mask)


def test_each_file_type_goes_to_its_reader():
    mask = ellipsoid()
    buffer = io.BytesIO()
    np.savez(buffer, mask=mask.astype(np.uint8), spacing_mm=np.array(SPACING))
    read = {
        "contours.json": json.dumps(CONTOURS).encode(),
        "mask.nii.gz": nifti_bytes(mask),
        "mask.npz": buffer.getvalue(),
        "mask.npy": npy_bytes(mask.astype(np.uint8)),
        "seg.dcm": to_bytes(seg_dataset(mask)),
    }
    kinds = {
        name: read_segmentation(data, name, SPACING, max_bytes=1 << 26).kind
        for name, data in read.items()
    }
    assert kinds == {
        "contours.json": "contours",
        "mask.nii.gz": "nifti",
        "mask.npz": "mask",
        "mask.npy": "mask",
        "seg.dcm": "dicom-seg",
    }
    # a 2-D array is a feature file, not a segmentation
    features = npy_bytes(np.zeros((3, 8), np.float32))
    assert read_segmentation(features, "case.npy", max_bytes=1 << 26) is None


def test_a_mask_without_its_spacing_and_a_missing_file_are_named(tmp_path):
    with pytest.raises(InputError, match="needs its voxel spacing"):
        read_segmentation(npy_bytes(ellipsoid().astype(np.uint8)), "m.npy", max_bytes=1 << 26)
    with pytest.raises(InputError, match="no such file"):
        load_segmentation_file(tmp_path / "absent.json")
    with pytest.raises(InputError, match="not valid JSON"):
        read_segmentation(b"{", "contours.json", max_bytes=1 << 26)


def test_a_mask_file_is_read_in_place_in_any_order():
    """An .npy mask is checked where its bytes lie (a read-only view, no copy of an 8 MiB
    volume); a Fortran-ordered one reads as the same mask."""
    empty = npy_bytes(np.zeros((31, 512, 512), np.uint8))
    tracemalloc.start()
    try:
        with pytest.raises(InputError, match="the mask is empty"):
            read_segmentation(empty, "m.npy", SPACING, max_bytes=8 << 20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 256 << 10, f"{peak / 2**20:.1f} MiB to refuse an empty 7.8 MiB mask"

    mask = ellipsoid().astype(np.uint8)
    as_c, as_f = (
        read_segmentation(npy_bytes(m), "m.npy", SPACING, max_bytes=1 << 26)
        for m in (mask, np.asfortranarray(mask))
    )
    np.testing.assert_array_equal(as_f.features, as_c.features)
