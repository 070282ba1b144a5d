"""Synthetic DICOM for the SEG and SR tests: a small CT series and a SEG drawn on it.

Built with pydicom and highdicom in memory; no file is downloaded.
"""

from __future__ import annotations

import io

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

SPACING = (2.5, 0.7, 0.7)  # slice, row, column in mm
Z0 = -100.0  # z of the first CT slice, mm


def ellipsoid(shape=(8, 40, 40), radii_mm=(7.0, 8.0, 6.0), spacing=SPACING) -> np.ndarray:
    """A binary ellipsoid [slices, rows, cols] of the given radii (z, y, x) in mm."""
    center = tuple((n - 1) / 2 for n in shape)
    grid = np.indices(shape, dtype=np.float64)
    r = sum(
        ((g - c) * s / rad) ** 2
        for g, c, s, rad in zip(grid, center, spacing, radii_mm, strict=True)
    )
    return r <= 1.0


def ct_series(n_slices: int, rows: int, cols: int, spacing=SPACING, z0=Z0) -> list[Dataset]:
    """Axial CT Image Storage slices, z ascending, one study, series and frame of reference."""
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    out = []
    for i in range(n_slices):
        uid = generate_uid()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, uid
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.Modality, ds.PatientID, ds.PatientName = "CT", "anon-1", "Anon^Test"
        ds.PatientBirthDate = ds.PatientSex = ds.AccessionNumber = ds.ReferringPhysicianName = ""
        ds.StudyDate, ds.StudyTime, ds.StudyID = "20240101", "120000", "1"
        ds.SeriesNumber, ds.InstanceNumber = 1, i + 1
        ds.ImagePositionPatient = [0.0, 0.0, z0 + i * spacing[0]]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [spacing[1], spacing[2]]
        ds.SliceThickness = spacing[0]
        ds.Rows, ds.Columns = rows, cols
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = 0, 1
        ds.PixelData = np.zeros((rows, cols), np.int16).tobytes()
        out.append(ds)
    return out


def segment(number: int, label: str = "nodule") -> hd.seg.SegmentDescription:
    return hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=label,
        segmented_property_category=hd.sr.CodedConcept(
            "49755003", "SCT", "Morphologically Altered Structure"
        ),
        segmented_property_type=hd.sr.CodedConcept("27925004", "SCT", "Nodule"),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
    )


def seg_dataset(
    mask: np.ndarray, source: list[Dataset] | None = None, **options
) -> hd.seg.Segmentation:
    """A SEG of `mask` [slices, rows, cols] (or [..., segments]) on `source` (made if None)."""
    if source is None:
        source = ct_series(*mask.shape[:3])
    n_segments = 1 if mask.ndim == 3 else mask.shape[3]
    return hd.seg.Segmentation(
        source_images=source,
        pixel_array=mask if mask.dtype.kind == "f" else mask.astype(np.uint8),
        segmentation_type=options.pop("segmentation_type", "BINARY"),
        segment_descriptions=[segment(i + 1, f"nodule {i + 1}") for i in range(n_segments)],
        series_instance_uid=generate_uid(),
        series_number=2,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="CLIPMedical tests",
        manufacturer_model_name="synthetic",
        software_versions="1",
        device_serial_number="1",
        **options,
    )


def to_bytes(dataset: Dataset) -> bytes:
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
