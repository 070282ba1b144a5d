"""The audit trail: written for views, creations, logins and refusals; append-only."""

from __future__ import annotations

import csv
import io
import uuid

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from support.databases import events
from support.http import MISSING, add_user, bearer, log_in, post_json
from support.inputs import case


def test_creating_and_viewing_an_explanation_is_audited(service, client_as):
    clinician = client_as("clinician")
    clinician.headers["X-Request-ID"] = "req-create-1"
    created = post_json(clinician, case().tolist())
    del clinician.headers["X-Request-ID"]
    explanation_id = created.json()["id"]
    assert created.headers["x-request-id"] == "req-create-1"
    assert client_as("radiologist").get(f"/api/v1/explanations/{explanation_id}").is_success
    assert client_as("clinician").get(f"/api/v1/explanations/{MISSING}").status_code == 404

    made = events(service, target_id=explanation_id, action="explanation.create")
    assert [(e.actor, e.outcome, e.request_id) for e in made] == [
        ("clinician", "success", "req-create-1")
    ]
    assert made[0].model_version == service.checkpoints.first_version[0]
    assert made[0].at is not None and made[0].target_type == "explanation"
    viewed = events(service, target_id=explanation_id, action="explanation.view")
    assert [(e.actor, e.outcome) for e in viewed] == [("radiologist", "success")]
    missing = events(service, target_id=MISSING, action="explanation.view")
    assert [(e.actor, e.outcome) for e in missing][-1] == ("clinician", "not_found")


def test_another_clinicians_explanation_is_a_denied_access_answered_as_missing(service, client_as):
    """Issue 18: not logged as a view of a missing row; still a 404 like one, on the API and the
    page alike, so the id's existence is not confirmed."""
    other = f"clinician-{uuid.uuid4().hex[:8]}"
    token = add_user(service.app.state.sessions, other, "clinician")
    theirs = post_json(client_as("clinician"), case().tolist()).json()["id"]
    with httpx.Client(base_url=service.url, headers=bearer(token)) as http:
        for path in (f"/api/v1/explanations/{theirs}", f"/api/v1/explanations/{MISSING}"):
            answer = http.get(path)
            assert answer.status_code == 404
            assert answer.json()["detail"] == f"no explanation with id {path.rsplit('/')[-1]!r}"
        for path in (f"/api/v1/explanations/{theirs}/fhir", f"/explanations/{theirs}"):
            assert http.get(path).status_code == 404
    viewed = events(service, target_id=theirs, action="explanation.view")
    assert [(e.actor, e.outcome) for e in viewed] == [(other, "denied")] * 3
    missing = events(service, target_id=MISSING, action="explanation.view", actor=other)
    assert [e.outcome for e in missing] == ["not_found"]


def test_logins_and_denied_requests_are_audited(service, client_as):
    with httpx.Client(base_url=service.url) as http:
        assert log_in(http, "radiologist", "not the password").status_code == 401
        assert log_in(http, "radiologist").status_code == 303
    outcomes = [e.outcome for e in events(service, action="login", actor="radiologist")]
    assert outcomes[-2:] == ["failed", "success"]

    assert client_as(None).get("/api/v1/models").status_code == 401
    assert client_as("clinician").get("/admin/audit").status_code == 403
    denied = events(service, action="access.denied")
    assert (None, "not_authenticated", "GET /api/v1/models") in [
        (e.actor, e.outcome, e.target_id) for e in denied
    ]
    assert ("clinician", "forbidden", "GET /admin/audit") in [
        (e.actor, e.outcome, e.target_id) for e in denied
    ]


def test_admins_filter_and_export_the_trail(service, client_as):
    admin = client_as("admin")
    client_as(None).get("/api/v1/explanations")  # one denied request at least
    page = admin.get("/admin/audit", params={"action": "access.denied"})
    assert page.status_code == 200 and "access.denied" in page.text
    assert "explanation.create" not in page.text
    exported = admin.get("/admin/audit.csv", params={"action": "access.denied"})
    assert exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert rows and {row["action"] for row in rows} == {"access.denied"}
    assert set(rows[0]) == {
        "at",
        "actor",
        "action",
        "target_type",
        "target_id",
        "request_id",
        "outcome",
        "model_version",
    }


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_events SET outcome = 'x'",
        "DELETE FROM audit_events",
        "TRUNCATE audit_events",  # PostgreSQL's; SQLite has none (DELETE covers it there)
    ],
)
def test_the_database_refuses_to_change_the_trail(database, statement):
    from sqlalchemy import create_engine

    from app import audit
    from app.db import make_session_factory

    engine = create_engine(database)
    if statement.startswith("TRUNCATE") and engine.dialect.name == "sqlite":
        statement = "DELETE FROM audit_events WHERE 1"
    try:
        audit.record(make_session_factory(engine), "test.event", "success", actor="someone")
        with pytest.raises(DBAPIError, match="append-only"), engine.begin() as connection:
            connection.execute(text(statement))
        with engine.connect() as connection:
            count = connection.execute(text("SELECT count(*) FROM audit_events")).scalar()
            assert count == 1
    finally:
        engine.dispose()
