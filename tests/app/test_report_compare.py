"""Two evaluation reports compared on the admin screen: real report folders written by the
project's own evaluate code, the medians read back from their metrics.csv by hand."""

from __future__ import annotations

import csv
import html
import re
import shutil
import statistics
from pathlib import Path

import pytest
from support.reports import add_report_row

pytestmark = pytest.mark.parametrize("service", ["sqlite"], indirect=True)


def medians(folder: Path) -> dict[tuple[str, str], float]:
    """(field, method) -> median macro-F1 over the folds of the report's metrics.csv."""
    scores: dict[tuple[str, str], list[float]] = {}
    with open(folder / "metrics.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row["macro_f1"]:
                scores.setdefault((row["field"], row["method"]), []).append(float(row["macro_f1"]))
    return {key: statistics.median(values) for key, values in scores.items()}


@pytest.fixture(scope="module")
def two_reports(service, report_folders) -> tuple[int, int]:
    sessions = service.app.state.sessions
    (a, a_summary), (b, b_summary) = report_folders.a, report_folders.b
    return (
        add_report_row(sessions, a, a_summary, "simulated-compare", 2),
        add_report_row(sessions, b, b_summary, "simulated-compare", 2),
    )


def test_the_comparison_shows_each_reports_medians_and_the_difference(
    client_as, report_folders, two_reports
):
    a_id, b_id = two_reports
    page = client_as("admin").get(f"/admin/reports/compare?a={a_id}&b={b_id}")
    assert page.status_code == 200, page.text
    expected_a, expected_b = medians(report_folders.a[0]), medians(report_folders.b[0])
    rows = re.findall(
        r'<tr class="compared-score" data-field="([^"]+)" data-method="([^"]+)">.*?'
        r'<td class="a">([^<]+)</td><td class="b">([^<]+)</td>\s*<td class="difference[^"]*">'
        r"([^<]+)</td>",
        page.text,
        re.S,
    )
    assert {(f, m) for f, m, *_ in rows} == set(expected_a) & set(expected_b)
    for field, method, a, b, diff in rows:
        assert float(a) == pytest.approx(expected_a[field, method], abs=5e-4)
        assert float(b) == pytest.approx(expected_b[field, method], abs=5e-4)
        shown = expected_b[field, method] - expected_a[field, method]
        assert float(diff) == pytest.approx(shown, abs=1e-3)
    # one and two epochs train different models: some medians differ
    assert any(float(d) != 0 for *_, d in rows)
    figure_url = html.unescape(re.search(r'<img src="([^"]+)"', page.text).group(1))
    figure = client_as("admin").get(figure_url)
    assert figure.status_code == 200 and figure.headers["content-type"] == "image/png"
    assert figure.content.startswith(b"\x89PNG") and len(figure.content) > 10_000


def test_the_reports_list_offers_the_comparison_form(client_as, two_reports):
    page = client_as("admin").get("/admin/reports").text
    assert "<title>Evaluation reports · CLIPMedical</title>" in page
    assert 'id="compare-form" method="get" action="/admin/reports/compare"' in page
    for report_id in two_reports:
        assert f'<option value="{report_id}"' in page


def test_other_cohorts_or_folds_are_refused_and_missing_reports_are_404(
    service, client_as, report_folders, two_reports, tmp_path
):
    a_id, _ = two_reports
    (b_folder, b_summary) = report_folders.b
    sessions = service.app.state.sessions
    other_cohort = add_report_row(sessions, b_folder, b_summary, "another-cohort", 2)
    # the same evaluation with only its first fold kept: another fold count
    one_fold = tmp_path / "one-fold"
    shutil.copytree(b_folder, one_fold)
    with open(b_folder / "metrics.csv", newline="") as f:
        rows = [row for row in csv.DictReader(f) if row["fold"] == "1"]
    with open(one_fold / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    fewer_folds = add_report_row(sessions, one_fold, b_summary, "simulated-compare", 1)
    gone = tmp_path / "gone"
    gone.mkdir()
    no_metrics = add_report_row(sessions, gone, b_summary, "simulated-compare", 2)

    admin = client_as("admin")
    for query, status, says in (
        (f"a={a_id}&b={other_cohort}", 422, "only evaluations of one cohort compare"),
        (f"a={a_id}&b={fewer_folds}", 422, "only evaluations with the same folds compare"),
        (f"a={a_id}&b=999999", 404, "no evaluation report 999999"),
        (f"a={a_id}&b={no_metrics}", 404, "has no metrics.csv"),
        (f"a={a_id}&b=x", 422, "b must be a whole number"),
        (f"a={a_id}", 422, "b must be a whole number"),
    ):
        for path in ("/admin/reports/compare", "/admin/reports/compare/figure"):
            got = admin.get(f"{path}?{query}")
            assert got.status_code == status, (path, query, got.text)
            assert says in html.unescape(got.text), (path, query)
    for role in ("clinician", "radiologist"):
        assert client_as(role).get(f"/admin/reports/compare?a={a_id}&b={a_id}").status_code == 403
