"""The clinician's screen in a real browser: Debian's chromium, driven by Playwright."""

from __future__ import annotations

import csv
import io
import re
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from support.browser import launched_chromium, log_in, needs_chromium
from support.checkpoints import FEATURE_DIM
from support.inputs import unseen_case

SCREENSHOT = Path("/tmp/ui_results.png")

pytestmark = [
    needs_chromium,
    # One database is enough here: the HTTP tests cover both.
    pytest.mark.parametrize("service", ["sqlite"], indirect=True),
]


@pytest.fixture(scope="module")
def browser() -> Iterator:
    with launched_chromium() as chromium:
        yield chromium


@pytest.fixture
def page(browser, service):
    context = browser.new_context(base_url=service.url, viewport={"width": 1200, "height": 900})
    context.set_default_timeout(15_000)
    tab = context.new_page()
    log_in(tab, "admin")
    yield tab
    context.close()


def test_upload_shows_the_ranked_texts_and_scores(page, service, client, tmp_path):
    case = tmp_path / "held-out-case.npy"
    np.save(case, unseen_case())
    page.goto("/")
    page.set_input_files("input[type=file]", str(case))
    page.fill("#k", "3")
    page.click("form#upload button[type=submit]")

    items = page.locator("#result .text-item")
    items.first.wait_for()
    page.wait_for_url(re.compile(r"/explanations/[0-9a-f-]{36}$"))  # htmx pushed the URL
    explanation_id = page.url.rsplit("/", 1)[1]
    stored = client.get(f"/api/v1/explanations/{explanation_id}").json()["explanation"]

    assert items.count() == 3
    texts = page.locator("#result .text-item .text").all_inner_texts()
    scores = page.locator("#result .text-item .score").all_inner_texts()
    assert texts == [t["text"] for t in stored["texts"]]
    assert scores == [f"{t['similarity']:.3f}" for t in stored["texts"]]
    assert page.get_by_text("Research use only — not for diagnosis").first.is_visible()
    assert page.locator(".banner.simulated").is_visible()
    assert page.locator("#result #flag-form").is_visible()  # flag where you look

    page.goto(f"/explanations/{explanation_id}")  # the full page, as a reload shows it
    page.locator("#explanation").wait_for()
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    assert SCREENSHOT.stat().st_size > 10_000


def test_malformed_upload_shows_the_error(page, client, tmp_path):
    bad = tmp_path / "wrong-dimension.npy"
    np.save(bad, np.ones((3, FEATURE_DIM + 2)))
    expected = client.post(
        "/api/v1/explanations", files={"file": (bad.name, bad.read_bytes())}
    ).json()["detail"]

    page.goto("/")
    page.set_input_files("input[type=file]", str(bad))
    page.click("form#upload button[type=submit]")
    alert = page.locator("#result [role=alert] .error-message")
    alert.wait_for()
    assert alert.inner_text() == expected
    assert page.locator("#result .text-item").count() == 0


IN_VIEW_AND_FOCUSED = """(selector) => {
  const el = document.querySelector(selector);
  const box = el.getBoundingClientRect();
  return {
    focused: document.activeElement === el,
    // a pixel's slack: the page scrolls by whole pixels, the layout has fractional ones
    inView: box.top > -1 && box.top < window.innerHeight,
    scrolled: window.scrollY > 0,
  };
}"""


def test_on_a_phone_the_result_or_the_error_scrolls_into_view_and_takes_focus(
    browser, service, tmp_path
):
    """The form fills a phone's screen: pressing Explain must visibly lead somewhere."""
    from playwright.sync_api import expect

    context = browser.new_context(base_url=service.url, viewport={"width": 390, "height": 640})
    context.set_default_timeout(15_000)
    tab = context.new_page()
    try:
        log_in(tab, "clinician")
        bad = tmp_path / "wrong-dimension.npy"
        np.save(bad, np.ones((3, FEATURE_DIM + 2)))
        tab.set_input_files("input[type=file]", str(bad))
        tab.click("form#upload button[type=submit]")
        tab.locator("#result [role=alert]").wait_for()
        alert = "#result [role=alert]"
        expect(tab.locator(alert)).to_be_focused()
        state = tab.evaluate(IN_VIEW_AND_FOCUSED, alert)
        assert state == {"focused": True, "inView": True, "scrolled": True}
        assert tab.locator(f"{alert} h2").inner_text() == "This input cannot be used"

        tab.evaluate("window.scrollTo(0, 0)")
        good = tmp_path / "case.npy"
        np.save(good, unseen_case())
        tab.set_input_files("input[type=file]", str(good))
        tab.click("form#upload button[type=submit]")
        title = "#result #explanation-title"
        tab.locator(title).wait_for()
        expect(tab.locator(title)).to_be_focused()
        assert tab.evaluate(IN_VIEW_AND_FOCUSED, title) == {
            "focused": True,
            "inView": True,
            "scrolled": True,
        }
    finally:
        context.close()


def test_clicking_an_example_explains_it(page, service):
    folder = service.app.state.settings.data_dir / "examples"
    folder.mkdir(exist_ok=True)
    np.save(folder / "LIDC-BROWSER-0002-n1.npy", unseen_case(seed=5))
    page.goto("/")
    page.fill("#k", "2")
    page.get_by_role("button", name="LIDC-BROWSER-0002-n1.npy").click()
    page.locator("#result .text-item").first.wait_for()
    assert page.locator("#result .text-item").count() == 2


def test_radiologist_flags_a_field_and_an_admin_accepts_it(browser, service, client):
    from support.http import post_json
    from support.inputs import case

    from app import registry

    created = post_json(client, case().tolist(), k=3).json()
    field = created["explanation"]["fields"][0]["field"]
    with service.session() as session:
        code, label = list(registry.field_values(session, created["model_version"])[field].items())[
            -1
        ]

    def session_as(username: str):
        context = browser.new_context(base_url=service.url)
        context.set_default_timeout(15_000)
        tab = context.new_page()
        log_in(tab, username)
        return context, tab

    context, tab = session_as("radiologist")
    try:
        tab.goto(f"/explanations/{created['id']}")
        tab.select_option("#flag-target", f"field:{field}")
        tab.select_option("#flag-reason", "wrong_value")
        # the correct value is picked by its label from the field's valid values
        tab.select_option("#flag-value", label=label)
        tab.fill("#flag-comment", "margin is spiculated on slice 2")
        tab.click("#flag-form button[type=submit]")
        tab.wait_for_url(re.compile(rf"/explanations/{created['id']}$"))
    finally:
        context.close()

    context, tab = session_as("admin")
    try:
        tab.goto("/review")
        row = tab.locator("tr.flag", has_text="margin is spiculated on slice 2")
        row.locator("input[name=note]").fill("agreed")
        row.get_by_role("button", name="Accept").click()
        tab.wait_for_url(re.compile(r"/review$"))
        gone = tab.locator("tr.flag", has_text="margin is spiculated on slice 2")
        assert gone.count() == 0  # not open
    finally:
        context.close()

    exported = client.get("/api/v1/corrections").json()
    assert {(row["explanation_id"], row["field"], row["corrected_value"]) for row in exported} >= {
        (created["id"], field, code)
    }


def test_pages_and_the_api_viewer_run_under_the_content_security_policy(page, service):
    refused = []
    page.on(
        "console",
        lambda message: (
            refused.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )
    for path in ("/", "/explanations", "/models", "/review", "/admin/jobs", "/admin/audit"):
        page.goto(path)
        page.locator("main#main").wait_for()
    # Swagger UI from the app's own files, started by a static script, lists the operations
    page.goto("/docs")
    operations = page.locator(".opblock")
    operations.first.wait_for()
    assert operations.count() >= 10
    assert page.get_by_text("/api/v1/explanations").first.is_visible()
    assert refused == []


def test_the_audit_export_follows_the_filter_htmx_swapped_in(page, client_as):
    page.goto("/admin/audit")
    assert page.get_attribute("#audit-export", "href") == "/admin/audit.csv"
    page.fill("#f-action", "login")
    page.fill("#f-outcome", "success")
    page.click("#audit-filter button[type=submit]")
    page.wait_for_url(re.compile(r"/admin/audit\?.*action=login"))  # htmx pushed the filters
    export = page.locator("#audit-export[href*='action=login']")
    export.wait_for()
    href = export.get_attribute("href")
    assert href == "/admin/audit.csv?action=login&outcome=success"
    rows = list(csv.DictReader(io.StringIO(client_as("admin").get(href).text)))
    assert rows and all(r["action"] == "login" and r["outcome"] == "success" for r in rows)


def test_print_puts_the_explanation_on_at_most_two_a4_pages(page, service, client):
    from io import BytesIO

    from pypdf import PdfReader

    from app.explanations.service import served_answer

    body = {
        "features": unseen_case(seed=11).tolist(),
        "k": 5,
        "patient_pseudonym": "PRINT-0042",
        "study_instance_uid": "1.2.840.99.1.7",
        "nodule_label": "RUL 1",
    }
    created = client.post("/api/v1/explanations", json=body).json()
    stored = created["explanation"]
    page.goto(f"/explanations/{created['id']}")
    # the button is wired by the static script (no inline script under the CSP)
    page.evaluate("window.print = () => { window.printed = true; }")
    page.get_by_role("button", name="Print / save as PDF").click()
    assert page.evaluate("window.printed") is True

    reader = PdfReader(BytesIO(page.pdf(format="A4", print_background=True)))
    # NFKC: the PDF's text has ligatures ("ﬁ") where the page has letters
    text = unicodedata.normalize("NFKC", " ".join(p.extract_text() for p in reader.pages))
    flat = re.sub(r"\s+", "", text)
    assert 1 <= len(reader.pages) <= 2
    assert "PRINT-0042" in text and "1.2.840.99.1.7" in flat
    assert created["model_version"] in flat and created["catalog_version"] in flat
    assert re.sub(r"\s+", "", "Research use only — not for diagnosis") in flat
    for field in stored["fields"]:
        served = served_answer(field)  # the answer the screen leads with
        assert re.sub(r"\s+", "", served["label"]) in flat
        assert f"{round(100 * served['probability'])}%" in flat
    for t in stored["texts"]:
        assert re.sub(r"\s+", "", t["text"]) in flat and f"{t['similarity']:.3f}" in flat
    assert "Outlineperslice" in flat
    assert "Flag a field" not in text and "Log out" not in text  # forms and navigation stay off
