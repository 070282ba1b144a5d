"""Fixtures of the service tests: small real checkpoints, fresh databases, a real HTTP server.

PostgreSQL: set CLIPMED_TEST_POSTGRES_URL (e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test);
each database fixture gets its own schema, dropped afterwards. Without the variable the
PostgreSQL params are skipped, unless CLIPMED_REQUIRE_POSTGRES=1, which makes that a failure.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.orm import Session
from support.checkpoints import build_lidc_checkpoint, build_small_checkpoint
from support.databases import DATABASES, fresh_database
from support.http import add_user, bearer
from support.reports import build_report_folder
from support.servers import running_server, service_settings

from app import migrate, registry
from app.main import create_app


@dataclass(frozen=True)
class SmallCheckpoints:
    first: Path  # the pooled-vector model ("lidc")
    second: Path  # the attention model ("lidc-attn"), another seed: other versions
    first_version: tuple[str, str]  # (model version, catalog version)
    second_version: tuple[str, str]


@pytest.fixture(scope="session")
def small_checkpoints(tmp_path_factory, text_encoder) -> SmallCheckpoints:
    root = tmp_path_factory.mktemp("app-checkpoints")
    a = build_small_checkpoint(root / "first", text_encoder, "lidc", seed=0)
    b = build_small_checkpoint(root / "second", text_encoder, "lidc-attn", seed=1)
    versions = [(c.version, c.catalog.version) for c in (a, b)]
    assert versions[0] != versions[1] and versions[0][1] != versions[1][1]
    return SmallCheckpoints(root / "first", root / "second", *versions)


@pytest.fixture(params=DATABASES)
def empty_database(request, tmp_path) -> Iterator[str]:
    """A fresh, unmigrated database."""
    with fresh_database(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def database(empty_database) -> str:
    """A fresh database migrated to head through Alembic."""
    migrate.upgrade(empty_database)
    return empty_database


@pytest.fixture
def make_server(tmp_path):
    """Starts the app on a database; every server started is stopped after the test."""
    with ExitStack() as stack:

        def start(database_url: str):
            app = create_app(service_settings(tmp_path, database_url))
            return app, stack.enter_context(running_server(app))

        yield start


@dataclass(frozen=True)
class Service:
    """A running server with both small checkpoints registered and the first one active."""

    url: str
    app: FastAPI
    checkpoints: SmallCheckpoints
    tokens: dict[str, str]  # role -> API token of the user named after it (password TEST_PASSWORD)

    def session(self) -> Session:
        return self.app.state.sessions()

    def activate(self, version: str) -> None:
        with self.session() as session:
            registry.activate_version(session, version, self.app.state.serving)


@pytest.fixture(scope="module", params=DATABASES)
def service(request, tmp_path_factory, small_checkpoints) -> Iterator[Service]:
    tmp_dir = tmp_path_factory.mktemp("service")
    with fresh_database(request.param, tmp_dir) as url:
        migrate.upgrade(url)
        app = create_app(service_settings(tmp_dir, url))
        with app.state.sessions() as session:
            first = registry.register_checkpoint(session, small_checkpoints.first)
            registry.register_checkpoint(session, small_checkpoints.second)
            registry.activate_version(session, first.version)
        tokens = {role: add_user(app.state.sessions, role, role) for role in ROLES}
        with running_server(app) as base_url:
            yield Service(base_url, app, small_checkpoints, tokens)


ROLES = ("clinician", "radiologist", "admin")


@pytest.fixture(scope="session")
def lidc_checkpoint(tmp_path_factory, lidc_small) -> Path:
    """A small model trained on real LIDC features (all of lidc_small but HELD_OUT_PATIENT),
    with the feature extractor and the training cases' outlines recorded."""
    folder = tmp_path_factory.mktemp("lidc-checkpoint") / "ckpt"
    build_lidc_checkpoint(folder, lidc_small)
    return folder


@pytest.fixture(scope="module", params=DATABASES)
def lidc_service(request, tmp_path_factory, lidc_checkpoint) -> Iterator[Service]:
    """A running server whose active model is lidc_checkpoint (segmentations can be explained);
    `checkpoints` is None."""
    tmp_dir = tmp_path_factory.mktemp("lidc-service")
    with fresh_database(request.param, tmp_dir) as url:
        migrate.upgrade(url)
        app = create_app(service_settings(tmp_dir, url))
        with app.state.sessions() as session:
            row = registry.register_checkpoint(session, lidc_checkpoint)
            registry.activate_version(session, row.version)
        tokens = {role: add_user(app.state.sessions, role, role) for role in ROLES}
        with running_server(app) as base_url:
            yield Service(base_url, app, None, tokens)  # type: ignore[arg-type]


@pytest.fixture
def client(service) -> Iterator[httpx.Client]:
    """An admin's API client (bearer token)."""
    headers = bearer(service.tokens["admin"])
    with httpx.Client(base_url=service.url, timeout=30, headers=headers) as http:
        yield http


@pytest.fixture
def client_as(service) -> Iterator:
    """`client_as(role)` or `client_as(None)` (anonymous): more API clients, closed after."""
    with ExitStack() as stack:

        def make(role: str | None) -> httpx.Client:
            headers = bearer(service.tokens[role]) if role else {}
            client = httpx.Client(base_url=service.url, timeout=30, headers=headers)
            return stack.enter_context(client)

        yield make


@dataclass(frozen=True)
class ReportFolders:
    """Two real evaluation reports of the same simulated cohort, split and fold count (one and
    two training epochs): (folder, summary) each."""

    a: tuple[Path, dict]
    b: tuple[Path, dict]


@pytest.fixture(scope="session")
def report_folders(tmp_path_factory, text_encoder) -> ReportFolders:
    root = tmp_path_factory.mktemp("reports")
    made = {
        name: (root / name, build_report_folder(root / name, text_encoder, epochs))
        for name, epochs in (("a", 1), ("b", 2))
    }
    return ReportFolders(**made)
