"""model.dicom_seg: a DICOM SEG made with highdicom on a synthetic CT series gives the features
of its mask, carries what an SR needs to reference it, and is refused by name when it is not
one nodule in one segment."""

from __future__ import annotations

import numpy as np
import pytest
from dicom_support import SPACING, Z0, ct_series, ellipsoid, seg_dataset, to_bytes

from model.dicom_seg import read_seg
from model.segmentation import MAX_MASK_VOXELS, from_mask
from model.segmentation_files import read_segmentation
from model.validation import InputError

LIMITS = {"max_voxels": MAX_MASK_VOXELS, "max_slices": 512}


def test_seg_features_equal_the_masks():
    mask = ellipsoid()
    source = ct_series(*mask.shape)
    seg = seg_dataset(mask, source)
    result = read_seg(to_bytes(seg), **LIMITS)
    expected = from_mask(mask, SPACING, Z0)
    assert result.kind == "dicom-seg"
    np.testing.assert_allclose(result.features, expected.features, rtol=1e-6, atol=1e-6)
    # the outline sits at the slices' z in the patient frame, as the CT has them
    assert [s.z_mm for s in result.outline.slices] == pytest.approx(
        [s.z_mm for s in expected.outline.slices]
    )
    reference = result.reference
    assert reference["sop_instance_uid"] == seg.SOPInstanceUID
    assert reference["series_instance_uid"] == seg.SeriesInstanceUID
    assert reference["study_instance_uid"] == source[0].StudyInstanceUID
    assert reference["frame_of_reference_uid"] == source[0].FrameOfReferenceUID
    assert reference["sop_class_uid"] == "1.2.840.10008.5.1.4.1.1.66.4"
    assert reference["segment_number"] == 1 and reference["segment_label"] == "nodule 1"
    (series,) = reference["source_series"]
    assert series["series_instance_uid"] == source[0].SeriesInstanceUID
    assert {i["sop_instance_uid"] for i in series["instances"]} <= {
        s.SOPInstanceUID for s in source
    }


def test_slices_are_ordered_along_the_normal_whatever_the_source_order():
    """The CT listed from the top down: the SEG still reads bottom up, as the mask."""
    mask = ellipsoid(radii_mm=(7.0, 8.0, 4.0))
    mask[:4, :, :20] = False  # not symmetric in z, so a flip would show
    source = ct_series(*mask.shape)
    flipped = seg_dataset(mask[::-1].copy(), source[::-1])
    result = read_seg(to_bytes(flipped), **LIMITS)
    np.testing.assert_allclose(result.features, from_mask(mask, SPACING, Z0).features, atol=1e-6)


def test_fractional_seg_that_is_binary_is_read_one_with_fractions_refused():
    mask = ellipsoid()
    fractional = seg_dataset(mask, segmentation_type="FRACTIONAL")
    expected = from_mask(mask, SPACING, Z0).features
    np.testing.assert_allclose(read_seg(to_bytes(fractional), **LIMITS).features, expected)

    soft = seg_dataset(mask.astype(np.float32) * 0.5, segmentation_type="FRACTIONAL")
    with pytest.raises(InputError, match="FRACTIONAL"):
        read_seg(to_bytes(soft), **LIMITS)


def test_two_segments_are_refused():
    mask = np.zeros((4, 24, 24, 2), bool)
    mask[1:3, 4:10, 4:10, 0] = True
    mask[1:3, 14:20, 14:20, 1] = True
    with pytest.raises(InputError, match="the SEG has 2 segments; send one"):
        read_seg(to_bytes(seg_dataset(mask)), **LIMITS)


def test_voxel_cap_is_checked_from_the_header():
    data = to_bytes(seg_dataset(ellipsoid()))
    with pytest.raises(InputError, match="at most 1000 are accepted"):
        read_seg(data, max_voxels=1000, max_slices=512)


def test_a_ct_image_is_not_a_seg():
    (image,) = ct_series(1, 16, 16)
    with pytest.raises(InputError, match="not a segmentation .SOP Class CT Image Storage"):
        read_seg(to_bytes(image), **LIMITS)


@pytest.mark.parametrize(
    "data, message",
    [
        (b"not dicom at all" * 20, "not a DICOM file"),
        (bytes(128) + b"DICM" + b"\x02\x00\x10\x00garbage", "DICOM"),
    ],
)
def test_garbage_is_refused(data, message):
    with pytest.raises(InputError, match=message):
        read_seg(data, **LIMITS)


def test_dcm_files_are_routed_to_the_seg_reader():
    data = to_bytes(seg_dataset(ellipsoid()))
    for name in ("nodule.dcm", "upload"):  # by name, or by the DICM preamble
        result = read_segmentation(data, name, max_bytes=1 << 26)
        assert result is not None and result.kind == "dicom-seg"
