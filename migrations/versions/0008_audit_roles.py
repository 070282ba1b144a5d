"""the audit trail's event time is the database's; the application role's privileges

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07

PostgreSQL only (SQLite has neither roles nor a client to distrust): `audit_events.at` defaults
to the server's time and a trigger sets it on every insert, so a client cannot backdate an event.
The function pins its search path and calls pg_catalog.now(): a role able to create objects in
a schema on the path could otherwise shadow now(). Then the application role (CLIPMED_DB_APP_ROLE)
gets INSERT and SELECT on the trail and DML elsewhere (app.db_roles); `clipmed migrate` grants
again after every upgrade, for a role created later and tables added later.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import context, op

from app import db_roles

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

EVENT_TIME = """
ALTER TABLE audit_events ALTER COLUMN at SET DEFAULT pg_catalog.now();
CREATE FUNCTION audit_events_event_time() RETURNS trigger LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    NEW.at := pg_catalog.now();
    RETURN NEW;
END;
$$;
CREATE TRIGGER audit_events_event_time
    BEFORE INSERT ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_event_time();
"""


def app_role() -> str:
    from app.config import Settings

    configured = context.config.attributes.get("db_app_role")
    return configured if configured is not None else Settings().db_app_role


def upgrade() -> None:
    connection = op.get_bind()
    if connection.dialect.name != "postgresql":
        return
    op.execute(EVENT_TIME)
    if role := app_role():
        db_roles.grant_app_role(connection, role)


def downgrade() -> None:
    connection = op.get_bind()
    if connection.dialect.name != "postgresql":
        return
    if role := app_role():
        db_roles.revoke_app_role(connection, role)
    op.execute("DROP TRIGGER audit_events_event_time ON audit_events")
    op.execute("DROP FUNCTION audit_events_event_time()")
    op.execute("ALTER TABLE audit_events ALTER COLUMN at DROP DEFAULT")
