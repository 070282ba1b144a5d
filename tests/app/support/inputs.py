"""What the tests upload: simulated feature cases, masks and NIfTI files, held-out LIDC reads."""

from __future__ import annotations

import gzip
import json

import nibabel
import numpy as np

from support.checkpoints import FEATURE_DIM, HELD_OUT_PATIENT

RNG = np.random.default_rng(0)


def case(slices: int = 5, dim: int = FEATURE_DIM) -> np.ndarray:
    return RNG.normal(size=(slices, dim)).astype(np.float32)


def unseen_case(seed: int = 99) -> np.ndarray:
    """A case the small checkpoints were not trained on, from the same simulated generator."""
    from model.datasets.simulated import simulate_cohort

    cohort = simulate_cohort(3, None, seed=seed, feature_dim=FEATURE_DIM, signal=2.0)
    return cohort.slices(0)


SPACING = (2.5, 0.7, 0.7)


def ellipsoid(shape=(10, 64, 64), radii_mm=(9.0, 8.0, 6.0), spacing=SPACING, center=None):
    """A binary ellipsoid [slices, rows, cols] of the given radii (z, y, x) in mm."""
    center = center or tuple((n - 1) / 2 for n in shape)
    grid = np.indices(shape, dtype=np.float64)
    r = sum(
        ((g - c) * s / rad) ** 2
        for g, c, s, rad in zip(grid, center, spacing, radii_mm, strict=True)
    )
    return r <= 1.0


def nifti_bytes(mask: np.ndarray, spacing=SPACING, compress=True) -> bytes:
    """A NIfTI-1 file of a [slices, rows, cols] mask (stored as x, y, z, as NIfTI has it)."""
    affine = np.diag([spacing[2] or 1.0, spacing[1] or 1.0, spacing[0] or 1.0, 1.0])
    image = nibabel.Nifti1Image(mask.transpose(2, 1, 0).astype(np.uint8), affine)
    image.header["pixdim"][1:4] = spacing[::-1]  # a zero spacing as a broken writer leaves it
    raw = image.to_bytes()
    return gzip.compress(raw) if compress else raw


def held_out_read(lidc_small):
    """(case index, contours document) of the first held-out read without degenerate slices."""
    for i, (case_id, patient) in enumerate(
        zip(lidc_small.cases["case_id"], lidc_small.patients, strict=True)
    ):
        if patient != HELD_OUT_PATIENT:
            continue
        outline = lidc_small.outlines.get(case_id)
        if len(outline.slices) >= 3:
            return i, json.loads(json.dumps(outline.to_json(decimals=6)))
    raise AssertionError("no held-out read with 3 slices")
