"""Alembic migrations, on SQLite and PostgreSQL, and the `clipmed migrate` command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData, create_engine, insert, inspect, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from support.databases import fresh_database

from app import migrate
from app.tables import Explanation, Job, ModelVersion, User

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


def test_replicas_migrating_at_once_all_succeed(tmp_path):
    """Four `clipmed migrate` started together on an empty PostgreSQL database (replicas of a
    deployment starting at once): the advisory lock lets one migrate while the others wait,
    then they find the schema at head. Without it they race to create the same tables."""
    exe = Path(sys.executable).parent / "clipmed"
    with fresh_database("postgresql", tmp_path) as url:
        env = {**os.environ, "DATABASE_URL": url, "CLIPMED_DATA_DIR": str(tmp_path)}
        runs = [
            subprocess.Popen(
                [str(exe), "migrate"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
            for _ in range(4)
        ]
        results = [(run.wait(timeout=300), run.stdout.read(), run.stderr.read()) for run in runs]
        for run in runs:
            run.stdout.close()
            run.stderr.close()
        assert [code for code, _, _ in results] == [0] * 4, [err[-2000:] for _, _, err in results]
        assert migrate.current_revision(url) == HEAD
        assert table_names(url) >= TABLES


# The schema head of the previous release (before segmentation inputs, 0006, and the login
# throttle's tables, 0007): a deployment of it must reach head with its rows intact.
PREVIOUS_RELEASE_HEAD = "0005"


def test_upgrade_from_the_previous_release_keeps_its_rows(empty_database):
    url = empty_database
    migrate.upgrade(url, PREVIOUS_RELEASE_HEAD)
    engine = create_engine(url)
    now = datetime.now(UTC)
    try:
        with engine.begin() as connection:
            tables = MetaData()
            tables.reflect(connection, only=["users", "model_versions", "explanations", "jobs"])
            users, versions = tables.tables["users"], tables.tables["model_versions"]
            explanations, jobs = tables.tables["explanations"], tables.tables["jobs"]
            connection.execute(
                insert(users),
                [
                    {"username": "ana", "password_hash": "h", "role": "admin", "created_at": now,
                     "is_active": True},
                    {"username": "joan", "password_hash": "h", "role": "clinician",
                     "created_at": now, "is_active": False},
                ],
            )  # fmt: skip
            connection.execute(
                insert(versions),
                {"version": "v1", "path": "/data/checkpoints/v1", "config": {"embed_dim": 32},
                 "schema": {"fields": []}, "metrics": {}, "catalog_version": "c1",
                 "created_at": now, "is_active": True},
            )  # fmt: skip
            connection.execute(
                insert(explanations),
                {"id": "e-1", "created_at": now, "input_sha256": "0" * 64, "n_slices": 3,
                 "k": 5, "model_version": "v1", "catalog_version": "c1",
                 "result": {"fields": {"shape": "round"}}, "features_npy": b"\x93NUMPY"},
            )  # fmt: skip
            connection.execute(
                insert(jobs),
                {"kind": "train", "params": {"cohort": "lidc"}, "status": "succeeded",
                 "progress": 1.0, "message": "done", "log": "", "attempts": 1, "max_attempts": 3,
                 "created_at": now},
            )  # fmt: skip
    finally:
        engine.dispose()

    migrate.upgrade(url)
    assert migrate.current_revision(url) == HEAD
    engine = create_engine(url)
    try:
        with Session(engine) as session:
            # read back through today's ORM models: the old rows fit the new schema
            assert {(u.username, u.role, u.is_active) for u in session.scalars(select(User))} == {
                ("ana", "admin", True),
                ("joan", "clinician", False),
            }
            explanation = session.get(Explanation, "e-1")
            assert explanation.result == {"fields": {"shape": "round"}}
            assert explanation.input_kind == "features"  # filled in by 0006
            assert explanation.features_npy == b"\x93NUMPY"
            assert session.scalars(select(ModelVersion.version)).all() == ["v1"]
            assert session.scalars(select(Job.status)).all() == ["succeeded"]
    finally:
        engine.dispose()
