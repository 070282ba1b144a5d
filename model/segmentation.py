"""A nodule segmentation in, the model's per-slice features out: one path for every input.

Accepted: contours JSON (:mod:`model.outline`), a binary mask volume as ``.npy``/``.npz``
([slices, rows, cols] with its spacing given beside it), NIfTI (``.nii``, ``.nii.gz``; spacing
from the header) and DICOM SEG (:mod:`model.dicom_seg`); :mod:`model.segmentation_files` reads
a file by its type. Contours are rasterised on their grid exactly as the LIDC importer
rasterises a read; masks are measured slice by slice; both go through
:mod:`model.datasets.morphometry`, the code that made the training features, whose name and
version (``FEATURE_EXTRACTOR``) travel with the result.

Every refusal is an :class:`~model.inference.InputError` naming the problem.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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
from model.outline import SPACING_RANGE_MM, NoduleOutline, SliceOutline, parse_outline
from model.validation import MAX_SLICES_PER_CASE, InputError

MAX_MASK_VOXELS = 32 * 512 * 512  # default cap on a mask volume's voxels (8.4 M)
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
    spacing_zyx: tuple[float, ...],
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
    if array.dtype != bool and array.dtype.kind not in "iuf":
        raise InputError(f"a mask must hold 0 and 1, got dtype {array.dtype}")
    # The volume is only read in place, and the cheap refusals come first: an empty mask costs
    # one pass, a non-binary one a slice at a time; copies and labels cover the box around the
    # nonzero voxels, not the volume (bench/hostile_memory.py --corpus segmentation).
    zs = np.flatnonzero(array.any(axis=(1, 2)))
    if len(zs) == 0:
        raise InputError("the mask is empty: no voxel is 1")
    if len(zs) > max_slices:
        raise InputError(
            f"the mask spans {len(zs)} slices; at most {max_slices} are accepted per case"
        )
    slab = array[zs[0] : zs[-1] + 1]
    rows = np.flatnonzero(slab.any(axis=(0, 2)))
    cols = np.flatnonzero(slab.any(axis=(0, 1)))
    box = slab[:, rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    _check_binary(box, zeros_outside=box.size < array.size)
    box = np.ascontiguousarray(box if box.dtype == bool else box != 0)
    parts, sizes = _parts(box)
    if parts > 1:
        raise InputError(
            f"the mask has {parts} separate parts (sizes {', '.join(map(str, sizes[:5]))}"
            f"{', ...' if parts > 5 else ''} voxels); send one nodule per request"
        )
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
        values = tuple(float(v) for v in spacing)  # type: ignore[attr-defined]
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
    return (values[0], values[1], values[2])


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


def _check_binary(box: np.ndarray, zeros_outside: bool) -> None:
    """InputError naming the values when the box holds anything but 0 and 1 (`zeros_outside`:
    the volume around it holds zeros). Read a slice at a time, so it costs a slice, not a copy
    of the volume."""
    if box.dtype == bool:
        return
    if not any(np.any((s != 0) & (s != 1)) for s in box):
        return
    values = np.zeros(int(zeros_outside), box.dtype)
    for s in box:  # the 7 smallest distinct values: enough to name 6 and say there are more
        values = np.union1d(values, np.unique(s))[:7]
    shown = ", ".join(f"{v:g}" for v in values[:6]) + (", ..." if len(values) > 6 else "")
    raise InputError(
        f"the mask is not binary: it holds the values {shown}; send 0 for background and "
        "1 for the nodule (one label)"
    )


def _parts(box: np.ndarray) -> tuple[int, np.ndarray]:
    """(number of separate parts, their sizes in voxels largest first when more than one) of
    a boolean box.

    The labels take the smallest integer type that can count them: two parts touch no common
    2 x 2 x 2 block of voxels, so there are at most as many parts as blocks (or as voxels).
    """
    blocks = math.prod((n + 1) // 2 for n in box.shape)
    most = min(blocks, int(np.count_nonzero(box)))
    dtype = np.uint8 if most < 1 << 8 else np.uint16 if most < 1 << 16 else np.int32
    labels, parts = ndimage.label(box, structure=_FULL_3D, output=dtype)
    if parts <= 1:
        return parts, np.zeros(0, np.int64)
    sizes = np.zeros(parts + 1, np.int64)
    for s in labels:  # bincount reads labels as 64-bit integers: a slice at a time
        sizes += np.bincount(s.ravel(), minlength=parts + 1)
    return parts, np.sort(sizes[1:])[::-1]


def _slice_outline(
    mask: np.ndarray, z: float, spacing: float, origin: tuple[float, float]
) -> SliceOutline:
    """The mask's boundary on one slice in mm, outer contours and holes apart."""
    contours: list[np.ndarray] = []
    holes: list[np.ndarray] = []
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
