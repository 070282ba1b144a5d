"""3-D shape of one read: the stacked slice masks measured as a solid (extractor v2).

:func:`shape_3d` takes a read's binary volume [slices, rows, cols] with its voxel spacing in mm
and returns one vector per read (:data:`SHAPE_FEATURES`): size (volume, surface area of the
marching-cubes mesh, the largest 3-D diameter), how round it is (sphericity, compactness,
solidity against its convex hull), its principal-axis proportions (elongation, flatness) and how
irregular its boundary is, from the radial profile r(polar, azimuth) of the surface seen from
the centroid: the coefficient of variation of the surface radii, spikes (connected patches of
the profile well beyond its median) and a low-order spherical-harmonics energy spectrum.

Size drives malignancy and 3-D boundary complexity spiculation (for larger nodules), so the
model sees both directly. Contours (the LIDC importer, contours uploads) and masks (NIfTI,
``.npy``, DICOM SEG) both come here through :mod:`model.datasets.morphometry`.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy import ndimage, spatial
from scipy.special import sph_harm_y
from skimage import measure

SH_DEGREES = 6  # spherical-harmonic degrees l = 1..6 kept, each as sqrt(E_l / E_0)
N_POLAR, N_AZIMUTH = 12, 24  # bins of the surface's radial profile r(polar, azimuth)
SPIKE_RATIO = 1.25  # a spike: a patch of the radial profile beyond 1.25 x its median

SHAPE_FEATURES: tuple[str, ...] = (
    "read_volume_mm3",  # voxel count times the voxel volume
    "read_surface_mm2",  # marching-cubes mesh area at the 0.5 iso-level
    "read_sphericity",  # pi^(1/3) (6 V)^(2/3) / A on the mesh (1 for a ball)
    "read_compactness",  # 36 pi V^2 / A^3 on the mesh
    "read_solidity",  # mesh volume over its convex hull's volume
    "read_diameter_mm",  # the largest distance between two surface points
    "read_elongation",  # sqrt(second / largest principal variance)
    "read_flatness",  # sqrt(least / largest principal variance)
    "read_roughness",  # std / mean of the surface vertices' distance to the centroid
    "read_spike_count",  # patches of the radial profile beyond SPIKE_RATIO x its median
    "read_spike_fraction",  # share of the profile's solid angle in those patches
    *(f"read_sh_{degree}" for degree in range(1, SH_DEGREES + 1)),
)


def shape_3d(volume: np.ndarray, spacing_zyx: tuple[float, float, float]) -> np.ndarray:
    """float32 [len(SHAPE_FEATURES)] of a non-empty binary volume [slices, rows, cols] whose
    voxels are `spacing_zyx` mm apart. Finite for any non-empty volume, a one-voxel one too."""
    volume = np.asarray(volume, bool)
    spacing = np.asarray(spacing_zyx, np.float64)
    voxels = np.argwhere(volume).astype(np.float64) * spacing  # voxel centres, mm
    if len(voxels) == 0:
        raise ValueError("shape_3d needs a non-empty volume")
    voxel_volume = float(len(voxels) * np.prod(spacing))

    padded = np.pad(volume, 1).astype(np.float32)
    verts, faces, _, _ = measure.marching_cubes(padded, 0.5, spacing=tuple(spacing))
    verts -= spacing  # undo the padding: vertices in the voxel-centre frame
    tri = verts[faces]
    area = float(measure.mesh_surface_area(verts, faces))
    mesh_volume = abs(float(np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum()))
    mesh_volume /= 6.0
    sphericity = np.pi ** (1.0 / 3.0) * (6.0 * mesh_volume) ** (2.0 / 3.0) / area
    compactness = 36.0 * np.pi * mesh_volume**2 / area**3

    hull_volume, diameter = mesh_volume, 0.0
    try:
        hull = spatial.ConvexHull(verts)
        hull_volume = float(hull.volume)
        diameter = float(spatial.distance.pdist(verts[hull.vertices]).max())
    except spatial.QhullError:  # a closed mesh always spans 3-D; stay finite regardless
        diameter = float(spatial.distance.pdist(verts).max()) if len(verts) > 1 else 0.0
    solidity = min(mesh_volume / max(hull_volume, 1e-12), 1.0)

    # principal variances of the solid; + spacing^2 / 12 is each voxel's own extent, so a
    # one-slice read still has a thickness
    centre = voxels.mean(0)
    centred = voxels - centre
    covariance = np.einsum("ni,nj->ij", centred, centred) / len(voxels)
    variances = np.sort(np.linalg.eigvalsh(covariance + np.diag(spacing**2 / 12.0)))[::-1]
    elongation = float(np.sqrt(variances[1] / variances[0]))
    flatness = float(np.sqrt(variances[2] / variances[0]))

    offsets = verts - centre
    radii = np.linalg.norm(offsets, axis=1)
    roughness = float(radii.std() / max(radii.mean(), 1e-12))
    profile = _radial_profile(offsets, radii)
    spikes, spike_fraction = _spikes(profile)
    spectrum = _sh_spectrum(profile)

    values = [
        voxel_volume,
        area,
        sphericity,
        compactness,
        solidity,
        diameter,
        elongation,
        flatness,
        roughness,
        float(spikes),
        spike_fraction,
        *spectrum,
    ]
    return np.asarray(values, np.float32)


def _radial_profile(offsets: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """r on an N_POLAR x N_AZIMUTH grid of directions: the farthest surface vertex per bin;
    bins no vertex falls in (small meshes) take their nearest filled bin's value."""
    polar = np.arccos(np.clip(offsets[:, 0] / np.maximum(radii, 1e-12), -1.0, 1.0))  # from +z
    azimuth = np.arctan2(offsets[:, 1], offsets[:, 2])
    i = np.minimum((polar / np.pi * N_POLAR).astype(np.int64), N_POLAR - 1)
    j = ((azimuth + np.pi) / (2.0 * np.pi) * N_AZIMUTH).astype(np.int64) % N_AZIMUTH
    profile = np.full((N_POLAR, N_AZIMUTH), -1.0)
    np.maximum.at(profile, (i, j), radii)
    empty = profile < 0
    if empty.any():
        nearest = ndimage.distance_transform_edt(empty, return_distances=False, return_indices=True)
        profile = profile[tuple(nearest)]
    return profile


def _spikes(profile: np.ndarray) -> tuple[int, float]:
    """Connected patches (azimuth wraps around) of the profile beyond SPIKE_RATIO x its
    median, and the solid-angle share they cover."""
    above = profile > SPIKE_RATIO * np.median(profile)
    labels, n = ndimage.label(above)
    if n > 1:  # patches touching across the azimuth seam are one spike
        parent = np.arange(n + 1)
        for a, b in zip(labels[:, 0], labels[:, -1], strict=True):
            if a and b:
                ra, rb = _root(parent, a), _root(parent, b)
                parent[max(ra, rb)] = min(ra, rb)
        n = len({_root(parent, k) for k in range(1, n + 1)})
    weights = _solid_angles()
    return n, float(weights[above].sum() / weights.sum())


def _root(parent: np.ndarray, k: int) -> int:
    while parent[k] != k:
        k = parent[k]
    return int(k)


def _sh_spectrum(profile: np.ndarray) -> np.ndarray:
    """sqrt(E_l / E_0), l = 1..SH_DEGREES: the energy of each degree of r(polar, azimuth)'s
    spherical-harmonic expansion over that of its mean (scale-free)."""
    basis, weights = _sh_basis()
    # einsum, not BLAS: a tiny product that OpenBLAS threads would only wait on, on a busy box
    coefficients = np.einsum("kb,b->k", basis, profile.ravel() * weights)  # [n_lm]
    degree = np.concatenate([np.full(2 * n + 1, n) for n in range(SH_DEGREES + 1)])
    energy = np.bincount(degree, np.abs(coefficients) ** 2)
    return np.sqrt(energy[1:] / max(energy[0], 1e-24))


@functools.cache
def _solid_angles() -> np.ndarray:
    polar = (np.arange(N_POLAR) + 0.5) * np.pi / N_POLAR
    weight = np.sin(polar) * (np.pi / N_POLAR) * (2.0 * np.pi / N_AZIMUTH)
    return np.repeat(weight[:, None], N_AZIMUTH, axis=1)


@functools.cache
def _sh_basis() -> tuple[np.ndarray, np.ndarray]:
    """conj(Y_lm) at the profile's bin centres [n_lm, bins], and each bin's solid angle."""
    polar = (np.arange(N_POLAR) + 0.5) * np.pi / N_POLAR
    azimuth = (np.arange(N_AZIMUTH) + 0.5) * 2.0 * np.pi / N_AZIMUTH - np.pi
    theta, phi = (g.ravel() for g in np.meshgrid(polar, azimuth, indexing="ij"))
    rows = [
        np.conj(sph_harm_y(n, m, theta, phi))
        for n in range(SH_DEGREES + 1)
        for m in range(-n, n + 1)
    ]
    return np.array(rows), _solid_angles().ravel()
