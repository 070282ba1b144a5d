"""Running the Alembic migrations from code (`clipmed migrate`, `clipmed serve`, tests)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

REPO_ROOT = Path(__file__).resolve().parent.parent


def alembic_config(database_url: str) -> Config:
    config = Config(str(REPO_ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(REPO_ROOT / "migrations"))
    config.attributes["database_url"] = database_url
    config.attributes["configure_logging"] = False  # leave the caller's logging alone
    return config


def upgrade(database_url: str, revision: str = "head", app_role: str = "") -> str | None:
    """Migrates (as the owner of the tables, on PostgreSQL); with `app_role`, grants that role
    the service's privileges again afterwards (app.db_roles: idempotent, and it covers a role
    created after the migration that first granted them). Returns a warning for the operator
    when the role could not be granted, else None."""
    config = alembic_config(database_url)
    config.attributes["db_app_role"] = app_role
    command.upgrade(config, revision)
    if not app_role:
        return None
    from app.db import make_engine
    from app.db_roles import grant_app_role

    engine = make_engine(database_url)
    try:
        with engine.begin() as connection:
            outcome = grant_app_role(connection, app_role)
    finally:
        engine.dispose()
    return None if outcome in ("granted", "sqlite") else outcome


def downgrade(database_url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(database_url), revision)


def current_revision(database_url: str) -> str | None:
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import create_engine

    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()
