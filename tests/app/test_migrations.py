"""Alembic migrations, on SQLite and PostgreSQL, and the `clipmed migrate` command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app import migrate
from app.tables import ModelVersion

TABLES = {
    "model_versions",
    "explanations",
    "users",
    "api_tokens",
    "web_sessions",
    "audit_events",
    "flags",
    "jobs",
    "model_events",
    "evaluation_reports",
}
# The newest revision in migrations/versions, read from the scripts themselves.
HEAD = ScriptDirectory.from_config(migrate.alembic_config("sqlite://")).get_current_head()


def table_names(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_head_then_downgrade_base(empty_database):
    migrate.upgrade(empty_database)
    assert table_names(empty_database) >= TABLES
    assert migrate.current_revision(empty_database) == HEAD
    engine = create_engine(empty_database)
    try:
        indexes = {ix["name"] for ix in inspect(engine).get_indexes("model_versions")}
    finally:
        engine.dispose()
    assert "uq_model_versions_one_active" in indexes

    migrate.downgrade(empty_database, "base")
    assert not TABLES & table_names(empty_database)
    assert migrate.current_revision(empty_database) is None
    migrate.upgrade(empty_database)  # and back up again
    assert table_names(empty_database) >= TABLES


def test_the_database_refuses_a_second_active_version(database):
    engine = create_engine(database)
    try:
        with Session(engine) as session:
            for version, active in (("a", True), ("b", False), ("c", True)):
                session.add(
                    ModelVersion(
                        version=version,
                        path=f"/x/{version}",
                        config={},
                        schema_={},
                        metrics={},
                        catalog_version="c",
                        is_active=active,
                    )
                )
            with pytest.raises(IntegrityError):
                session.commit()
    finally:
        engine.dispose()


def test_clipmed_migrate_upgrades_the_configured_database(tmp_path):
    exe = Path(sys.executable).parent / "clipmed"
    url = f"sqlite:///{tmp_path / 'service.db'}"
    proc = subprocess.run(
        [str(exe), "migrate"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "DATABASE_URL": url, "NO_COLOR": "1"},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"database": url, "revision": HEAD}
    assert table_names(url) >= TABLES


def test_the_migrations_match_the_orm_models(database):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from app.db import Base

    engine = create_engine(database)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
    finally:
        engine.dispose()
