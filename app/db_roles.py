"""PostgreSQL roles of a deployment: an audit trail the application itself cannot rewrite.

Migrations run as the owner of the tables (CLIPMED_MIGRATE_DATABASE_URL); the web service and the
workers connect as an application role (CLIPMED_DB_APP_ROLE) that is granted here:

- `audit_events`: SELECT and INSERT only. No UPDATE, DELETE or TRUNCATE, and not the owner, so it
  cannot disable or drop the append-only trigger (migration 0003), the event-time trigger
  (migration 0008) or the table; not a superuser, so `session_replication_role` stays as it is.
- its id sequence: USAGE and SELECT (nextval), not UPDATE (which would allow setval).
- every other table: SELECT, INSERT, UPDATE, DELETE; `alembic_version`: SELECT (serve checks it).
- default privileges: tables and sequences the owner creates later get the same DML grants.

Idempotent: everything is revoked from the role and granted again, by migration 0008 and after
every `clipmed migrate`. SQLite has no roles: nothing to do there.
"""

from __future__ import annotations

import logging
import re

from sqlalchemy import Connection, text

log = logging.getLogger(__name__)

ROLE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
APPEND_ONLY = ("audit_events",)
READ_ONLY = ("alembic_version",)
DML = "SELECT, INSERT, UPDATE, DELETE"


def check_role_name(role: str) -> str:
    """An unquoted PostgreSQL identifier (lower case): the name goes into GRANT statements."""
    if not ROLE_NAME.fullmatch(role):
        raise ValueError(
            f"database role {role!r}: use lower-case letters, digits and _ (at most 63), "
            "starting with a letter or _"
        )
    return role


def grant_app_role(connection: Connection, role: str) -> str:
    """Gives `role` the application's privileges on the current schema's tables (see above).
    Returns what happened: "granted", "sqlite", or a warning for the caller to show (the role
    does not exist, the migration connects as it, or it is not ours to grant). Raises
    ValueError when the role could undo the trail anyway (a superuser, or a member of the
    owner)."""
    if connection.dialect.name != "postgresql":
        return "sqlite"
    check_role_name(role)
    me, schema = connection.execute(text("SELECT current_user, current_schema()")).one()
    found = connection.execute(
        text("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = :role"),
        {"role": role},
    ).one_or_none()
    if found is None:
        return _warn(
            f"database role {role!r} does not exist: the application's privileges were not "
            "granted (create it, e.g. deploy/postgres-init/01-app-role.sh, then run "
            "`clipmed migrate` again)"
        )
    if role == me:
        return _warn(
            f"the migration connects as the application role {role!r}: its privileges were "
            "not changed (migrate as the owner: CLIPMED_MIGRATE_DATABASE_URL)"
        )
    if found.rolsuper or found.rolbypassrls:
        raise ValueError(f"database role {role!r} is a superuser: it could rewrite the audit trail")
    owner = connection.execute(
        text(
            "SELECT tableowner FROM pg_tables WHERE schemaname = :schema "
            "AND tablename = 'audit_events'"
        ),
        {"schema": schema},
    ).scalar_one_or_none()
    if owner is None:
        return _warn(f"no audit_events table in schema {schema!r}: nothing was granted")
    if owner != me:
        return _warn(
            f"audit_events belongs to {owner!r}, not to {me!r}: migrate as its owner to grant "
            f"the application role {role!r} its privileges"
        )
    member = connection.execute(
        text("SELECT pg_has_role(:role, :owner, 'MEMBER')"), {"role": role, "owner": owner}
    ).scalar_one()
    if member:
        raise ValueError(
            f"database role {role!r} is a member of the owner {owner!r}: it could rewrite the "
            "audit trail (REVOKE the membership)"
        )
    for statement in _grants(connection.dialect.identifier_preparer.quote_identifier(schema), role):
        connection.execute(text(statement))
    log.info("granted the application role %s its privileges in schema %s", role, schema)
    return "granted"


def _grants(schema: str, role: str) -> list[str]:
    tables = f"ALL TABLES IN SCHEMA {schema}"
    sequences = f"ALL SEQUENCES IN SCHEMA {schema}"
    defaults = f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema}"
    append_only = ", ".join(f"{schema}.{name}" for name in APPEND_ONLY)
    read_only = ", ".join(f"{schema}.{name}" for name in READ_ONLY)
    return [
        f"GRANT USAGE ON SCHEMA {schema} TO {role}",
        f"REVOKE ALL ON {tables} FROM {role}",
        f"REVOKE ALL ON {sequences} FROM {role}",
        f"GRANT {DML} ON {tables} TO {role}",
        f"REVOKE UPDATE, DELETE ON {append_only} FROM {role}",
        f"REVOKE INSERT, UPDATE, DELETE ON {read_only} FROM {role}",
        f"GRANT USAGE, SELECT ON {sequences} TO {role}",
        f"{defaults} GRANT {DML} ON TABLES TO {role}",
        f"{defaults} GRANT USAGE, SELECT ON SEQUENCES TO {role}",
    ]


def revoke_app_role(connection: Connection, role: str) -> None:
    """Undoes `grant_app_role` (migration 0008's downgrade), where the role exists."""
    if connection.dialect.name != "postgresql":
        return
    check_role_name(role)
    if connection.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}).first():
        current = connection.execute(text("SELECT current_schema()")).scalar_one()
        schema = connection.dialect.identifier_preparer.quote_identifier(current)
        for statement in (
            f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} REVOKE ALL ON TABLES FROM {role}",
            f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} REVOKE ALL ON SEQUENCES FROM {role}",
            f"REVOKE ALL ON ALL TABLES IN SCHEMA {schema} FROM {role}",
            f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA {schema} FROM {role}",
        ):
            connection.execute(text(statement))


def _warn(message: str) -> str:
    log.warning("%s", message)
    return message
