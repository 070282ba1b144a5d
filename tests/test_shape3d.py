"""3-D shape of a read (extractor v2) on solids whose answers are known."""

import numpy as np
import pytest

from model.datasets.morphometry import FEATURE_NAMES, contour_features
from model.datasets.shape3d import SHAPE_FEATURES, shape_3d
from model.segmentation import from_mask


def solid(shape, radii, spacing, spikes=0):
    """A voxelised ellipsoid (radii in mm along z, y, x), optionally with `spikes` needles."""
    grid = np.indices(shape, dtype=np.float64)
    centre = [(n - 1) / 2 for n in shape]
    d = [(g - c) * s for g, c, s in zip(grid, centre, spacing, strict=True)]
    body = sum((di / a) ** 2 for di, a in zip(d, radii, strict=True)) <= 1.0
    rng = np.random.default_rng(0)
    for _ in range(spikes):  # a thin cylinder from the centre out to 1.8 x the radius
        u = rng.normal(size=3)
        u /= np.linalg.norm(u)
        along = sum(di * ui for di, ui in zip(d, u, strict=True))
        off = np.sqrt(np.maximum(sum(di**2 for di in d) - along**2, 0.0))
        body |= (along > 0) & (along < 1.8 * min(radii)) & (off < 1.2)
    return body


def features(volume, spacing):
    return dict(zip(SHAPE_FEATURES, shape_3d(volume, spacing).tolist(), strict=True))


def test_a_ball_is_round_and_measured_in_millimetres():
    r = 10.0
    f = features(solid((41, 41, 41), (r, r, r), (0.5, 0.5, 0.5)), (0.5, 0.5, 0.5))
    assert f["read_volume_mm3"] == pytest.approx(4 / 3 * np.pi * r**3, rel=0.02)
    # marching cubes on a binary mask overstates a smooth surface by ~8% (its facets)
    assert f["read_surface_mm2"] == pytest.approx(4 * np.pi * r**2, rel=0.1)
    assert f["read_sphericity"] > 0.88 and f["read_solidity"] > 0.95
    assert f["read_compactness"] == pytest.approx(f["read_sphericity"] ** 3, rel=1e-4)
    assert f["read_diameter_mm"] == pytest.approx(2 * r, abs=1.0)
    assert f["read_elongation"] > 0.99 and f["read_flatness"] > 0.99
    assert f["read_roughness"] < 0.03 and f["read_spike_count"] == 0
    assert max(f[f"read_sh_{k}"] for k in range(1, 7)) < 0.03


def test_an_ellipsoid_has_its_axis_ratios_and_its_quadrupole():
    f = features(solid((25, 61, 61), (6.0, 9.0, 14.0), (1.0, 0.5, 0.5)), (1.0, 0.5, 0.5))
    assert f["read_elongation"] == pytest.approx(9 / 14, abs=0.02)
    assert f["read_flatness"] == pytest.approx(6 / 14, abs=0.02)
    assert f["read_diameter_mm"] == pytest.approx(28.0, abs=1.0)
    assert f["read_sh_2"] > 0.2 > f["read_sh_1"]  # r(direction) of an ellipsoid: degree 2


def test_spikes_are_counted_and_roughen_the_surface():
    spacing = (0.5, 0.5, 0.5)
    smooth = features(solid((61, 61, 61), (8.0, 8.0, 8.0), spacing), spacing)
    spiky = features(solid((61, 61, 61), (8.0, 8.0, 8.0), spacing, spikes=4), spacing)
    assert smooth["read_spike_count"] == 0 and spiky["read_spike_count"] >= 3
    assert spiky["read_spike_fraction"] > 0
    assert spiky["read_roughness"] > 2 * smooth["read_roughness"]
    assert spiky["read_sphericity"] < smooth["read_sphericity"]


def test_tiny_reads_stay_finite():
    for volume in (np.ones((1, 1, 1), bool), np.ones((1, 2, 1), bool), np.ones((2, 1, 1), bool)):
        assert np.isfinite(shape_3d(volume, (2.5, 0.7, 0.7))).all()
    with pytest.raises(ValueError):
        shape_3d(np.zeros((2, 2, 2), bool), (1.0, 1.0, 1.0))


def test_contours_and_masks_give_one_read_the_same_3d_shape():
    """The importer's path (contours rasterised per slice, stacked on z) and the mask path
    measure the same solid: drawn as the outlines of a mask's slices, the 3-D columns agree."""
    from skimage import measure

    spacing = (2.5, 0.7, 0.7)
    volume = solid((7, 40, 40), (7.0, 11.0, 9.0), spacing)
    slices = []
    for k, plane in enumerate(volume):
        if not plane.any():
            continue
        # the pixel centres of the mask's boundary, as a reader's outline (drawn outside it)
        ring = measure.find_contours(np.pad(plane, 1).astype(float), 0.5)[0]
        outer = np.rint(ring[:, ::-1] - 1 + np.sign(ring[:, ::-1] - ring[:, ::-1].mean(0)) * 0.5)
        slices.append((k * 2.5, [(outer.astype(np.int32), True)]))
    rows, _ = contour_features(slices, 0.7, 2.5)
    mask = from_mask(volume, spacing).features
    cols = [FEATURE_NAMES.index(n) for n in SHAPE_FEATURES]
    assert (rows[:, cols] == rows[:1, cols]).all()  # one vector per read, on every slice
    drawn = dict(zip(SHAPE_FEATURES, rows[0, cols], strict=True))
    masked = dict(zip(SHAPE_FEATURES, mask[0, cols], strict=True))
    assert drawn["read_volume_mm3"] == pytest.approx(masked["read_volume_mm3"], rel=0.25)
    assert drawn["read_diameter_mm"] == pytest.approx(masked["read_diameter_mm"], rel=0.15)
    assert drawn["read_elongation"] == pytest.approx(masked["read_elongation"], abs=0.1)
