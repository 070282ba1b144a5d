"""The requests' hot path (app.hot_path): caller lookups and explanations share a few threads."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
from sqlalchemy import select
from support.databases import fresh_database
from support.http import add_user, bearer, post_json
from support.inputs import case
from support.servers import running_server, service_settings

from app import migrate, registry
from app.hot_path import usable_cores
from app.main import create_app
from app.tables import AuditEvent, Explanation


def test_the_hot_path_has_as_many_threads_as_usable_cores_unless_told(tmp_path):
    url = f"sqlite:///{tmp_path / 'clipmed.db'}"
    assert create_app(service_settings(tmp_path, url)).state.hot_path.total_tokens == (
        usable_cores()
    )
    app = create_app(service_settings(tmp_path, url, request_threads=3))
    assert app.state.hot_path.total_tokens == 3


def test_one_thread_serves_many_clients_each_explanation_with_its_audit_row(
    tmp_path, small_checkpoints
):
    """Every request takes the hot path twice (its caller, then its case) and never holds it
    while waiting for it: one thread, sixteen clients, no request stuck or refused."""
    with fresh_database("sqlite", tmp_path) as url:
        migrate.upgrade(url)
        app = create_app(service_settings(tmp_path, url, request_threads=1))
        with app.state.sessions() as session:
            row = registry.register_checkpoint(session, small_checkpoints.first)
            registry.activate_version(session, row.version)
        token = add_user(app.state.sessions, "clin", "clinician")
        with running_server(app) as base_url:

            def explain(i: int) -> tuple[int, str, str]:
                request_id = f"hot-path-{i}"
                headers = bearer(token) | {"X-Request-ID": request_id}
                with httpx.Client(base_url=base_url, timeout=60, headers=headers) as client:
                    r = post_json(client, case(3 + i % 4).tolist())
                    listed = client.get("/api/v1/explanations", params={"limit": 1})
                    assert listed.status_code == 200
                return r.status_code, r.json().get("id", r.text), request_id

            with ThreadPoolExecutor(16) as pool:
                answers = list(pool.map(explain, range(48)))
        assert {status for status, _, _ in answers} == {201}
        with app.state.sessions() as session:
            stored = set(session.scalars(select(Explanation.id)))
            events = {
                (e.target_id, e.request_id, e.actor)
                for e in session.scalars(
                    select(AuditEvent).where(AuditEvent.action == "explanation.create")
                )
            }
        app.state.engine.dispose()
    assert stored == {explanation_id for _, explanation_id, _ in answers}
    assert events == {(explanation_id, rid, "clin") for _, explanation_id, rid in answers}
