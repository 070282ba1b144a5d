"""A nodule's outline as inline SVG small multiples: one square panel per slice, in z order.

Every panel of one nodule shares one millimetre scale and one centre (the nodule's bounding
box), so the panels show the nodule growing and shrinking through its slices; a scale bar says
what the scale is. Contours are filled paths, each with the holes it contains (``evenodd``).
Long nodules show at most ``max_panels`` slices, evenly chosen (or the middle ones), and a
path keeps at most ``MAX_POINTS_PER_PATH`` of its contour's points.

Pure functions: an outline (or its JSON) in, markup out. The markup holds only numbers this
module formats and text it escapes, so it is safe to insert as is; it carries no script and
no ``style`` attribute (colours come from classes in app.css). Its words (the label, the
slices' titles) are in the language of the request being answered.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from markupsafe import Markup, escape

from app.i18n import N_, gettext, ngettext
from model.outline import NoduleOutline, SliceOutline

MAX_PANELS = 16  # a 40-slice nodule would otherwise be a wall of tiny panels
MAX_POINTS_PER_PATH = 160  # a traced LIDC contour has up to a few hundred points
MAX_COLUMNS = 8
NICE_SCALE_MM = (1, 2, 5, 10, 20, 50, 100)
LABEL_H = 14  # room above a panel for its z label
BAR_H = 18  # room below a panel for its evidence bar
GAP = 8
SCALE_H = 22  # room under the grid for the scale bar
MARGIN = 1.2  # the panel shows the nodule's extent plus 20%


@dataclass(frozen=True)
class SliceEvidence:
    fraction: float  # bar height as a share of the room under the panel, 0..1
    text: str  # what the bar says when hovered, e.g. "attention 0.214"


@dataclass(frozen=True)
class OutlineDrawing:
    svg: Markup
    label: str  # the accessible description, also the SVG's <title>
    slices_total: int
    slices_shown: int
    across_mm: float
    units_per_mm: float


def outline_from_json(document: Mapping[str, Any] | None) -> NoduleOutline | None:
    """A stored outline (NoduleOutline.to_json) back as a NoduleOutline; None when it is
    missing or unreadable. Lenient on purpose: drawing must never fail a page."""
    if not document:
        return None
    try:
        slices = []
        for s in document["slices"]:
            contours = tuple(_points(c) for c in s.get("contours", []))
            holes = tuple(_points(h) for h in s.get("holes", []))
            contours = tuple(c for c in contours if len(c) >= 3)
            if contours:
                slices.append(SliceOutline(float(s["z_mm"]), contours, holes))
        slices.sort(key=lambda s: s.z_mm)
        thickness = float(document.get("slice_thickness_mm") or 1.0)
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    if not slices or not math.isfinite(thickness):
        return None
    return NoduleOutline(tuple(slices), thickness)


def _points(raw: object) -> np.ndarray:
    xy = np.asarray(raw, dtype=np.float64).reshape(-1, 2)
    return xy[np.isfinite(xy).all(axis=1)]


def choose_slices(n: int, max_panels: int, middle: bool = False) -> list[int]:
    """Indices of the slices to draw: all of them up to `max_panels`, else evenly spread
    from first to last (or, with `middle`, the central run)."""
    if n <= max_panels:
        return list(range(n))
    if middle:
        start = (n - max_panels) // 2
        return list(range(start, start + max_panels))
    return sorted({int(round(i)) for i in np.linspace(0, n - 1, max_panels)})


def draw_outline(
    outline: NoduleOutline | Mapping[str, Any] | None,
    *,
    panel: int = 96,
    max_panels: int = MAX_PANELS,
    middle: bool = False,
    evidence: Mapping[int, SliceEvidence] | None = None,
    subject: str | None = None,
    css_class: str = "outline",
) -> OutlineDrawing | None:
    """Small multiples of `outline`, one `panel`-unit square per slice; None if there is
    nothing to draw. `evidence` (slice index -> bar) puts a bar under each panel that has one.
    `subject` names what is drawn in the label, translated ("the nodule" when not given).
    """
    if outline is not None and not isinstance(outline, NoduleOutline):
        outline = outline_from_json(outline)
    if outline is None or not any(s.contours for s in outline.slices):
        return None
    x0, y0, x1, y1 = outline.bounds_mm()
    across = max(x1 - x0, y1 - y0)
    extent = max(across, 1.0) * MARGIN
    k = panel / extent  # units per mm, the same in every panel
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2

    total = len(outline.slices)
    shown = choose_slices(total, max_panels, middle)
    columns = min(len(shown), MAX_COLUMNS)
    rows = math.ceil(len(shown) / columns)
    bar_h = BAR_H if evidence is not None else 0
    cell_w, cell_h = panel + GAP, LABEL_H + panel + bar_h + GAP
    width = columns * cell_w - GAP
    height = rows * cell_h + SCALE_H

    label = ngettext(
        "Outline of %(subject)s on %(num)s slice, %(across)s mm across",
        "Outline of %(subject)s on %(num)s slices, %(across)s mm across",
        total,
    ) % {"subject": subject or gettext("the nodule"), "num": total, "across": f"{across:.1f}"}
    if len(shown) < total:
        label += gettext("; %(shown)s of them shown") % {"shown": len(shown)}
    parts = [
        f'<svg class="{escape(css_class)}" viewBox="0 0 {_n(width)} {_n(height)}" '
        f'width="{_n(width)}" height="{_n(height)}" role="img" aria-label="{escape(label)}" '
        f'data-units-per-mm="{k:.6g}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(label)}</title>",
    ]
    for position, index in enumerate(shown):
        s = outline.slices[index]
        left = (position % columns) * cell_w
        top = (position // columns) * cell_h
        ox, oy = left + panel / 2 - cx * k, top + LABEL_H + panel / 2 - cy * k
        parts.append(f'<g class="panel" data-slice="{index}" data-z-mm="{s.z_mm:.6g}">')
        where = {"n": index + 1, "total": total, "z": f"{s.z_mm:.1f}"}
        title = gettext("slice %(n)s of %(total)s, z = %(z)s mm") % where
        parts.append(f"<title>{escape(title)}</title>")
        parts.append(
            f'<text class="z" x="{_n(left + panel / 2)}" y="{_n(top + LABEL_H - 3)}" '
            f'text-anchor="middle">{escape(f"z {s.z_mm:.1f}")}</text>'
        )
        parts.append(
            f'<rect class="frame" x="{_n(left)}" y="{_n(top + LABEL_H)}" '
            f'width="{_n(panel)}" height="{_n(panel)}"/>'
        )
        for d in _slice_paths(s, k, ox, oy):
            parts.append(f'<path class="shape" fill-rule="evenodd" d="{d}"/>')
        parts.append("</g>")
        if evidence is not None:
            parts.append(_evidence_bar(evidence.get(index), left, top + LABEL_H + panel, panel))
    parts.append(_scale_bar(extent, k, rows * cell_h))
    parts.append("</svg>")
    return OutlineDrawing(Markup("".join(parts)), label, total, len(shown), across, k)


def _n(value: float) -> str:
    """A coordinate as text: always a finite number, so nothing else can reach the markup."""
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"not a finite coordinate: {value}")
    return f"{value:.1f}"


def _slice_paths(s: SliceOutline, k: float, ox: float, oy: float) -> list[str]:
    """One path per contour, carrying the holes that lie inside it."""
    holes_of: list[list[np.ndarray]] = [[] for _ in s.contours]
    for hole in s.holes:
        if len(hole) < 3:
            continue
        for i, contour in enumerate(s.contours):
            if _inside(hole[0], contour):
                holes_of[i].append(hole)
                break
    return [
        "".join(_ring(ring, k, ox, oy) for ring in (contour, *holes))
        for contour, holes in zip(s.contours, holes_of, strict=True)
    ]


def _ring(xy: np.ndarray, k: float, ox: float, oy: float) -> str:
    if len(xy) > MAX_POINTS_PER_PATH:
        xy = xy[np.linspace(0, len(xy) - 1, MAX_POINTS_PER_PATH).round().astype(int)]
    points = [f"{_n(ox + x * k)} {_n(oy + y * k)}" for x, y in xy]
    return "M" + "L".join(points) + "Z"


def _inside(point: np.ndarray, polygon: np.ndarray) -> bool:
    """Even-odd ray casting: is `point` inside the closed `polygon` [n, 2]?"""
    x, y = point
    xs, ys = polygon[:, 0], polygon[:, 1]
    xj, yj = np.roll(xs, 1), np.roll(ys, 1)
    crosses = (ys > y) != (yj > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        at = (xj - xs) * (y - ys) / (yj - ys) + xs
    return bool(np.count_nonzero(crosses & (x < at)) % 2)


def _evidence_bar(bar: SliceEvidence | None, left: float, top: float, panel: float) -> str:
    room = BAR_H - 4
    if bar is None:  # a slice the model did not use (subsampled): a baseline only
        unused = escape(gettext("not used by the model"))
        return (
            f'<rect class="evidence none" x="{_n(left)}" y="{_n(top + BAR_H - 2)}" '
            f'width="{_n(panel)}" height="1"><title>{unused}</title></rect>'
        )
    h = max(1.0, min(max(bar.fraction, 0.0), 1.0) * room)
    return (
        f'<rect class="evidence" x="{_n(left + panel * 0.2)}" y="{_n(top + BAR_H - 1 - h)}" '
        f'width="{_n(panel * 0.6)}" height="{_n(h)}"><title>{escape(bar.text)}</title></rect>'
    )


def nice_scale_mm(extent_mm: float) -> int:
    """The longest round length (1, 2, 5, 10... mm) that fits in half a panel."""
    fitting = [mm for mm in NICE_SCALE_MM if mm <= extent_mm / 2]
    return fitting[-1] if fitting else NICE_SCALE_MM[0]


def _scale_bar(extent_mm: float, k: float, top: float) -> str:
    mm = nice_scale_mm(extent_mm)
    return (
        f'<g class="scale" data-mm="{mm}">'
        f'<rect x="0" y="{_n(top + 2)}" width="{_n(mm * k)}" height="3"/>'
        f'<text x="{_n(mm * k + 4)}" y="{_n(top + 8)}">{mm} mm</text></g>'
    )


# A bar's title, by the kind of chart it comes from.
BAR_TITLES = {"attention": N_("attention %(value)s"), "evidence": N_("evidence %(value)s")}


def evidence_from_bars(bars: Sequence[Any], height: float, kind: str) -> dict[int, SliceEvidence]:
    """Evidence bars keyed by slice from presenting's SliceChart bars (slice, value, height)."""
    title = gettext(BAR_TITLES[kind])
    return {
        int(b.slice): SliceEvidence(b.height / height, title % {"value": f"{b.value:.3f}"})
        for b in bars
    }
