"""Every page of every role in a real browser: no sideways scrolling on a phone (390 px) or a
tablet (768 px), and no accessibility violation as axe-core sees it (none serious or critical;
the few moderate ones of Swagger UI's markup listed by name, as in the README)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support.browser import axe_violations, launched_chromium, log_in, needs_chromium
from support.http import bearer
from support.inputs import unseen_case
from support.reports import add_report_row

from app.jobs import queue

pytestmark = [needs_chromium, pytest.mark.parametrize("service", ["sqlite"], indirect=True)]

WIDTHS = (390, 768)
AXE_WIDTHS = (390, 1280)
# Violations of markup that is not ours: Swagger UI's own (on /docs only), allowed by rule id.
NOT_OURS = {"/docs": {"nested-interactive"}}
# The moderate and minor findings not fixed yet, by page, as README lists them ("Accessibility
# as a test"): a new one fails here until it is fixed or listed there.
KNOWN_MODERATE = {"/docs": {"heading-order", "region"}}

COMMON = ["/", "/explanations", "/explanations/{own}", "/models", "/docs", "/explanations/missing"]
PAGES = {
    None: ["/login"],
    "clinician": COMMON,
    "radiologist": [*COMMON, "/review"],
    "admin": [
        *COMMON,
        "/review",
        "/admin/jobs",
        "/admin/jobs/{job}",
        "/admin/reports",
        "/admin/reports/{report}",
        "/admin/reports/compare?a={report}&b={other_report}",
        "/admin/audit",
        "/admin/users",
    ],
}
CASES = [(role, path) for role, paths in PAGES.items() for path in paths]


@pytest.fixture(scope="module")
def seeded(service, report_folders) -> dict[str, dict[str, str]]:
    """Rows for every page to show: per role, its own explanation (one with a long identity and
    flags on it), a job, two evaluation reports; returns the path values per role."""
    import httpx

    own = {}
    for role, token in service.tokens.items():
        with httpx.Client(base_url=service.url, headers=bearer(token), timeout=30) as http:
            body = {
                "features": unseen_case().tolist(),
                "k": 5,
                "patient_pseudonym": f"PSEUDO-{role.upper()}-0123456789abcdef",
                "study_instance_uid": "1.2.840.113619.2.55.3.604688119.969.1268071029.320",
                "nodule_label": "right upper lobe / nodule 1",
            }
            created = http.post("/api/v1/explanations", json=body)
            assert created.status_code == 201, created.text
            own[role] = created.json()["id"]
    with httpx.Client(
        base_url=service.url, headers=bearer(service.tokens["radiologist"]), timeout=30
    ) as http:
        flag = {"text_rank": 1, "reason": "wrong_value", "comment": "a long comment " * 8}
        assert http.post(f"/api/v1/explanations/{own['admin']}/flags", json=flag).is_success
    with service.session() as session:
        job = queue.enqueue(session, "evaluate", {"cohort": "lidc", "folds": 5, "preset": "lidc"})
        job_id = job.id
    (a, a_summary), (b, b_summary) = report_folders.a, report_folders.b
    reports = [
        add_report_row(service.app.state.sessions, folder, summary, "simulated-screens", 2)
        for folder, summary in ((a, a_summary), (b, b_summary))
    ]
    common = {"job": str(job_id), "report": str(reports[0]), "other_report": str(reports[1])}
    return {role or "anonymous": common | {"own": own.get(role or "", "")} for role in PAGES}


@pytest.fixture(scope="module")
def tabs(service, seeded) -> Iterator[dict]:
    """One logged-in tab per role (and an anonymous one), reused by every page check."""
    with launched_chromium() as chromium:
        opened = {}
        for role in PAGES:
            context = chromium.new_context(base_url=service.url)
            context.set_default_timeout(20_000)
            tab = context.new_page()
            if role is not None:
                log_in(tab, role)
            opened[role] = tab
        yield opened


def visit(tab, path: str) -> None:
    tab.goto(path)
    tab.locator("main#main").wait_for()
    if path == "/docs":
        tab.locator(".opblock").first.wait_for()


@pytest.mark.parametrize(("role", "path"), CASES, ids=[f"{r}:{p}" for r, p in CASES])
def test_the_page_fits_small_screens_and_passes_axe(tabs, seeded, role, path):
    tab = tabs[role]
    url = path.format(**seeded[role or "anonymous"])
    too_wide, violations = {}, {}
    for width in sorted({*WIDTHS, *AXE_WIDTHS}):
        tab.set_viewport_size({"width": width, "height": 900})
        visit(tab, url)
        if width in WIDTHS:
            sizes = tab.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
            if sizes[0] > sizes[1]:
                too_wide[width] = sizes
        if width in AXE_WIDTHS:
            allowed = NOT_OURS.get(path, set()) | KNOWN_MODERATE.get(path, set())
            found = [v for v in axe_violations(tab) if v["id"] not in allowed]
            if found:
                violations[width] = found
    assert too_wide == {}, f"{url} scrolls sideways ([scrollWidth, innerWidth] per width)"
    assert violations == {}, f"{url}: accessibility violations not listed in the README"
