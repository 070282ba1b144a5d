"""The result page draws the uploaded nodule per slice and its similar training cases, in the
htmx fragment after an upload, on the full page and in a real browser (Debian's chromium)."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from types import SimpleNamespace

import httpx
import numpy as np
import pytest
from support.http import TEST_PASSWORD, bearer
from support.inputs import ellipsoid, held_out_read, nifti_bytes

from app.explanations import views
from app.explanations.views import NO_OUTLINE_FEATURES, NO_OUTLINE_TRAINING
from app.web import templates

HX = {"HX-Request": "true"}
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SCREENSHOT = Path("/tmp/ui_outline.png")


def case_svgs(html: str) -> list[str]:
    return re.findall(r'<svg class="outline"[^>]*>.*?</svg>', html, flags=re.S)


def similar_svgs(html: str) -> list[str]:
    return re.findall(r'<svg class="outline small"[^>]*>.*?</svg>', html, flags=re.S)


def training_outlines(service):
    return service.app.state.serving.current.checkpoint.outlines


@pytest.fixture
def pages(lidc_service):
    with httpx.Client(
        base_url=lidc_service.url, timeout=60, headers=bearer(lidc_service.tokens["clinician"])
    ) as http:
        yield http


def upload(client, filename: str, data: bytes, headers=None) -> httpx.Response:
    files = {"file": (filename, data, "application/octet-stream")}
    return client.post("/explanations", files=files, data={"k": "4"}, headers=headers)


def test_contours_upload_draws_one_panel_per_slice_and_the_similar_cases(
    pages, lidc_service, lidc_small
):
    _, document = held_out_read(lidc_small)
    fragment = upload(pages, "read.json", json.dumps(document).encode(), HX)
    assert fragment.status_code == 201, fragment.text
    full = pages.get(fragment.headers["HX-Push-Url"])
    assert full.status_code == 200
    stored = pages.get(f"/api/v1{fragment.headers['HX-Push-Url']}").json()["explanation"]
    similar = stored["similar_cases"]
    assert similar
    outlines = training_outlines(lidc_service)
    drawn = [c for c in similar if c["case_id"] in outlines]
    for html in (fragment.text, full.text):
        (case,) = case_svgs(html)
        assert case.count('<g class="panel"') == len(document["slices"])
        assert f"on {len(document['slices'])} slices" in case
        assert case.count('class="evidence"') == len(document["slices"])  # all used
        assert len(similar_svgs(html)) == len(drawn)
        assert html.count(NO_OUTLINE_TRAINING) == len(similar) - len(drawn)
        assert NO_OUTLINE_FEATURES not in html
        assert " style=" not in case + "".join(similar_svgs(html))


def test_feature_upload_says_why_there_is_no_picture(pages, lidc_small):
    buffer = io.BytesIO()
    np.save(buffer, lidc_small.slices(0))
    fragment = upload(pages, "case.npy", buffer.getvalue(), HX)
    assert fragment.status_code == 201, fragment.text
    full = pages.get(fragment.headers["HX-Push-Url"])
    for html in (fragment.text, full.text):
        assert case_svgs(html) == []
        assert NO_OUTLINE_FEATURES in html


def test_a_similar_case_without_an_outline_says_so(lidc_small):
    case = {"case_id": "SIM-0001", "patient_id": "p", "similarity": 0.5, "descriptors": {}}
    known = {**case, "case_id": str(lidc_small.cases["case_id"].iloc[0])}
    shown = views.similar_outlines([case, known], lidc_small.outlines)
    assert shown["SIM-0001"].drawing is None and shown["SIM-0001"].missing == NO_OUTLINE_TRAINING
    assert shown[known["case_id"]].drawing.slices_shown <= 5
    macro = templates.env.get_template("_outline.html").module.similar_outline
    assert NO_OUTLINE_TRAINING in str(macro(shown["SIM-0001"]))
    assert views.similar_outlines([case], None)["SIM-0001"].missing == NO_OUTLINE_TRAINING
    row = SimpleNamespace(input_kind="features", outline=None)
    assert views.case_outline(row, None).missing == NO_OUTLINE_FEATURES


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium: make chromium")
@pytest.mark.parametrize("lidc_service", ["sqlite"], indirect=True)
def test_browser_uploads_contours_and_a_nifti_mask_and_sees_the_outlines(
    lidc_service, lidc_small, tmp_path
):
    from playwright.sync_api import sync_playwright
    from pypdf import PdfReader

    _, document = held_out_read(lidc_small)
    contours = tmp_path / "read.json"
    contours.write_text(json.dumps(document))
    mask = tmp_path / "nodule.nii.gz"
    mask.write_bytes(nifti_bytes(ellipsoid()))
    outlines = training_outlines(lidc_service)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = browser.new_context(
            base_url=lidc_service.url, viewport={"width": 1200, "height": 900}
        )
        context.set_default_timeout(20_000)
        tab = context.new_page()
        try:
            tab.goto("/login")
            tab.fill("#username", "clinician")
            tab.fill("#password", TEST_PASSWORD)
            tab.click("form#login button[type=submit]")
            tab.wait_for_url(re.compile(r"/$"))
            for upload_file, n_slices in ((contours, len(document["slices"])), (mask, None)):
                tab.goto("/")
                tab.set_input_files("input[type=file]", str(upload_file))
                tab.click("form#upload button[type=submit]")
                case = tab.locator("#result svg.outline:not(.small)")
                case.wait_for()
                tab.wait_for_url(re.compile(r"/explanations/[0-9a-f-]{36}$"))
                assert case.is_visible()
                if n_slices is not None:
                    assert case.locator("g.panel").count() == n_slices
                ids = tab.locator("#result table.similar code").all_inner_texts()
                drawn = tab.locator("#result svg.outline.small")
                assert drawn.count() == sum(c in outlines for c in ids) > 0
                for i in range(drawn.count()):
                    assert drawn.nth(i).is_visible()
                # printed (or saved as PDF) straight from the result: one or two A4 pages,
                # the outline on them
                pdf = PdfReader(io.BytesIO(tab.pdf(format="A4", print_background=True)))
                printed = re.sub(r"\s+", "", " ".join(p.extract_text() for p in pdf.pages))
                assert len(pdf.pages) <= 2 and "Outlineperslice" in printed
                assert "Uploadnodulefeatures" not in printed
            tab.reload()  # the full page draws the same
            tab.locator("svg.outline:not(.small)").wait_for()
            tab.screenshot(path=str(SCREENSHOT), full_page=True)
        finally:
            context.close()
            browser.close()
