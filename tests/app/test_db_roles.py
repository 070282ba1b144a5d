"""PostgreSQL roles: the service, connected as the application role, cannot rewrite the audit
trail (app.db_roles, migration 0008). A fresh database per module, owned by a role that is not a
superuser, migrated as that owner; the statements run as the application role. Each refusal must
be PostgreSQL's privilege check (SQLSTATE 42501), not the append-only trigger behind it: with a
loosened grant these tests fail."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import Engine, create_engine, make_url, select, text
from sqlalchemy.exc import DBAPIError
from support.databases import postgres_url
from support.http import add_user, log_in
from support.servers import running_server, service_settings

from app import audit, migrate
from app.db import make_session_factory
from app.main import create_app
from app.tables import AuditEvent

INSUFFICIENT_PRIVILEGE = "42501"


@dataclass(frozen=True)
class Roles:
    owner: str
    app: str
    owner_url: str
    app_url: str


def _url(base: str, user: str, database: str) -> str:
    return make_url(base).set(username=user, database=database).render_as_string(False)


@pytest.fixture(scope="module")
def roles() -> Iterator[Roles]:
    base = postgres_url()
    suffix = uuid.uuid4().hex[:10]
    owner, app_role, database = f"harden_owner_{suffix}", f"harden_app_{suffix}", f"harden_{suffix}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f"CREATE ROLE {owner} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE"))
        connection.execute(text(f"CREATE ROLE {app_role} LOGIN NOSUPERUSER NOINHERIT"))
        connection.execute(text(f"CREATE DATABASE {database} OWNER {owner}"))
    made = Roles(owner, app_role, _url(base, owner, database), _url(base, app_role, database))
    try:
        assert migrate.upgrade(made.owner_url, app_role=app_role) is None
        yield made
    finally:
        with admin.connect() as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
            connection.execute(text(f"DROP ROLE IF EXISTS {app_role}"))
            connection.execute(text(f"DROP ROLE IF EXISTS {owner}"))
        admin.dispose()


@pytest.fixture
def as_app(roles) -> Iterator[Engine]:
    engine = create_engine(roles.app_url)
    yield engine
    engine.dispose()


@pytest.fixture
def as_owner(roles) -> Iterator[Engine]:
    engine = create_engine(roles.owner_url)
    yield engine
    engine.dispose()


def _record(engine: Engine, action: str = "test.event") -> None:
    audit.record(make_session_factory(engine), action, "success", actor="someone")


def _refused(engine: Engine, statement: str) -> DBAPIError:
    with pytest.raises(DBAPIError) as raised, engine.begin() as connection:
        connection.execute(text(statement))
    return raised.value


def test_the_app_role_inserts_and_reads_events(as_app):
    _record(as_app, "test.insert")
    with make_session_factory(as_app)() as session:
        found = session.scalars(select(AuditEvent).where(AuditEvent.action == "test.insert"))
        assert [event.outcome for event in found] == ["success"]


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_events SET outcome = 'rewritten'",
        "DELETE FROM audit_events",
        "TRUNCATE audit_events",
        "SELECT setval('audit_events_id_seq', 1)",
        "UPDATE alembic_version SET version_num = '0001'",
        "SET session_replication_role = replica",
    ],
)
def test_the_app_role_has_no_privilege_to_change_the_trail(as_app, statement):
    _record(as_app)
    error = _refused(as_app, statement)
    assert error.orig.sqlstate == INSUFFICIENT_PRIVILEGE, error
    assert "permission denied" in str(error.orig)


@pytest.mark.parametrize(
    "statement",
    [
        "ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only",
        "ALTER TABLE audit_events DISABLE TRIGGER ALL",
        "DROP TRIGGER audit_events_append_only ON audit_events",
        "DROP TRIGGER audit_events_event_time ON audit_events",
        "DROP TABLE audit_events",
        "ALTER TABLE audit_events OWNER TO CURRENT_USER",
        "ALTER TABLE audit_events ALTER COLUMN at DROP DEFAULT",
        "CREATE OR REPLACE FUNCTION audit_events_append_only() RETURNS trigger "
        "LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END; $$",
    ],
)
def test_the_app_role_does_not_own_the_trail(as_app, statement):
    error = _refused(as_app, statement)
    assert error.orig.sqlstate == INSUFFICIENT_PRIVILEGE, error
    # replacing the trigger's function is refused one step earlier: no CREATE in the schema
    assert re.search("must be owner|permission denied for schema", str(error.orig)), error


def test_the_database_sets_the_event_time(as_app):
    """A client cannot backdate (or postdate) an event: the trigger overrides what it sends."""
    before = datetime.now(UTC)
    with as_app.begin() as connection:
        for sent in ("2001-01-01 00:00:00+00", "2999-01-01 00:00:00+00"):
            connection.execute(
                text(
                    "INSERT INTO audit_events (at, action, outcome) "
                    "VALUES (CAST(:at AS timestamptz), 'test.backdated', 'success')"
                ),
                {"at": sent},
            )
        connection.execute(
            text("INSERT INTO audit_events (action, outcome) VALUES ('test.backdated', 'x')")
        )
    with as_app.connect() as connection:
        stored = connection.execute(
            text("SELECT at FROM audit_events WHERE action = 'test.backdated'")
        ).scalars()
        times = list(stored)
    assert len(times) == 3
    for at in times:
        assert before - timedelta(seconds=5) < at < datetime.now(UTC) + timedelta(seconds=5)


def test_migrate_grants_again_what_was_loosened(roles, as_app, as_owner):
    """Every `clipmed migrate` re-applies the grants: a loosened one is taken back."""
    with as_owner.begin() as connection:
        connection.execute(text(f"GRANT UPDATE, TRUNCATE ON audit_events TO {roles.app}"))
    loosened = _refused(as_app, "UPDATE audit_events SET outcome = 'rewritten'")
    assert loosened.orig.sqlstate != INSUFFICIENT_PRIVILEGE  # only the trigger held it
    assert migrate.upgrade(roles.owner_url, app_role=roles.app) is None
    error = _refused(as_app, "UPDATE audit_events SET outcome = 'rewritten'")
    assert error.orig.sqlstate == INSUFFICIENT_PRIVILEGE


def test_tables_made_later_get_the_app_roles_privileges(as_app, as_owner):
    with as_owner.begin() as connection:
        connection.execute(text("CREATE TABLE later_table (id serial PRIMARY KEY, note text)"))
    try:
        with as_app.begin() as connection:
            connection.execute(text("INSERT INTO later_table (note) VALUES ('x')"))
            connection.execute(text("UPDATE later_table SET note = 'y'"))
            connection.execute(text("DELETE FROM later_table"))
    finally:
        with as_owner.begin() as connection:
            connection.execute(text("DROP TABLE later_table"))


def test_a_missing_role_is_a_warning_and_a_superuser_a_failure(roles):
    warning = migrate.upgrade(roles.owner_url, app_role="harden_no_such_role")
    assert warning is not None and "does not exist" in warning
    with pytest.raises(ValueError, match="superuser"):
        migrate.upgrade(roles.owner_url, app_role="postgres")


def test_a_login_over_http_as_the_app_role_is_audited(roles, tmp_path):
    """The whole login path (forms, attempts, sessions, the trail) works with the app role's
    privileges, and the event it leaves has the database's time."""
    app = create_app(service_settings(tmp_path, roles.app_url))
    username = f"user_{uuid.uuid4().hex[:8]}"
    add_user(app.state.sessions, username, "clinician")
    with running_server(app) as base_url, httpx.Client(base_url=base_url) as http:
        assert log_in(http, username, "not the password").status_code == 401
        assert log_in(http, username).status_code == 303
    try:
        with app.state.sessions() as session:
            events = session.scalars(
                select(AuditEvent).where(AuditEvent.actor == username).order_by(AuditEvent.id)
            ).all()
            user = session.execute(text("SELECT current_user")).scalar_one()
    finally:
        app.state.engine.dispose()
    assert [(e.action, e.outcome) for e in events] == [("login", "failed"), ("login", "success")]
    assert user == roles.app
