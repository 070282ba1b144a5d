"""Per-slice contour geometry: rasterising contours and the morphometry of hand-made masks."""

import math

import numpy as np
import pytest
from skimage import draw

from model.datasets.morphometry import SLICE_FEATURES, parse_coords, slice_mask, slice_morphometry


def morph(mask: np.ndarray, spacing: float = 1.0) -> dict[str, float]:
    return dict(zip(SLICE_FEATURES, slice_morphometry(mask, spacing).tolist(), strict=True))


# --- morphometry of hand-made masks -------------------------------------------------------------
def test_square_at_half_millimetre_spacing():
    mask = np.zeros((14, 14), bool)
    mask[2:12, 2:12] = True  # 10 x 10 pixels = 5 x 5 mm
    m = morph(mask, 0.5)
    assert m["area_mm2"] == pytest.approx(25.0)
    # the outline runs through pixel-edge midpoints and cuts the four corners: 19.4 mm, not 20
    assert m["perimeter_mm"] == pytest.approx(20.0, rel=0.04)
    assert m["equivalent_diameter_mm"] == pytest.approx(2 * math.sqrt(25 / math.pi), rel=1e-6)
    assert m["circularity"] == pytest.approx(math.pi / 4, abs=0.06)
    assert m["major_axis_mm"] == pytest.approx(m["minor_axis_mm"])
    assert m["eccentricity"] == pytest.approx(0.0, abs=1e-6)
    assert m["solidity"] == pytest.approx(1.0)
    assert m["extent"] == pytest.approx(1.0)
    assert m["convexity"] == pytest.approx(1.0, abs=1e-6)
    assert m["feret_max_mm"] == pytest.approx(5 * math.sqrt(2), rel=0.05)
    assert m["radial_min_mm"] == pytest.approx(2.5, rel=0.01)
    assert m["radial_max_mm"] == pytest.approx(2.5 * math.sqrt(2), rel=0.05)
    # four-fold symmetry: only the 4th harmonic (and its multiples) survive
    for k in (1, 2, 3, 5, 6):
        assert m[f"fourier_{k}"] < 0.01
    assert m["fourier_4"] > 0.05
    assert m["n_components"] == 1 and m["hole_fraction"] == 0


def test_disc_and_ellipse():
    disc = np.zeros((61, 61), bool)
    disc[draw.disk((30, 30), 25.5)] = True
    d = morph(disc, 0.7)
    assert d["area_mm2"] == pytest.approx(math.pi * (25.5 * 0.7) ** 2, rel=0.01)
    assert d["circularity"] > 0.88  # staircase outline: a perfect disc would read 1
    assert d["circularity"] > morph(np.pad(np.ones((20, 20), bool), 2))["circularity"]
    assert d["eccentricity"] < 0.05 and d["radial_cv"] < 0.02
    assert max(d[f"fourier_{k}"] for k in range(1, 7)) < 0.01

    ellipse = np.zeros((61, 101), bool)
    ellipse[draw.ellipse(30, 50, 12, 36)] = True  # semi-axes 12 rows, 36 columns
    e = morph(ellipse, 1.0)
    assert e["major_axis_mm"] / e["minor_axis_mm"] == pytest.approx(3.0, rel=0.03)
    assert e["eccentricity"] == pytest.approx(math.sqrt(1 - 1 / 9), rel=0.01)
    assert e["fourier_2"] == max(e[f"fourier_{k}"] for k in range(1, 7))
    columns = np.flatnonzero(ellipse.any(0))
    assert e["feret_max_mm"] == pytest.approx(columns[-1] - columns[0] + 1, rel=0.01)


@pytest.mark.parametrize(
    "pixels",
    [
        [(2, 2)],  # one pixel
        [(2, 2), (2, 3)],  # two side by side
        [(2, 2), (3, 3)],  # two diagonal
        [(2, c) for c in range(1, 11)],  # a one-pixel line
        [(1, 1), (2, 1), (3, 1), (3, 2), (3, 3)],  # an L
        [(1, 1), (6, 8)],  # two separate pixels
    ],
)
def test_degenerate_masks_have_finite_sensible_features(pixels):
    mask = np.zeros((8, 12), bool)
    for r, c in pixels:
        mask[r, c] = True
    m = morph(mask, 0.6)
    assert all(math.isfinite(v) for v in m.values()), m
    assert m["area_mm2"] == pytest.approx(len(pixels) * 0.36)
    assert m["perimeter_mm"] > 0 and m["radial_mean_mm"] > 0 and m["feret_max_mm"] > 0
    assert 0 < m["circularity"] <= 1 and 0 < m["convexity"] <= 1 and 0 < m["solidity"] <= 1
    assert 0 <= m["eccentricity"] <= 1 and m["minor_axis_mm"] > 0
    assert m["n_components"] == (2 if (6, 8) in pixels else 1)


def test_one_pixel_is_round_and_unit_sized():
    mask = np.zeros((3, 3), bool)
    mask[1, 1] = True
    m = morph(mask, 1.0)
    assert m["eccentricity"] == 0 and m["radial_cv"] == pytest.approx(0, abs=1e-6)
    assert m["hu_1"] == 0  # all Hu moments of a single pixel are 0: stored as 0, not -inf
    assert m["radial_mean_mm"] == pytest.approx(0.5)


def test_ring_has_a_hole():
    mask = np.zeros((20, 20), bool)
    mask[draw.disk((10, 10), 8)] = True
    mask[draw.disk((10, 10), 4)] = False
    m = morph(mask)
    assert 0.2 < m["hole_fraction"] < 0.3
    assert m["radial_min_mm"] > 6  # the radial profile follows the outer outline
    assert m["n_components"] == 1


def test_empty_mask_is_refused():
    with pytest.raises(ValueError, match="non-empty"):
        slice_morphometry(np.zeros((4, 4), bool), 1.0)


# --- rasterising contours ----------------------------------------------------------------------
def test_outline_pixels_are_not_nodule_and_holes_are_subtracted():
    square = np.array(
        [(x, 0) for x in range(12)]
        + [(11, y) for y in range(1, 12)]
        + [(x, 11) for x in range(10, -1, -1)]
        + [(0, y) for y in range(10, 0, -1)]
    )
    mask, degenerate = slice_mask([(square + 5, True)])
    assert mask.sum() == 100 and not degenerate  # 12 x 12 outline around 10 x 10 pixels
    hole = np.array([(4, 4), (5, 4), (6, 4), (6, 5), (6, 6), (5, 6), (4, 6), (4, 5)])
    mask, _ = slice_mask([(square + 5, True), (hole + 5, False)])
    assert mask.sum() == 100 - 9  # the hole's outline and its one interior pixel
    second = square + (20, 0)  # a second part on the same slice is unioned
    mask, _ = slice_mask([(square + 5, True), (second + 5, True)])
    assert mask.sum() == 200


def test_tiny_contours_keep_their_own_pixels():
    mask, degenerate = slice_mask([(np.array([[135, 170], [135, 170]]), True)])
    assert mask.sum() == 1 and degenerate
    mask, degenerate = slice_mask([(np.array([[3, 3], [4, 3], [4, 4], [3, 4]]), True)])
    assert mask.sum() == 4 and degenerate


def test_parse_coords():
    assert parse_coords("364,172\n364,171\n365,169").tolist() == [
        [364, 172],
        [364, 171],
        [365, 169],
    ]
