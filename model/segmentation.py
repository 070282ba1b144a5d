"""A nodule segmentation in, the model's per-slice features out: one path for every input.

Accepted: contours JSON (:mod:`model.outline`), a binary mask volume as ``.npy``/``.npz``
([slices, rows, cols] with its spacing given beside it), NIfTI (``.nii``, ``.nii.gz``; spacing
from the header) and DICOM SEG (:mod:`model.dicom_seg`). Contours are rasterised on their
grid exactly as the LIDC importer rasterises a read; masks are measured slice by slice; both
go through :mod:`model.datasets.morphometry`, the code that made the training features, whose
name and version (``FEATURE_EXTRACTOR``) travel with the result.

Every refusal is an :class:`~model.inference.InputError` naming the problem. What a file
could inflate to is judged from its header before its voxels are decoded.
"""

from __future__ import annotations

import io
import json
import math
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import shapely
from scipy import ndimage
from skimage import measure

from model.datasets.morphometry import (
    FEATURE_EXTRACTOR,
    contour_features,
    slice_morphometry,
    stack_slices,
)
from model.datasets.shape3d import shape_3d
from model.features_io import MAX_ARRAY_BYTES, read_array
from model.outline import SPACING_RANGE_MM, NoduleOutline, SliceOutline, parse_outline
from model.validation import MAX_SLICES_PER_CASE, InputError

MAX_MASK_VOXELS = 32 * 512 * 512  # default cap on a mask volume's voxels (8.4 M)
MASK_SUFFIXES = (".nii", ".nii.gz")
NIFTI_HEADER_BYTES = {348: 352, 540: 544}  # sizeof_hdr -> bytes before the data (NIfTI-1, -2)
OUTLINE_TOLERANCE_PX = 0.3  # drawn mask outlines are simplified within this many pixels
_FULL_3D = np.ones((3, 3, 3), bool)  # voxels touching by a face, an edge or a corner connect


@dataclass(frozen=True)
class Segmentation:
    """What a segmentation gives the service: features, an outline to draw, provenance."""

    kind: str  # "contours", "mask", "nifti" or "dicom-seg"
    features: np.ndarray  # float32 [slices, len(FEATURE_NAMES)]
    outline: NoduleOutline
    extractor: str = FEATURE_EXTRACTOR
    reference: dict | None = None  # a DICOM SEG's identity (UIDs, segment), for a DICOM SR


# --- contours ---------------------------------------------------------------------------------
def from_contours(payload: object, max_slices: int = MAX_SLICES_PER_CASE) -> Segmentation:
    """Features of a contours document (decoded JSON; see model.outline)."""
    outline = parse_outline(payload, max_slices)
    return Segmentation("contours", outline_features(outline), outline)


def outline_features(outline: NoduleOutline) -> np.ndarray:
    """The outline rasterised on its pixel grid and measured as the LIDC importer does."""
    spacing = outline.pixel_spacing_mm

    def grid(xy: np.ndarray) -> np.ndarray:
        return np.rint(np.asarray(xy, np.float64) / spacing).astype(np.int32)

    slices = [
        (s.z_mm, [(grid(c), True) for c in s.contours] + [(grid(h), False) for h in s.holes])
        for s in outline.slices
    ]
    features, _ = contour_features(slices, spacing, outline.slice_thickness_mm)
    return features


# --- masks ------------------------------------------------------------------------------------
def from_mask(
    mask: np.ndarray,
    spacing_zyx: tuple[float, float, float],
    z0_mm: float = 0.0,
    kind: str = "mask",
    max_voxels: int = MAX_MASK_VOXELS,
    max_slices: int = MAX_SLICES_PER_CASE,
    reference: dict | None = None,
) -> Segmentation:
    """Features of a binary mask [slices, rows, cols] with voxel spacing (z, row, col) in mm;
    slice i lies at z0_mm + i * spacing_z.

    Refused: not 3-D, more than `max_voxels` voxels, values other than 0 and 1, empty, several
    separate parts (counted with face, edge and corner neighbours), spacing not positive.
    """
    array = np.asarray(mask)
    if array.ndim != 3:
        raise InputError(
            f"a mask must be 3-D [slices, rows, cols], got {array.ndim} dimension(s) "
            f"(shape {array.shape})"
        )
    check_voxels(array.shape, max_voxels)
    dz, dy, dx = check_spacing(spacing_zyx)
    binary = _binary(array)
    labels, parts = ndimage.label(binary, structure=_FULL_3D)
    if parts == 0:
        raise InputError("the mask is empty: no voxel is 1")
    if parts > 1:
        sizes = np.sort(np.bincount(labels.ravel())[1:])[::-1]
        raise InputError(
            f"the mask has {parts} separate parts (sizes {', '.join(map(str, sizes[:5]))}"
            f"{', ...' if parts > 5 else ''} voxels); send one nodule per request"
        )
    zs = np.flatnonzero(binary.any(axis=(1, 2)))
    if len(zs) > max_slices:
        raise InputError(
            f"the mask spans {len(zs)} slices; at most {max_slices} are accepted per case"
        )
    rows = np.flatnonzero(binary.any(axis=(0, 2)))
    cols = np.flatnonzero(binary.any(axis=(0, 1)))
    box = binary[zs[0] : zs[-1] + 1, rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    spacing = min(dy, dx)
    if not math.isclose(dy, dx, rel_tol=0.01):  # square pixels for the 2-D measures
        zoom = (1.0, dy / spacing, dx / spacing)
        box = ndimage.zoom(box, zoom, order=0, grid_mode=True, mode="grid-constant")
        box = box.astype(bool)
    z = z0_mm + (zs[0] + np.arange(box.shape[0])) * dz
    morph = np.vstack([slice_morphometry(s, spacing) for s in box])
    features = stack_slices(z, morph, spacing, dz, shape_3d(box, (dz, spacing, spacing)))
    origin = (cols[0] * dx, rows[0] * dy)
    outline = NoduleOutline(
        tuple(_slice_outline(s, zi, spacing, origin) for s, zi in zip(box, z, strict=True)),
        float(dz),
        float(spacing),
    )
    return Segmentation(kind, features, outline, reference=reference)


def check_voxels(shape: tuple[int, ...], max_voxels: int) -> None:
    voxels = math.prod(int(n) for n in shape)
    if voxels > max_voxels:
        raise InputError(
            f"the volume has {voxels} voxels (shape {tuple(shape)}); at most {max_voxels} are "
            "accepted (crop it to the nodule)"
        )


def check_spacing(spacing: object) -> tuple[float, float, float]:
    """Three voxel spacings (z, row, col) in mm, each within SPACING_RANGE_MM."""
    try:
        values = tuple(float(v) for v in spacing)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise InputError(
            f"spacing_mm must be three numbers (slice, row, column) in mm, got {spacing!r}"
        ) from None
    if len(values) != 3:
        raise InputError(
            f"spacing_mm must be three numbers (slice, row, column) in mm, got {len(values)}"
        )
    low, high = SPACING_RANGE_MM
    for name, v in zip(("slice", "row", "column"), values, strict=True):
        if not (math.isfinite(v) and low <= v <= high):
            raise InputError(f"{name} spacing must be between {low} and {high} mm, got {v:g}")
    return values  # type: ignore[return-value]


def parse_spacing(text: str | None) -> tuple[float, float, float] | None:
    """A form field's "2.5,0.7,0.7" (or a JSON list) as three spacings; None when absent."""
    if text is None or not text.strip():
        return None
    cleaned = text.strip().strip("[]()")
    parts = [p for p in cleaned.replace(";", ",").split(",") if p.strip()]
    try:
        return check_spacing([float(p) for p in parts])
    except ValueError:
        raise InputError(
            f"spacing_mm must be three numbers (slice, row, column) in mm, got {text[:60]!r}"
        ) from None


def _binary(array: np.ndarray) -> np.ndarray:
    if array.dtype == bool:
        return array
    if array.dtype.kind not in "iuf":
        raise InputError(f"a mask must hold 0 and 1, got dtype {array.dtype}")
    values = np.unique(array)
    if len(values) > 2 or not set(values.tolist()) <= {0, 1}:
        shown = ", ".join(f"{v:g}" for v in values[:6]) + (", ..." if len(values) > 6 else "")
        raise InputError(
            f"the mask is not binary: it holds the values {shown}; send 0 for background and "
            "1 for the nodule (one label)"
        )
    return array == 1


def _slice_outline(
    mask: np.ndarray, z: float, spacing: float, origin: tuple[float, float]
) -> SliceOutline:
    """The mask's boundary on one slice in mm, outer contours and holes apart."""
    contours, holes = [], []
    padded = np.pad(mask, 1).astype(np.float32)
    for line in measure.find_contours(padded, 0.5, positive_orientation="high"):
        simplified = shapely.simplify(shapely.linearrings(line - 1.0), OUTLINE_TOLERANCE_PX)
        line = shapely.get_coordinates(simplified)  # (row, col), closed
        xy = np.column_stack([origin[0] + line[:, 1] * spacing, origin[1] + line[:, 0] * spacing])
        x, y = xy[:, 0], xy[:, 1]
        signed = float(np.sum(x[:-1] * y[1:] - x[1:] * y[:-1]))
        # find_contours winds around the foreground one way, around a hole the other
        (holes if signed > 0 else contours).append(xy[:-1])  # drop the closing repeat
    return SliceOutline(float(z), tuple(contours), tuple(holes))


# --- files ------------------------------------------------------------------------------------
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
        spacing = spacing_mm or array.spacing
        if spacing is None:
            raise InputError(
                "a mask volume needs its voxel spacing: send spacing_mm (slice, row, column "
                "in mm) as a form field, or an .npz member 'spacing_mm'"
            )
        return from_mask(array.values, spacing, 0.0, "mask", max_voxels, max_slices)
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
    mask = np.ascontiguousarray(values.transpose(2, 1, 0))  # (x, y, z) -> (z, row = y, col = x)
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
