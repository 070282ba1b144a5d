"""A segmentation file, read by its type: contours JSON, NIfTI, DICOM SEG or a mask array.

Each reader hands its voxels or contours to :mod:`model.segmentation` (and DICOM SEG to
:mod:`model.dicom_seg`), so the code that measures a segmentation never imports a file format.
What a file could inflate to is judged from its header before its voxels are decoded.
"""

from __future__ import annotations

import io
import json
import math
import zlib
from pathlib import Path

import numpy as np

from model.features_io import MAX_ARRAY_BYTES, read_array
from model.segmentation import (
    MAX_MASK_VOXELS,
    Segmentation,
    check_spacing,
    check_voxels,
    from_contours,
    from_mask,
)
from model.validation import MAX_SLICES_PER_CASE, InputError

MASK_SUFFIXES = (".nii", ".nii.gz")
NIFTI_HEADER_BYTES = {348: 352, 540: 544}  # sizeof_hdr -> bytes before the data (NIfTI-1, -2)


def read_segmentation(
    data: bytes,
    filename: str,
    spacing_mm: tuple[float, float, float] | None = None,
    *,
    max_voxels: int = MAX_MASK_VOXELS,
    max_slices: int = MAX_SLICES_PER_CASE,
    max_bytes: int,
) -> Segmentation | None:
    """The segmentation in an uploaded file, or None when the file holds features instead.

    .json: contours; .nii/.nii.gz: NIfTI; .dcm (or a DICOM preamble): DICOM SEG; .npy/.npz:
    a 3-D mask (an .npz member 'mask'; spacing from `spacing_mm` or a member 'spacing_mm'),
    while a 2-D .npy or an .npz with 'features' is a feature file (None).
    """
    name = filename.lower()
    if name.endswith(".json"):
        return from_contours(_json(data), max_slices)
    if name.endswith(MASK_SUFFIXES):
        mask, spacing, z0 = read_nifti(data, max_voxels)
        return from_mask(mask, spacing, z0, "nifti", max_voxels, max_slices)
    if name.endswith(".dcm") or data[128:132] == b"DICM":
        from model.dicom_seg import read_seg  # pydicom/highdicom only when needed

        return read_seg(data, max_voxels=max_voxels, max_slices=max_slices)
    if name.endswith((".npy", ".npz")):
        array = read_array(data, filename, members=("features", "mask"), max_array_bytes=max_bytes)
        if array.name == "features" or array.values.ndim != 3:
            return None
        given: tuple[float, ...] | None = spacing_mm or array.spacing
        if given is None:
            raise InputError(
                "a mask volume needs its voxel spacing: send spacing_mm (slice, row, column "
                "in mm) as a form field, or an .npz member 'spacing_mm'"
            )
        return from_mask(array.values, given, 0.0, "mask", max_voxels, max_slices)
    return None


def _json(data: bytes) -> object:
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise InputError(f"the contours file is not valid JSON: {str(e)[:200]}") from None


def read_nifti(
    data: bytes, max_voxels: int
) -> tuple[np.ndarray, tuple[float, float, float], float]:
    """(mask [slices, rows, cols], spacing (z, row, col), z of slice 0) of a NIfTI-1/2 file.

    The header is read first (from the first bytes of a gzip stream) and the shape checked
    against `max_voxels` before the voxels are inflated; a gzip stream that inflates past
    what its header declares is refused.
    """
    import nibabel

    gz = data[:2] == b"\x1f\x8b"
    head = _inflate(data, 544) if gz else data[:544]
    sizeof = int.from_bytes(head[:4], "little")
    if sizeof not in NIFTI_HEADER_BYTES:
        sizeof = int.from_bytes(head[:4], "big")
    if sizeof not in NIFTI_HEADER_BYTES:
        raise InputError("not a NIfTI file (the header size is neither 348 nor 540)")
    header_class = nibabel.Nifti1Header if sizeof == 348 else nibabel.Nifti2Header
    try:
        header = header_class.from_fileobj(io.BytesIO(head), check=False)  # no silent fixes
        shape = tuple(int(n) for n in header.get_data_shape())
        itemsize = header.get_data_dtype().itemsize
    except Exception as e:  # nibabel raises HeaderDataError, ValueError, struct errors ...
        raise InputError(f"not a valid NIfTI header: {str(e)[:200]}") from None
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) != 3:
        raise InputError(f"a NIfTI mask must be a 3-D volume, got shape {shape}")
    check_voxels(shape, max_voxels)
    # as written (nibabel would quietly turn a zero into 1), before any voxel is decoded
    check_spacing(tuple(round(abs(float(v)), 6) for v in header["pixdim"][1:4][::-1]))
    offset = max(int(header.get_data_offset()), NIFTI_HEADER_BYTES[sizeof])
    needed = offset + math.prod(shape) * itemsize
    raw = _inflate(data, needed, strict=True) if gz else data
    if len(raw) < needed:
        raise InputError(
            f"the NIfTI file is truncated: its header declares {needed} bytes, {len(raw)} given"
        )
    try:
        image = nibabel.Nifti1Image if sizeof == 348 else nibabel.Nifti2Image
        img = nibabel.as_closest_canonical(image.from_bytes(raw[:needed]))
        values = np.asanyarray(img.dataobj)
        # the header holds float32: 0.7 reads back as 0.699999988; 6 decimals give 0.7 again
        zooms = tuple(round(float(v), 6) for v in img.header.get_zooms()[:3])
    except InputError:
        raise
    except Exception as e:
        raise InputError(f"could not read the NIfTI volume: {str(e)[:200]}") from None
    values = values.reshape(values.shape[:3])
    mask = values.transpose(2, 1, 0)  # (x, y, z) -> (z, row = y, col = x); from_mask copies a box
    spacing = check_spacing((zooms[2], zooms[1], zooms[0]))
    return mask, spacing, float(img.affine[2, 3])


def _inflate(data: bytes, limit: int, strict: bool = False) -> bytes:
    """At most `limit` bytes of a gzip stream; with `strict`, one that holds more is refused."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, limit)
        if strict and (inflater.unconsumed_tail or inflater.decompress(b"", 1)):
            raise InputError(
                f"the gzip stream inflates past the {limit} bytes its NIfTI header declares"
            )
    except zlib.error as e:
        raise InputError(f"not a valid gzip stream: {e}") from None
    return out


def load_segmentation_file(
    path: Path, spacing_mm: tuple[float, float, float] | None = None
) -> Segmentation | None:
    """A segmentation file from disk (see read_segmentation); None for a feature file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"no such file: {path}")
    data = path.read_bytes()
    return read_segmentation(data, path.name, spacing_mm, max_bytes=MAX_ARRAY_BYTES)
