"""Structured logs: JSON lines whose request id is the response's X-Request-ID and the audit
row's, job lines that carry the job id, and `clipmed serve` logging that way itself."""

from __future__ import annotations

import io
import json
import logging
import signal
from collections.abc import Callable, Iterator

import anyio
import httpx
import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from support.http import log_in, post_json
from support.inputs import case
from support.servers import serve_process

from app import logs
from app.config import Settings
from app.db import make_engine, make_session_factory
from app.jobs import queue
from app.jobs.context import Outcome
from app.jobs.worker import Worker
from app.tables import AuditEvent


@pytest.fixture
def json_lines() -> Iterator[Callable[[], list[dict]]]:
    """Every line logged in this process at INFO and above during the test, parsed as JSON
    (which fails the test for a line that is not JSON)."""
    buffer = io.StringIO()
    handler = logs.make_handler("json", buffer)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield lambda: [json.loads(line) for line in buffer.getvalue().splitlines()]
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def audit_rows(service, request_id: str) -> list[AuditEvent]:
    with service.session() as session:
        return list(session.scalars(select(AuditEvent).where(AuditEvent.request_id == request_id)))


def test_access_lines_share_the_request_id_with_the_response_and_the_audit_trail(
    service, json_lines
):
    with httpx.Client(base_url=service.url) as browser:
        login = log_in(browser, "clinician")
    assert login.status_code == 303
    login_id = login.headers["x-request-id"]

    radiologist = httpx.Client(
        base_url=service.url, headers={"Authorization": f"Bearer {service.tokens['radiologist']}"}
    )
    with radiologist:
        explained = post_json(radiologist, case().tolist(), k=3)
        assert explained.status_code == 201
        field = explained.json()["explanation"]["fields"][0]["field"]
        sent_id = "flag-request-0001"  # a caller's own id is kept (and logged) when sane
        flagged = radiologist.post(
            f"/api/v1/explanations/{explained.json()['id']}/flags",
            json={"field": field, "reason": "other"},
            headers={"X-Request-ID": sent_id},
        )
    assert flagged.status_code == 201 and flagged.headers["x-request-id"] == sent_id

    lines = json_lines()
    access = {line["request_id"]: line for line in lines if line["logger"] == "app.access"}
    assert access[login_id]["route"] == "/login" and access[login_id]["status"] == 303
    assert "user" not in access[login_id]  # a login is not made by someone logged in yet
    flag_line = access[sent_id]
    assert flag_line["route"] == "/api/v1/explanations/{explanation_id}/flags"
    assert (flag_line["method"], flag_line["status"], flag_line["user"]) == (
        "POST",
        201,
        "radiologist",
    )
    assert flag_line["duration_ms"] >= 0 and flag_line["level"] == "INFO"
    assert {"time", "message"} <= set(flag_line)

    assert [(e.action, e.actor) for e in audit_rows(service, login_id)] == [("login", "clinician")]
    assert [(e.action, e.actor) for e in audit_rows(service, sent_id)] == [
        ("flag.create", "radiologist")
    ]


def test_bound_fields_reach_lines_logged_in_the_thread_pool():
    buffer = io.StringIO()
    logger = logging.getLogger("tests.logs.pool")
    logger.addHandler(logs.make_handler("json", buffer))
    logger.setLevel(logging.INFO)
    logger.propagate = False

    async def handle_request() -> None:
        with logs.bound(request_id="r-1"):
            await run_in_threadpool(logger.info, "in the pool")
            with logs.bound(job_id=7):
                logger.info("nested", extra={"request_id": "given"})
        logger.info("after the request")

    try:
        anyio.run(handle_request)
    finally:
        logger.handlers.clear()
    pool, nested, after = (json.loads(line) for line in buffer.getvalue().splitlines())
    assert (pool["message"], pool["request_id"]) == ("in the pool", "r-1")
    assert (nested["request_id"], nested["job_id"]) == ("given", 7)  # extra= wins
    assert "request_id" not in after and "job_id" not in after


def test_the_text_format_shows_the_fields_after_the_message():
    buffer = io.StringIO()
    logger = logging.getLogger("tests.logs.text")
    logger.addHandler(logs.make_handler("text", buffer))
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        with logs.bound(request_id="abc"):
            logger.info("hello %s", "there", extra={"status": 200})
    finally:
        logger.handlers.clear()
    line = buffer.getvalue().strip()
    assert line.endswith("INFO tests.logs.text: hello there request_id=abc status=200"), line


def test_a_workers_lines_during_a_job_carry_its_id(database, tmp_path, json_lines):
    engine = make_engine(database)
    sessions = make_session_factory(engine)

    def probe(ctx) -> Outcome:
        ctx.log("probing")
        logging.getLogger("model.train").info("deep inside the handler")
        return Outcome({"probed": True})

    try:
        with sessions() as session:
            job_id = queue.enqueue(session, "probe", {}).id
        settings = Settings(data_dir=tmp_path, database_url=database, job_poll_seconds=0.05)
        assert Worker(settings, sessions, handlers={"probe": probe}).run(max_jobs=1) == 1
    finally:
        engine.dispose()
    lines = [
        line
        for line in json_lines()
        if line["logger"] in ("app.jobs.worker", "app.jobs.context", "model.train")
    ]
    by_message = {line["message"]: line for line in lines}
    assert by_message[f"job {job_id}: probing"]["job_id"] == job_id
    assert by_message["deep inside the handler"]["job_id"] == job_id
    outside = [line for line in lines if line["message"].startswith("worker ")]
    assert outside and all("job_id" not in line for line in outside)  # started, stopped


def test_serve_writes_json_lines_with_the_request_id_of_the_audit_trail(tmp_path):
    data, log_file = tmp_path / "data", tmp_path / "serve.log"
    with serve_process(data, log_file, log_format="json") as (proc, url):
        with httpx.Client(base_url=url) as browser:
            login = log_in(browser, "admin")
        assert login.status_code == 303
        request_id = login.headers["x-request-id"]
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)

    lines = log_file.read_text().splitlines()
    assert not [line for line in lines if line.startswith(("INFO:", "WARNING:"))]  # uvicorn's
    records = [json.loads(line) for line in lines if line.startswith("{")]
    access = [r for r in records if r["logger"] == "app.access"]
    assert [(r["method"], r["route"], r["status"]) for r in access] == [
        ("GET", "/login", 200),
        ("POST", "/login", 303),
    ]
    assert access[1]["request_id"] == request_id != access[0]["request_id"]
    # the server's own lines and the shutdown are JSON too
    assert any(r["logger"] == "uvicorn.error" and "Finished" in r["message"] for r in records)

    engine = create_engine(f"sqlite:///{data / 'clipmed.db'}")
    try:
        with Session(engine) as session:
            logins = session.scalars(select(AuditEvent).where(AuditEvent.action == "login"))
            assert [(e.actor, e.request_id) for e in logins] == [("admin", request_id)]
    finally:
        engine.dispose()
