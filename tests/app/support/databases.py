"""Databases for the service tests: a fresh one of each kind (SQLite, or a schema of its own on
the PostgreSQL test server), and rows read back from a service's database."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, make_url, select, text
from sqlalchemy.exc import SQLAlchemyError

from app.tables import AuditEvent

DATABASES = ["sqlite", "postgresql"]


def postgres_url() -> str:
    """The test server's URL, or a skip (a failure under CLIPMED_REQUIRE_POSTGRES=1)."""
    url = os.environ.get("CLIPMED_TEST_POSTGRES_URL", "")
    required = os.environ.get("CLIPMED_REQUIRE_POSTGRES") == "1"
    if not url:
        if required:
            pytest.fail("CLIPMED_REQUIRE_POSTGRES=1 but CLIPMED_TEST_POSTGRES_URL is not set")
        pytest.skip("CLIPMED_TEST_POSTGRES_URL is not set")
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError as e:
        message = f"PostgreSQL at {make_url(url).render_as_string()} does not answer: {e}"
        if required:
            pytest.fail(message)
        pytest.skip(message)
    finally:
        engine.dispose()
    return url


@contextmanager
def fresh_database(kind: str, tmp_dir: Path) -> Iterator[str]:
    """The URL of an empty database of this kind, removed afterwards."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp_dir / 'clipmed.db'}"
        return
    url = postgres_url()
    schema = f"clipmed_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(url)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    scoped = make_url(url).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield scoped.render_as_string(hide_password=False)
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def events(service, **where) -> list[AuditEvent]:
    with service.session() as session:
        query = select(AuditEvent).order_by(AuditEvent.id)
        for column, value in where.items():
            query = query.where(getattr(AuditEvent, column) == value)
        return list(session.scalars(query))
