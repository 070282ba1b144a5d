"""app.explanations.drawing: real LIDC outlines drawn as SVG small multiples."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from app.explanations import drawing
from model.outline import NoduleOutline, SliceOutline

SVG = "{http://www.w3.org/2000/svg}"


def parse(markup) -> ET.Element:
    return ET.fromstring(str(markup))


def path_xy(d: str) -> np.ndarray:
    return np.array(re.findall(r"(-?[\d.]+) (-?[\d.]+)", d), dtype=float)


def real_outlines(lidc_small, n=12):
    ids = list(lidc_small.cases["case_id"])[:n]
    return [lidc_small.outlines.get(c) for c in ids]


def square(x0, y0, side):
    return np.array([[x0, y0], [x0 + side, y0], [x0 + side, y0 + side], [x0, y0 + side]], float)


def test_one_panel_per_slice_and_one_path_per_contour(lidc_small):
    for outline in real_outlines(lidc_small):
        drawn = drawing.draw_outline(outline, max_panels=100)
        svg = parse(drawn.svg)
        panels = svg.findall(f"{SVG}g[@class='panel']")
        assert len(panels) == len(outline.slices) == drawn.slices_shown
        zs = [float(p.get("data-z-mm")) for p in panels]
        assert zs == sorted(zs)
        for panel, s in zip(panels, outline.slices, strict=True):
            assert len(panel.findall(f"{SVG}path")) == len(s.contours)
            assert all(p.get("fill-rule") == "evenodd" for p in panel.findall(f"{SVG}path"))
            assert f"z {s.z_mm:.1f}" == panel.find(f"{SVG}text").text


def test_every_panel_shares_one_mm_scale(lidc_small):
    for outline in real_outlines(lidc_small):
        drawn = drawing.draw_outline(outline, panel=96, max_panels=100)
        svg = parse(drawn.svg)
        k = float(svg.get("data-units-per-mm"))
        x0, y0, x1, y1 = outline.bounds_mm()
        across = max(x1 - x0, y1 - y0)
        assert k == pytest.approx(96 / (max(across, 1.0) * drawing.MARGIN), rel=1e-5)
        assert drawn.across_mm == pytest.approx(across)
        assert f"{across:.1f} mm across" in svg.find(f"{SVG}title").text
        scale = svg.find(f"{SVG}g[@class='scale']")
        mm = int(scale.get("data-mm"))
        assert float(scale.find(f"{SVG}rect").get("width")) == pytest.approx(mm * k, abs=0.06)
        assert scale.find(f"{SVG}text").text == f"{mm} mm"
        # a contour's drawn width is its width in mm at that scale, and it stays in its panel
        for panel, s in zip(svg.findall(f"{SVG}g[@class='panel']"), outline.slices, strict=True):
            frame = panel.find(f"{SVG}rect")
            fx, fy = float(frame.get("x")), float(frame.get("y"))
            for path, contour in zip(panel.findall(f"{SVG}path"), s.contours, strict=True):
                xy = path_xy(path.get("d"))
                if len(contour) <= drawing.MAX_POINTS_PER_PATH:
                    np.testing.assert_allclose(np.ptp(xy, 0), np.ptp(contour, 0) * k, atol=0.11)
                assert (xy[:, 0] >= fx - 0.1).all() and (xy[:, 0] <= fx + 96.1).all()
                assert (xy[:, 1] >= fy - 0.1).all() and (xy[:, 1] <= fy + 96.1).all()


def test_long_nodules_are_capped_and_say_so():
    slices = tuple(SliceOutline(float(z), (square(0, 0, 5 + z % 3),)) for z in range(40))
    outline = NoduleOutline(slices, 1.0)
    drawn = drawing.draw_outline(outline, max_panels=16)
    panels = parse(drawn.svg).findall(f"{SVG}g[@class='panel']")
    assert drawn.slices_total == 40 and drawn.slices_shown == len(panels) == 16
    assert int(panels[0].get("data-slice")) == 0
    assert int(panels[-1].get("data-slice")) == 39
    assert "on 40 slices" in drawn.label and "16 of them shown" in drawn.label
    middle = drawing.draw_outline(outline, max_panels=5, middle=True)
    picked = [
        int(p.get("data-slice")) for p in parse(middle.svg).findall(f"{SVG}g[@class='panel']")
    ]
    assert picked == [17, 18, 19, 20, 21]


def test_points_per_path_are_capped():
    t = np.linspace(0, 2 * np.pi, 5000, endpoint=False)
    circle = np.column_stack([10 * np.cos(t), 10 * np.sin(t)])
    drawn = drawing.draw_outline(NoduleOutline((SliceOutline(0.0, (circle,)),), 1.0))
    (path,) = parse(drawn.svg).iter(f"{SVG}path")
    assert len(path_xy(path.get("d"))) == drawing.MAX_POINTS_PER_PATH


def test_holes_go_in_the_path_of_their_contour():
    s = SliceOutline(0.0, (square(0, 0, 10), square(20, 0, 4)), (square(3, 3, 2),))
    drawn = drawing.draw_outline(NoduleOutline((s,), 1.0))
    paths = [p.get("d") for p in parse(drawn.svg).iter(f"{SVG}path")]
    assert [d.count("M") for d in paths] == [2, 1]


def test_text_is_escaped_and_only_numbers_reach_coordinates(lidc_small):
    outline = real_outlines(lidc_small, 1)[0]
    evil = '<script>alert(1)</script>" onload="x'
    evidence = {0: drawing.SliceEvidence(0.5, evil)}
    drawn = drawing.draw_outline(outline, subject=evil, evidence=evidence)
    text = str(drawn.svg)
    assert "<script" not in text and 'onload="' not in text and "style=" not in text
    parse(drawn.svg)  # well-formed
    for d in re.findall(r' d="([^"]*)"', text):
        assert re.fullmatch(r"[MLZ0-9. -]+", d)
    with pytest.raises(ValueError):
        drawing._n(float("nan"))


def test_json_round_trip_draws_the_same_and_junk_draws_nothing(lidc_small):
    outline = real_outlines(lidc_small, 1)[0]
    assert (
        drawing.draw_outline(outline.to_json(decimals=6)).svg == drawing.draw_outline(outline).svg
    )
    for junk in (None, {}, {"slices": "x"}, {"slices": [{"z_mm": "a", "contours": []}]}):
        assert drawing.draw_outline(junk) is None
    bad = {"slices": [{"z_mm": 0, "contours": [[[0, 0], [1, float("nan")], [1, 1], [0, 1]]]}]}
    assert "nan" not in str(drawing.draw_outline(bad).svg).lower()
