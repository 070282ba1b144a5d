"""A DICOM SEG in, a :class:`~model.segmentation.Segmentation` out (one segment, one nodule).

The header is read first, without the pixel data: the SOP class, the number of segments and
what the frames could decode to (Rows x Columns x NumberOfFrames, then the volume the frames
span) are checked before a voxel is decoded. highdicom sorts the frames into a volume; its
slices are put in ascending order along the slice normal, so slice i lies at z0 + i * dz
with z0 the first slice's position along that normal.

Every refusal is an :class:`~model.validation.InputError` naming the problem.
"""

from __future__ import annotations

import io

import numpy as np

from model.segmentation import Segmentation, check_voxels, from_mask
from model.validation import InputError

SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
PATIENT_STUDY = (
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "ReferringPhysicianName",
)


def read_seg(data: bytes, *, max_voxels: int, max_slices: int) -> Segmentation:
    """Features, outline and reference (UIDs, segment, source images) of a one-segment SEG."""
    import highdicom as hd
    import pydicom

    header = _dataset(data, stop_before_pixels=True)
    sop_class = str(header.get("SOPClassUID", ""))
    if sop_class != SEGMENTATION_STORAGE:
        name = pydicom.uid.UID(sop_class).name if sop_class else "no SOP Class UID"
        raise InputError(
            f"the DICOM file is not a segmentation (SOP Class {name}); send a DICOM SEG "
            "(Segmentation Storage) with one segment"
        )
    segments = header.get("SegmentSequence") or []
    if len(segments) != 1:
        raise InputError(
            f"the SEG has {len(segments)} segments; send one (a SEG holding only the nodule)"
        )
    try:
        shape = (int(header.get("NumberOfFrames", 1)), int(header.Rows), int(header.Columns))
    except (AttributeError, TypeError, ValueError):
        raise InputError("the SEG header lacks valid Rows, Columns or NumberOfFrames") from None
    check_voxels(shape, max_voxels)  # what the frames decode to, before they are
    kind = str(header.get("SegmentationType", ""))
    if kind not in ("BINARY", "FRACTIONAL", "LABELMAP"):
        raise InputError(f"unsupported SegmentationType {kind!r}; send a BINARY SEG")

    dataset = _dataset(data, stop_before_pixels=False)
    try:
        seg = hd.seg.Segmentation.from_dataset(dataset, copy=False)
        geometry = seg.get_volume_geometry()
    except Exception as e:  # highdicom raises ValueError, AttributeError, KeyError ...
        raise InputError(f"could not read the DICOM SEG: {str(e)[:200]}") from None
    if geometry is None:
        raise InputError(
            "the SEG's frames do not form a regularly spaced volume (one plane orientation, "
            "evenly spaced slices); send a SEG of parallel slices"
        )
    check_voxels(geometry.spatial_shape, max_voxels)  # the frames may span empty positions
    try:
        volume = seg.get_volume(rescale_fractional=False)
    except Exception as e:
        raise InputError(f"could not decode the SEG's frames: {str(e)[:200]}") from None
    mask = _binary_mask(volume.array[..., 0], kind, header)  # (slices, rows, cols)

    direction = np.asarray(volume.direction, np.float64)  # columns: slice, row, column axes
    normal = np.cross(direction[:, 2], direction[:, 1])  # row cosine x column cosine
    position = np.asarray(volume.position, np.float64)  # centre of voxel (0, 0, 0), in mm
    dz, dy, dx = (float(v) for v in volume.spacing)
    if float(direction[:, 0] @ normal) < 0:  # highdicom may stack them the other way
        mask = mask[::-1]
        position = position + direction[:, 0] * dz * (mask.shape[0] - 1)
    z0 = float(position @ normal)
    return from_mask(
        mask,
        (round(dz, 6), round(dy, 6), round(dx, 6)),
        z0,
        "dicom-seg",
        max_voxels,
        max_slices,
        reference=_reference(header, segments[0]),
    )


def _dataset(data: bytes, *, stop_before_pixels: bool):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(io.BytesIO(data), stop_before_pixels=stop_before_pixels)
    except InvalidDicomError:
        raise InputError(
            "not a DICOM file (no DICM preamble); send a DICOM SEG .dcm file"
        ) from None
    except Exception as e:  # truncated or corrupt: EOFError, struct errors, ValueError ...
        raise InputError(f"could not parse the DICOM file: {str(e)[:200]}") from None


def _binary_mask(values: np.ndarray, kind: str, header) -> np.ndarray:
    """A binary SEG as is; a fractional one only when it holds nothing between 0 and its max."""
    if kind != "FRACTIONAL":
        return values != 0
    top = int(header.get("MaximumFractionalValue", 255))
    found = np.unique(values)
    if not set(found.tolist()) <= {0, top}:
        raise InputError(
            f"the SEG is FRACTIONAL with {len(found)} distinct values (not only 0 and {top}); "
            "send a BINARY SEG, or one whose fractions are all 0 or 1"
        )
    return values == top


def _reference(header, segment) -> dict:
    """What a DICOM SR needs to point at this SEG (and the images it was drawn on); JSON-able."""

    def text(dataset, keyword: str) -> str | None:
        value = dataset.get(keyword)
        return None if value is None or value == "" else str(value)

    source_series = []
    for series in header.get("ReferencedSeriesSequence") or []:
        source_series.append(
            {
                "series_instance_uid": text(series, "SeriesInstanceUID"),
                "instances": [
                    {
                        "sop_class_uid": text(item, "ReferencedSOPClassUID"),
                        "sop_instance_uid": text(item, "ReferencedSOPInstanceUID"),
                    }
                    for item in series.get("ReferencedInstanceSequence") or []
                ],
            }
        )
    return {
        "study_instance_uid": text(header, "StudyInstanceUID"),
        "series_instance_uid": text(header, "SeriesInstanceUID"),
        "sop_instance_uid": text(header, "SOPInstanceUID"),
        "sop_class_uid": text(header, "SOPClassUID"),
        "frame_of_reference_uid": text(header, "FrameOfReferenceUID"),
        "segment_number": int(segment.get("SegmentNumber", 1)),
        "segment_label": text(segment, "SegmentLabel"),
        "source_series": source_series,
        # the SEG's patient and study modules, as an SR in the same study must repeat them
        "patient_study": {keyword: text(header, keyword) or "" for keyword in PATIENT_STUDY},
    }
