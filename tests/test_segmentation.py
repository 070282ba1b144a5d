"""model.outline and model.segmentation: outlines kept by the importer, features from
segmentations computed by the importer's own morphometry, refusals that name the problem."""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pytest
from cli_support import clipmed

from model.cohort import Cohort
from model.datasets.morphometry import FEATURE_EXTRACTOR, FEATURE_NAMES
from model.outline import OutlineStore, parse_outline
from model.segmentation import from_contours, from_mask, outline_features, parse_spacing
from model.segmentation_files import load_segmentation_file
from model.validation import InputError


def test_every_clean_lidc_read_round_trips_through_contours_json(lidc_small):
    """Exported as contours JSON and read back, a read's features are exactly the importer's;
    only reads a reader drew broken (a 1-2 pixel or collinear contour, or a figure of eight:
    0.07% of LIDC's contours) are refused, as any such upload is."""
    refused = 0
    for i, case_id in enumerate(lidc_small.cases["case_id"]):
        document = json.loads(json.dumps(lidc_small.outlines.get(case_id).to_json(decimals=6)))
        try:
            segmentation = from_contours(document)
        except InputError as e:
            assert any(m in str(e) for m in ("zero area", "distinct point", "crosses itself"))
            refused += 1
            continue
        np.testing.assert_array_equal(segmentation.features, lidc_small.slices(i))
        assert segmentation.extractor == FEATURE_EXTRACTOR
    assert refused < len(lidc_small) * 0.05


def test_cohort_keeps_outlines_on_disk(lidc_small, tmp_path):
    assert lidc_small.feature_extractor == FEATURE_EXTRACTOR
    assert len(lidc_small.outlines) == len(lidc_small)
    loaded = Cohort.load(lidc_small.save(tmp_path / "copy"))
    case_id = lidc_small.cases["case_id"].iloc[3]
    a, b = lidc_small.outlines.get(case_id), loaded.outlines.get(case_id)
    assert a.to_json() == b.to_json()
    np.testing.assert_array_equal(outline_features(b), lidc_small.slices(3))


def test_outline_store_subset_and_missing_cases(lidc_small, tmp_path):
    ids = list(lidc_small.cases["case_id"][:5]) + ["not-a-case"]
    subset = lidc_small.outlines.subset(ids)
    assert len(subset) == 5 and "not-a-case" not in subset
    subset.save(tmp_path / "o.npz")
    again = OutlineStore.load(tmp_path / "o.npz")
    assert again.get(ids[0]).to_json() == lidc_small.outlines.get(ids[0]).to_json()
    assert again.get("not-a-case") is None


def ellipsoid(shape=(10, 64, 64), radii=(9.0, 8.0, 6.0), spacing=(2.5, 0.7, 0.7)):
    grid = np.indices(shape, dtype=np.float64)
    center = [(n - 1) / 2 for n in shape]
    r = sum(((g - c) * s / a) ** 2 for g, c, s, a in zip(grid, center, spacing, radii, strict=True))
    return r <= 1.0


def test_mask_features_measure_the_nodule():
    mask = ellipsoid()
    seg = from_mask(mask, (2.5, 0.7, 0.7))
    assert seg.features.shape == (int(mask.any(axis=(1, 2)).sum()), len(FEATURE_NAMES))
    area = seg.features[:, FEATURE_NAMES.index("area_mm2")]
    expected = mask.sum(axis=(1, 2))[mask.any(axis=(1, 2))] * 0.7 * 0.7
    np.testing.assert_allclose(area, expected, rtol=1e-5)
    thickness = seg.features[:, FEATURE_NAMES.index("slice_thickness_mm")]
    assert np.all(thickness == 2.5)
    # one outer contour per slice, about 2 x 6 mm wide at the middle
    middle = seg.outline.slices[len(seg.outline.slices) // 2]
    assert len(middle.contours) == 1 and not middle.holes
    width = np.ptp(middle.contours[0][:, 0])
    assert abs(width - 12.0) <= 1.4


def test_a_hole_in_a_mask_is_drawn_as_a_hole():
    mask = ellipsoid()
    mask[5, 30:34, 30:34] = False
    seg = from_mask(mask, (2.5, 0.7, 0.7))
    holes = [len(s.holes) for s in seg.outline.slices]
    assert sum(holes) == 1


def test_anisotropic_pixels_are_resampled_to_square():
    mask = ellipsoid(spacing=(2.5, 0.7, 1.4), shape=(10, 64, 32))
    seg = from_mask(mask, (2.5, 0.7, 1.4))
    assert seg.outline.pixel_spacing_mm == 0.7
    width = np.ptp(seg.outline.slices[4].contours[0][:, 0])
    assert abs(width - 12.0) <= 2.8


@pytest.mark.parametrize(
    ("mask", "message"),
    [
        (np.zeros((3, 8, 8), bool), "empty"),
        (np.ones((8, 8), bool), "3-D"),
        (np.full((2, 4, 4), 3, np.uint8), "not binary"),
    ],
)
def test_bad_masks_are_refused(mask, message):
    with pytest.raises(InputError, match=message):
        from_mask(mask, (1.0, 1.0, 1.0))


def test_separate_parts_are_counted_not_guessed():
    mask = np.zeros((5, 30, 30), bool)
    mask[1, 2:5, 2:5] = mask[3, 20:25, 20:25] = mask[1, 20:22, 2:4] = True
    with pytest.raises(InputError, match="3 separate parts"):
        from_mask(mask, (1.0, 1.0, 1.0))
    touching = np.zeros((3, 10, 10), bool)
    touching[0, 2, 2] = touching[1, 3, 3] = True  # corner neighbours: one part
    assert from_mask(touching, (1.0, 1.0, 1.0)).features.shape[0] == 2


def traced_peak(call) -> tuple[int, Exception | None]:
    """Bytes Python and numpy allocated at most while `call` ran, and what it raised."""
    tracemalloc.start()
    try:
        call()
        raised = None
    except Exception as e:
        raised = e
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak, raised


def test_a_refused_mask_costs_no_copy_of_its_volume():
    """bench/hostile_memory.py's masks (31 x 512 x 512, 8 MiB as uint8): the empty and the
    non-binary one are refused reading the volume in place, the one of two parts is labelled
    on the box around its voxels, not on the volume."""
    empty = np.zeros((31, 512, 512), np.uint8)
    two_parts = empty.copy()
    two_parts[1:3, 10:40, 10:40] = 1  # 1,800 voxels
    two_parts[-3:-1, 100:140, 100:140] = 1  # 3,200 voxels
    cases = {
        "the mask is empty: no voxel is 1": (empty, 64 << 10),
        "it holds the values 0, 2;": (two_parts * 2, 2 << 20),  # a slice's scratch
        "the mask has 2 separate parts (sizes 3200, 1800 voxels)": (two_parts, 2 << 20),
    }
    for message, (mask, budget) in cases.items():
        peak, raised = traced_peak(lambda mask=mask: from_mask(mask, (2.5, 0.7, 0.7)))
        assert isinstance(raised, InputError) and message in str(raised), raised
        assert peak < budget, f"{message}: {peak / 2**20:.1f} MiB for {mask.nbytes >> 20} MiB"


def test_non_binary_values_are_named_however_they_lie():
    mask = np.zeros((4, 20, 20), np.float32)
    mask[1, 5, 5] = np.nan
    mask[2, 6:8, 6:8] = 1
    with pytest.raises(InputError, match="the values 0, 1, nan;"):
        from_mask(mask, (1.0, 1.0, 1.0))
    mask[...] = np.arange(20) % 10  # no zero outside the box: the box is the whole volume
    with pytest.raises(InputError, match=r"the values 0, 1, 2, 3, 4, 5, \.\.\.;"):
        from_mask(mask, (1.0, 1.0, 1.0))
    with pytest.raises(InputError, match="the values 2, 3;"):
        from_mask(np.full((2, 4, 4), 3, np.int64) - np.eye(4, dtype=np.int64), (1, 1, 1))


def test_parts_are_counted_in_a_label_type_wide_enough():
    """One voxel in every 2 x 2 x 2 block: as many parts as blocks, past 255 (8-bit labels)
    and past 65,535 (16-bit) too."""
    for shape in ((4, 16, 64), (8, 64, 64), (64, 64, 130)):
        mask = np.zeros(shape, bool)
        mask[::2, ::2, ::2] = True
        parts = mask.sum()
        with pytest.raises(InputError, match=f"the mask has {parts} separate parts "):
            from_mask(mask, (1.0, 1.0, 1.0), max_voxels=mask.size)
    assert parts > 1 << 16


def test_a_mask_spanning_too_many_slices_is_refused_before_it_is_labelled():
    mask = np.zeros((8, 6, 6), bool)
    mask[1:7, 2, 2] = mask[1:7, 4, 4] = True  # two parts, six slices
    with pytest.raises(InputError, match="the mask spans 6 slices; at most 5 are accepted"):
        from_mask(mask, (1.0, 1.0, 1.0), max_slices=5)


def test_voxel_cap_and_spacing():
    with pytest.raises(InputError, match="at most 100"):
        from_mask(np.ones((2, 10, 10), bool), (1.0, 1.0, 1.0), max_voxels=100)
    for bad in ("0,1,1", "1,-1,1", "1,1", "a,b,c", "1,1,nan"):
        with pytest.raises(InputError, match="spacing"):
            parse_spacing(bad)
    assert parse_spacing("[2.5, 0.7, 0.7]") == (2.5, 0.7, 0.7)
    assert parse_spacing(None) is None


def test_contours_are_checked_point_by_point():
    good = {
        "slice_thickness_mm": 1.0,
        "slices": [{"z_mm": 0, "contours": [[[0, 0], [4, 0], [0, 4]]]}],
    }
    assert parse_outline(good).pixel_spacing_mm == 0.7
    cases = [
        ({**good, "extra": 1}, "unknown key"),
        ({**good, "slices": []}, "non-empty list"),
        ({**good, "slices": [{"z_mm": 0, "contours": [[[0, 0], [4, "x"], [0, 4]]]}]}, "number"),
        ({**good, "slices": [{"z_mm": 1e9, "contours": [[[0, 0], [4, 0], [0, 4]]]}]}, "outside"),
        ({**good, "slices": [{"contours": [[[0, 0], [4, 0], [0, 4]]]}]}, "z_mm is missing"),
        ({**good, "slice_thickness_mm": True}, "must be a number"),
    ]
    for document, message in cases:
        with pytest.raises(InputError, match=message):
            parse_outline(document)


def test_clipmed_features_writes_the_feature_file(lidc_small, tmp_path):
    source = tmp_path / "read.json"
    case_id = lidc_small.cases["case_id"].iloc[0]
    source.write_text(json.dumps(lidc_small.outlines.get(case_id).to_json(decimals=6)))
    out = tmp_path / "case.npy"
    proc = clipmed("features", str(source), "--out", str(out))
    summary = json.loads(proc.stdout)
    assert summary["input_kind"] == "contours" and summary["feature_extractor"] == FEATURE_EXTRACTOR
    np.testing.assert_array_equal(np.load(out), lidc_small.slices(0))
    assert load_segmentation_file(source).kind == "contours"

    mask = tmp_path / "mask.npy"
    np.save(mask, ellipsoid())
    refused = clipmed("features", str(mask), "--out", str(out), check=False)
    assert refused.returncode == 2 and "spacing" in refused.stderr
    accepted = clipmed("features", str(mask), "--out", str(out), "--spacing-mm", "2.5,0.7,0.7")
    assert json.loads(accepted.stdout)["input_kind"] == "mask"
