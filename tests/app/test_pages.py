"""The clinician's screen over real HTTP: full pages, htmx fragments, errors."""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime
from types import SimpleNamespace

import httpx
import numpy as np
import pytest
from markupsafe import escape
from support.checkpoints import FEATURE_DIM
from support.http import add_user, bearer
from support.inputs import unseen_case
from support.servers import MAX_UPLOAD_BYTES

from app.web import RESEARCH_NOTICE, templates

HX = {"HX-Request": "true"}


def esc(text: str) -> str:
    """As the templates escape it (markupsafe, like Jinja's autoescape)."""
    return str(escape(text))


NOTICE = esc(RESEARCH_NOTICE)


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def example(service) -> str:
    folder = service.app.state.settings.data_dir / "examples"
    folder.mkdir(exist_ok=True)
    np.save(folder / "LIDC-TEST-0001-n1.npy", unseen_case())
    return "LIDC-TEST-0001-n1.npy"


def count_explanations(client) -> int:
    return len(client.get("/api/v1/explanations", params={"limit": 200}).json())


def explain(client, data: bytes, filename: str = "case.npy", k: int = 4, headers=None):
    files = {"file": (filename, data, "application/octet-stream")}
    return client.post("/explanations", files=files, data={"k": str(k)}, headers=headers)


def test_index_is_a_full_page_with_form_notice_and_examples(client, example):
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    assert page.lstrip().startswith("<!doctype html>")
    assert NOTICE in page
    assert re.search(r'<input[^>]*type="file"', page)
    assert 'name="k"' in page
    assert example in page and "Held-out LIDC-IDRI cases" in page
    assert "/static/htmx.min.js" in page
    assert client.get("/static/htmx.min.js").status_code == 200
    assert client.get("/static/app.css").status_code == 200


def test_upload_without_js_redirects_to_the_results_page(client, service):
    response = explain(client, npy(unseen_case()), k=4)
    assert response.status_code == 303
    location = response.headers["location"]
    explanation_id = location.rsplit("/", 1)[1]
    page = client.get(location)
    assert page.status_code == 200 and page.text.lstrip().startswith("<!doctype html>")
    stored = client.get(f"/api/v1/explanations/{explanation_id}").json()
    result = stored["explanation"]

    # ranked texts, in order, with their scores
    positions = [page.text.index(esc(t["text"])) for t in result["texts"]]
    assert len(positions) == 4 and positions == sorted(positions)
    for t in result["texts"]:
        assert f"{t['similarity']:.3f}" in page.text
    # the schema's labels (codes and labels are alike in the simulated schema: see below)
    checkpoint = service.app.state.serving.current.checkpoint
    for field in checkpoint.schema.fields:
        shown = page.text.split(f'data-field="{field.name}"')[1].split("data-field=")[0]
        dist = re.findall(r'<span class="dist-label">([^<]*)</span>', shown)
        labels = [esc(v) for v in field.value_labels]
        assert dist[: len(labels)] == labels and set(dist) == set(labels)  # zero-shot (+ head)
        assert esc(field.label) in shown
    for f in result["fields"]:
        if f["vote"]["label"]:
            assert esc(f["vote"]["label"]) in page.text
    # versions, notices, slice chart, similar cases
    assert stored["model_version"] in page.text and stored["catalog_version"] in page.text
    assert NOTICE in page.text
    assert "SIMULATED" in page.text  # the small checkpoints are trained on simulated data
    assert "Slice evidence" in page.text  # the pooled-vector model has no attention
    for case in result["similar_cases"]:
        assert case["case_id"] in page.text
    assert ("Low confidence" in page.text) == result["low_confidence"]


def test_htmx_upload_returns_the_fragment_and_pushes_the_url(client):
    response = explain(client, npy(unseen_case()), headers=HX)
    assert response.status_code == 201
    assert response.headers["vary"] == "HX-Request"
    fragment = response.text
    assert "<html" not in fragment and 'id="explanation"' in fragment
    pushed = response.headers["hx-push-url"]
    assert re.fullmatch(r"/explanations/[0-9a-f-]{36}", pushed)

    full = client.get(pushed)
    again = client.get(pushed, headers=HX)
    assert "<html" in full.text and "<html" not in again.text
    assert 'id="explanation"' in full.text and 'id="explanation"' in again.text


def test_the_fragment_after_an_upload_carries_the_flag_form_for_reviewers(client_as):
    """Flag where you look: the result shown right after an upload has the flags and, for
    radiologists and admins, the flag form aimed at that explanation."""
    for role, can_flag in (("clinician", False), ("radiologist", True), ("admin", True)):
        response = explain(client_as(role), npy(unseen_case()), headers=HX)
        assert response.status_code == 201
        fragment, url = response.text, response.headers["hx-push-url"]
        assert "<html" not in fragment and 'id="flags-title"' in fragment
        assert ('id="flag-form"' in fragment) == can_flag, role
        assert (f'action="{url}/flags"' in fragment) == can_flag, role
        assert "Print / save as PDF" in fragment


@pytest.mark.parametrize(
    ("filename", "data", "status"),
    [
        ("case.npy", npy(np.ones((3, FEATURE_DIM + 1))), 422),
        ("case.csv", b"a,b,c\nx,y,z\n", 422),
        ("case.txt", b"1,2,3\n", 415),
    ],
    ids=["wrong-dimension", "csv-with-text", "unsupported-type"],
)
def test_a_malformed_upload_shows_the_api_error_and_stores_nothing(client, filename, data, status):
    before = count_explanations(client)
    api = client.post("/api/v1/explanations", files={"file": (filename, data)}, data={"k": "3"})
    assert api.status_code == status
    message = esc(api.json()["detail"])

    page = explain(client, data, filename, k=3)
    assert page.status_code == status
    assert "<html" in page.text and message in page.text and 'role="alert"' in page.text
    assert NOTICE in page.text

    fragment = explain(client, data, filename, k=3, headers=HX)
    assert fragment.status_code == status
    assert "<html" not in fragment.text and message in fragment.text
    assert count_explanations(client) == before


def test_a_too_large_upload_is_refused_with_413(client):
    before = count_explanations(client)
    data = npy(np.zeros((MAX_UPLOAD_BYTES // (8 * FEATURE_DIM) + 10, FEATURE_DIM)))
    for headers in (None, HX):
        page = explain(client, data, headers=headers)
        assert page.status_code == 413
        assert "is over the limit of" in page.text and 'role="alert"' in page.text
    assert count_explanations(client) == before


ERROR_PAGE = re.compile(
    r'<div class="error" role="alert"[^>]*>\s*'
    r'<(?P<level>h[12]) class="error-heading">(?P<heading>[^<]*)</(?P=level)>'
    r'.*?<p class="error-advice">(?P<advice>[^<]*)</p>'
    r'.*?<span class="error-message">(?P<detail>[^<]*)</span>',
    re.S,
)


@pytest.mark.parametrize(
    ("role", "method", "path", "upload", "status", "heading"),
    [
        ("clinician", "GET", "/review", None, 403, "You are not allowed to do this"),
        ("clinician", "GET", "/admin/jobs/1", None, 403, "You are not allowed to do this"),
        ("clinician", "GET", "/explanations/does-not-exist", None, 404, "Not found"),
        ("clinician", "POST", "/explanations", "too-large", 413, "The file is too large"),
        ("clinician", "POST", "/explanations", "case.txt", 415, "This type of file cannot be read"),
        ("clinician", "POST", "/explanations", "wrong-dimension", 422, "This input cannot be used"),
    ],
)
def test_an_error_page_is_headed_for_its_error_with_the_detail_beneath(
    client_as, role, method, path, upload, status, heading
):
    """A plain heading saying what kind of failure it is, what to do next in a clinician's
    words, then the service's technical message, on the page and in the htmx fragment."""
    uploads = {
        "too-large": (
            "case.npy",
            npy(np.zeros((MAX_UPLOAD_BYTES // (8 * FEATURE_DIM) + 10, FEATURE_DIM))),
        ),
        "case.txt": ("case.txt", b"1,2,3\n"),
        "wrong-dimension": ("case.npy", npy(np.ones((3, FEATURE_DIM + 1)))),
    }
    viewer = client_as(role)
    for headers in (None, HX):
        if upload:
            name, data = uploads[upload]
            response = explain(viewer, data, name, headers=headers)
        else:
            response = viewer.request(method, path, headers=headers)
        assert response.status_code == status
        shown = ERROR_PAGE.search(response.text)
        assert shown is not None, response.text
        assert shown["heading"] == heading
        # an error page's own level-one heading; an h2 under the page's h1 in #result
        assert shown["level"] == ("h1" if headers is None and not upload else "h2")
        assert shown["advice"].strip() and shown["detail"].strip()
        assert "Could not explain this case" not in response.text or path == "/explanations"


def test_out_of_range_k_is_refused_like_the_api(client):
    page = explain(client, npy(unseen_case()), k=99)
    assert page.status_code == 422
    assert "k must be between 1 and 50, got 99" in page.text


@pytest.mark.parametrize("k", ["\uff13", "\u22123", "\u00a03", "+-3", "9" * 5000])
def test_a_k_that_is_not_a_plain_integer_is_refused_on_the_pages(client, example, k):
    """The upload form and the example buttons read k as the API does (app.parsing)."""
    before = count_explanations(client)
    for page in (
        explain(client, npy(unseen_case()), k=k),
        client.post(f"/examples/{example}", data={"k": k}),
    ):
        assert page.status_code == 422, page.text
        assert "k must be" in page.text and 'role="alert"' in page.text
        assert "9" * 100 not in page.text  # the digits are not echoed back
    assert count_explanations(client) == before


def test_an_example_is_explained_with_a_click(client, example):
    response = client.post(f"/examples/{example}", data={"k": "3"})
    assert response.status_code == 303
    page = client.get(response.headers["location"])
    assert page.status_code == 200 and page.text.count('class="text-item"') == 3

    fragment = client.post(f"/examples/{example}", data={"k": "2"}, headers=HX)
    assert fragment.status_code == 201 and fragment.text.count('class="text-item"') == 2

    missing = client.post("/examples/clipmed.db", data={"k": "2"})  # in data_dir, not listed
    assert missing.status_code == 404 and "no example named" in missing.text


def test_recent_list_and_missing_explanation(client):
    created = explain(client, npy(unseen_case()), headers=HX).headers["hx-push-url"]
    listing = client.get("/explanations")
    assert listing.status_code == 200 and created in listing.text and NOTICE in listing.text
    fragment = client.get("/explanations", headers=HX)
    assert "<html" not in fragment.text and created in fragment.text

    missing = client.get("/explanations/does-not-exist")
    assert missing.status_code == 404
    assert "no explanation with id" in missing.text and NOTICE in missing.text


def test_attention_model_charts_its_slice_weights(client, service):
    service.activate(service.checkpoints.second_version[0])
    try:
        response = explain(client, npy(unseen_case()), headers=HX)
    finally:
        service.activate(service.checkpoints.first_version[0])
    assert response.status_code == 201
    assert "Slice attention" in response.text
    assert response.text.count("<rect ") == unseen_case().shape[0]
    assert service.checkpoints.second_version[0] in response.text


def test_low_confidence_is_visible_with_its_reasons(client, service):
    from app.explanations import views
    from app.explanations.service import get_explanation

    pushed = explain(client, npy(unseen_case()), headers=HX).headers["hx-push-url"]
    with service.session() as session:
        row = get_explanation(session, pushed.rsplit("/", 1)[1])
        row.result = {
            **row.result,
            "low_confidence": True,
            "low_confidence_reasons": ["best similarity 0.10 is under 0.3"],
        }
        context = views.explanation_view(session, row)
    text = templates.get_template("_explanation.html").render(context)
    assert "Low confidence" in text and "best similarity 0.10 is under 0.3" in text


def test_lidc_codes_are_shown_as_their_labels(monkeypatch):
    from app.explanations import views
    from model.datasets.lidc import ratings_schema

    schema = ratings_schema()
    mapping = {f.name: dict(zip(f.values, f.value_labels, strict=True)) for f in schema.fields}
    monkeypatch.setattr(views, "value_labels", lambda session, version: mapping)
    field = schema.fields[0]
    assert field.values[0] != field.value_labels[0]  # "1" and its human label
    n = len(field.values)
    result = {
        "simulated": False,
        "slices": {"received": 3, "used": 3, "subsampled": False},
        "texts": [],
        "fields": [
            {
                "field": field.name,
                "label": field.label,
                "vote": {"value": field.values[1], "label": field.value_labels[1], "share": 0.6},
                "top1": {"value": field.values[1], "label": field.value_labels[1]},
                "zero_shot": {code: round(1 / n, 4) for code in field.values},
            }
        ],
        "slice_attention": None,
        "slice_evidence": [{"slice": 0, "similarity": 0.5}, {"slice": 1, "similarity": 0.2}],
        "similar_cases": [],
        "low_confidence": False,
        "low_confidence_reasons": [],
    }
    row = SimpleNamespace(
        id="x" * 36,
        model_version="m1",
        catalog_version="c1",
        created_at=datetime.now(UTC),
        result=result,
    )
    text = templates.get_template("_explanation.html").render(views.explanation_view(None, row))
    dist = re.findall(r'<span class="dist-label">([^<]*)</span>', text)
    assert dist == [esc(label) for label in field.value_labels]
    assert esc(field.value_labels[1]) in text and "60% of the vote" in text
    assert "SIMULATED" not in text and "Slice evidence" in text


def test_without_an_active_model_the_page_says_so_with_503(make_server, database):
    app, url = make_server(database)
    headers = bearer(add_user(app.state.sessions, "admin", "admin"))
    with httpx.Client(base_url=url, timeout=30, headers=headers) as client:
        assert client.get("/").status_code == 200
        for headers in (None, HX):
            page = explain(client, npy(unseen_case()), headers=headers)
            assert page.status_code == 503 and "no model is active" in page.text
