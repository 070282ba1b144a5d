"""A nodule's outline: per slice, its contours and holes in millimetres in the patient frame.

This is the form LIDC readers and RTSTRUCT use, and the one the service accepts as "contours
JSON", stores with each explanation and draws::

    {"slice_thickness_mm": 2.5, "pixel_spacing_mm": 0.7,
     "slices": [{"z_mm": -120.0, "contours": [[[x_mm, y_mm], ...], ...],
                 "holes": [[[x_mm, y_mm], ...]]}, ...]}

:func:`parse_outline` validates such a document and names what is wrong with it;
:class:`OutlineStore` packs the outlines of many cases into a few flat arrays (a cohort's or a
checkpoint's ``outlines.npz``), so one case's outline is a slice of them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import shapely
from shapely.geometry import Polygon

from model.validation import MAX_SLICES_PER_CASE, InputError

# Rasterisation grid for contours that do not say theirs: the median pixel spacing of the
# 1,018 LIDC-IDRI scans (0.70 mm; range 0.46-0.98).
DEFAULT_PIXEL_SPACING_MM = 0.7
MAX_POINTS_PER_CONTOUR = 10_000  # a traced 100 mm outline at 0.1 mm has ~3,000
MAX_CONTOURS_PER_SLICE = 64
MAX_SLICE_EXTENT_PX = 512  # a slice's outline box on the rasterisation grid, per side
MAX_COORDINATE_MM = 10_000.0  # the patient frame is a few hundred mm across
SPACING_RANGE_MM = (0.01, 50.0)  # pixel spacing and slice thickness
# A contour whose loops of opposite orientation (a figure of eight) enclose more than this
# share of its area crosses itself. Traced outlines touch themselves where the tracing doubles
# back on a pixel edge (1,468 of LIDC's 41,406 contours), which encloses nothing: allowed.
SELF_CROSSING_SHARE = 0.1


@dataclass(frozen=True)
class SliceOutline:
    z_mm: float
    contours: tuple[np.ndarray, ...]  # float64 [n, 2] (x_mm, y_mm) each, outer boundaries
    holes: tuple[np.ndarray, ...] = ()  # float64 [n, 2] each, regions cut out of the contours


@dataclass(frozen=True)
class NoduleOutline:
    slices: tuple[SliceOutline, ...]  # ascending z
    slice_thickness_mm: float
    pixel_spacing_mm: float = DEFAULT_PIXEL_SPACING_MM  # the grid the contours are measured on

    def to_json(self, decimals: int = 3) -> dict:
        def points(xy: np.ndarray) -> list[list[float]]:
            return np.round(xy, decimals).tolist()

        return {
            "slice_thickness_mm": self.slice_thickness_mm,
            "pixel_spacing_mm": self.pixel_spacing_mm,
            "slices": [
                {
                    "z_mm": s.z_mm,
                    "contours": [points(c) for c in s.contours],
                    **({"holes": [points(h) for h in s.holes]} if s.holes else {}),
                }
                for s in self.slices
            ],
        }

    def bounds_mm(self) -> tuple[float, float, float, float]:
        """(x_min, y_min, x_max, y_max) over every slice."""
        allxy = np.vstack([c for s in self.slices for c in s.contours])
        (x0, y0), (x1, y1) = allxy.min(0), allxy.max(0)
        return float(x0), float(y0), float(x1), float(y1)


# --- parsing and validation -------------------------------------------------------------------
def parse_outline(payload: object, max_slices: int = MAX_SLICES_PER_CASE) -> NoduleOutline:
    """A contours document (already decoded from JSON) as a validated NoduleOutline.

    Refused, with a message naming the place: a missing or non-positive thickness or spacing,
    no slices, two slices at one z, a contour of fewer than 3 distinct points, one of zero
    area or one that crosses itself, a hole outside every contour of its slice, a slice wider
    than the rasterisation grid allows.
    """
    if not isinstance(payload, Mapping):
        raise InputError("contours JSON must be an object with 'slice_thickness_mm' and 'slices'")
    unknown = sorted(set(payload) - {"slice_thickness_mm", "pixel_spacing_mm", "slices"})
    if unknown:
        raise InputError(f"contours JSON: unknown key(s) {', '.join(map(repr, unknown[:5]))}")
    thickness = _spacing(payload.get("slice_thickness_mm"), "slice_thickness_mm")
    raw_spacing = payload.get("pixel_spacing_mm")
    spacing = (
        DEFAULT_PIXEL_SPACING_MM
        if raw_spacing is None
        else _spacing(raw_spacing, "pixel_spacing_mm")
    )
    slices = payload.get("slices")
    if not isinstance(slices, list) or not slices:
        raise InputError("contours JSON: 'slices' must be a non-empty list of slices")
    if len(slices) > max_slices:
        raise InputError(
            f"contours JSON has {len(slices)} slices; at most {max_slices} are accepted per case"
        )
    parsed = [_parse_slice(s, i, spacing) for i, s in enumerate(slices)]
    parsed.sort(key=lambda s: s.z_mm)
    for a, b in zip(parsed, parsed[1:], strict=False):
        if a.z_mm == b.z_mm:
            raise InputError(
                f"contours JSON: two slices at z_mm={a.z_mm:g}; put all contours of one slice "
                "in one entry"
            )
    return NoduleOutline(tuple(parsed), thickness, spacing)


def _spacing(value: object, name: str) -> float:
    if value is None:
        raise InputError(f"contours JSON: '{name}' is missing (millimetres, > 0)")
    number = _number(value, name)
    low, high = SPACING_RANGE_MM
    if not low <= number <= high:
        raise InputError(f"{name} must be between {low} and {high} mm, got {number:g}")
    return number


def _number(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(f"{where} must be a number, got {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number):
        raise InputError(f"{where} must be finite, got {number}")
    return number


def _parse_slice(raw: object, index: int, spacing: float) -> SliceOutline:
    where = f"slices[{index}]"
    if not isinstance(raw, Mapping):
        raise InputError(f"{where} must be an object with 'z_mm' and 'contours'")
    unknown = sorted(set(raw) - {"z_mm", "contours", "holes"})
    if unknown:
        raise InputError(f"{where}: unknown key(s) {', '.join(map(repr, unknown[:5]))}")
    if "z_mm" not in raw:
        raise InputError(f"{where}.z_mm is missing")
    z = _number(raw["z_mm"], f"{where}.z_mm")
    if abs(z) > MAX_COORDINATE_MM:
        raise InputError(f"{where}.z_mm={z:g} is outside ±{MAX_COORDINATE_MM:g} mm")
    contours = _polygons(raw.get("contours"), f"{where}.contours", required=True)
    holes = _polygons(raw.get("holes", []), f"{where}.holes", required=False)
    shapes = [Polygon(c) for c in contours]
    for j, hole in enumerate(holes):
        if not any(shape.covers(Polygon(hole).representative_point()) for shape in shapes):
            raise InputError(f"{where}.holes[{j}] lies outside every contour of its slice")
    allxy = np.vstack(contours)
    extent = (allxy.max(0) - allxy.min(0)) / spacing
    if extent.max() > MAX_SLICE_EXTENT_PX:
        raise InputError(
            f"{where}: the contours span {extent.max() * spacing:.1f} mm, "
            f"{extent.max():.0f} pixels at {spacing:g} mm; at most {MAX_SLICE_EXTENT_PX} pixels "
            "(is this one nodule, in millimetres?)"
        )
    return SliceOutline(z, tuple(contours), tuple(holes))


def _polygons(raw: object, where: str, required: bool) -> list[np.ndarray]:
    if not isinstance(raw, list) or (required and not raw):
        need = "a non-empty list" if required else "a list"
        raise InputError(f"{where} must be {need} of contours, each a list of [x_mm, y_mm]")
    if len(raw) > MAX_CONTOURS_PER_SLICE:
        raise InputError(f"{where} has {len(raw)} contours; at most {MAX_CONTOURS_PER_SLICE}")
    return [_polygon(c, f"{where}[{j}]") for j, c in enumerate(raw)]


def _polygon(raw: object, where: str) -> np.ndarray:
    if not isinstance(raw, list):
        raise InputError(f"{where} must be a list of [x_mm, y_mm] points")
    if len(raw) > MAX_POINTS_PER_CONTOUR:
        raise InputError(f"{where} has {len(raw)} points; at most {MAX_POINTS_PER_CONTOUR}")
    # the fast check of every point at once; the point-by-point one only to name what is wrong
    pairs = all(type(p) is list and len(p) == 2 for p in raw)
    xy = None
    if pairs and {type(v) for p in raw for v in p} <= {int, float}:
        xy = np.asarray(raw, np.float64).reshape(-1, 2)
    if xy is None or not np.isfinite(xy).all():
        for i, p in enumerate(raw):
            if not (isinstance(p, list) and len(p) == 2):
                raise InputError(f"{where}[{i}] must be a point [x_mm, y_mm]")
            _number(p[0], f"{where}[{i}][0]")
            _number(p[1], f"{where}[{i}][1]")
        xy = np.asarray(raw, np.float64).reshape(-1, 2)
    if np.abs(xy).max(initial=0.0) > MAX_COORDINATE_MM:
        raise InputError(f"{where}: a point lies outside ±{MAX_COORDINATE_MM:g} mm")
    distinct = len(np.unique(np.ascontiguousarray(xy).view(np.complex128)))  # x + iy
    if distinct < 3:
        raise InputError(f"{where} has {distinct} distinct point(s); a contour needs at least 3")
    signed = abs(_shoelace(xy))
    simple = shapely.LinearRing(xy).is_simple
    enclosed = signed if simple else shapely.make_valid(Polygon(xy)).area
    if enclosed <= 1e-9 * max(float(np.ptp(xy, axis=0).max()), 1.0) ** 2:
        raise InputError(f"{where} encloses zero area (its points are collinear)")
    if not simple and enclosed - signed > SELF_CROSSING_SHARE * enclosed:
        raise InputError(
            f"{where} crosses itself (a figure of eight); draw each part as its own contour"
        )
    return xy


def _shoelace(xy: np.ndarray) -> float:
    x, y = xy[:, 0], xy[:, 1]
    return 0.5 * float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))


# --- many cases' outlines, packed -------------------------------------------------------------
@dataclass
class OutlineStore:
    """The outlines of many cases in flat arrays (saved as one ``outlines.npz``).

    A case owns slices ``case_slices[i]:case_slices[i + 1]``; a slice owns contours
    ``slice_contours[s]:slice_contours[s + 1]``; a contour owns points
    ``contour_points[c]:contour_points[c + 1]`` of ``points`` (float32 mm).
    """

    case_ids: np.ndarray  # str [cases]
    thickness: np.ndarray  # float64 [cases]
    spacing: np.ndarray  # float64 [cases]: the grid, exact (every mm feature scales with it)
    case_slices: np.ndarray  # int64 [cases + 1]
    slice_z: np.ndarray  # float64 [slices]
    slice_contours: np.ndarray  # int64 [slices + 1]
    contour_hole: np.ndarray  # bool [contours]
    contour_points: np.ndarray  # int64 [contours + 1]
    points: np.ndarray  # float32 [points, 2]

    def __post_init__(self) -> None:
        self._row = {str(c): i for i, c in enumerate(self.case_ids)}

    def __len__(self) -> int:
        return len(self.case_ids)

    def __contains__(self, case_id: object) -> bool:
        return case_id in self._row

    def get(self, case_id: str) -> NoduleOutline | None:
        i = self._row.get(case_id)
        if i is None:
            return None
        slices = []
        for s in range(self.case_slices[i], self.case_slices[i + 1]):
            contours: list[np.ndarray] = []
            holes: list[np.ndarray] = []
            for c in range(self.slice_contours[s], self.slice_contours[s + 1]):
                xy = self.points[self.contour_points[c] : self.contour_points[c + 1]]
                (holes if self.contour_hole[c] else contours).append(xy.astype(np.float64))
            slices.append(SliceOutline(float(self.slice_z[s]), tuple(contours), tuple(holes)))
        return NoduleOutline(tuple(slices), float(self.thickness[i]), float(self.spacing[i]))

    @classmethod
    def build(cls, outlines: Mapping[str, NoduleOutline]) -> OutlineStore:
        case_slices, slice_z, slice_contours, hole, contour_points = [0], [], [0], [], [0]
        points: list[np.ndarray] = []
        for outline in outlines.values():
            for s in outline.slices:
                slice_z.append(s.z_mm)
                for xy, is_hole in [(c, False) for c in s.contours] + [(h, True) for h in s.holes]:
                    points.append(np.asarray(xy, np.float32))
                    hole.append(is_hole)
                    contour_points.append(contour_points[-1] + len(xy))
                slice_contours.append(len(hole))
            case_slices.append(len(slice_z))
        values = list(outlines.values())
        return cls(
            np.asarray(list(outlines), dtype=str),
            np.asarray([o.slice_thickness_mm for o in values], np.float64),
            np.asarray([o.pixel_spacing_mm for o in values], np.float64),
            np.asarray(case_slices, np.int64),
            np.asarray(slice_z, np.float64),
            np.asarray(slice_contours, np.int64),
            np.asarray(hole, bool),
            np.asarray(contour_points, np.int64),
            np.vstack(points) if points else np.zeros((0, 2), np.float32),
        )

    def subset(self, case_ids: Sequence[str]) -> OutlineStore:
        """The outlines of those of `case_ids` that have one."""
        return OutlineStore.build(
            {c: outline for c in case_ids if (outline := self.get(c)) is not None}
        )

    def save(self, path: Path) -> None:
        np.savez_compressed(
            path,
            case_ids=self.case_ids.astype(str),
            thickness=self.thickness,
            spacing=self.spacing,
            case_slices=self.case_slices,
            slice_z=self.slice_z,
            slice_contours=self.slice_contours,
            contour_hole=self.contour_hole,
            contour_points=self.contour_points,
            points=self.points,
        )

    @classmethod
    def load(cls, path: Path) -> OutlineStore:
        with np.load(path, allow_pickle=False) as f:
            return cls(**{name: f[name] for name in f.files})
