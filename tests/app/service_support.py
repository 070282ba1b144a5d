"""Helpers of the service tests (imported by conftest.py and the test modules)."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import uvicorn
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.exc import SQLAlchemyError

from app.config import Settings
from model.checkpoint import Checkpoint

DATABASES = ["sqlite", "postgresql"]
FEATURE_DIM = 16
MAX_UPLOAD_BYTES = 256 * 1024  # small, so a too-large body still fits the socket buffers


def build_small_checkpoint(folder: Path, encoder, preset_name: str, seed: int) -> Checkpoint:
    from model.checkpoint import build_checkpoint
    from model.config import preset
    from model.datasets.simulated import simulate_cohort
    from model.train import train

    cohort = simulate_cohort(60, None, seed=seed, feature_dim=FEATURE_DIM, signal=2.0)
    mcfg, tcfg = preset(
        preset_name, epochs=2, val_fraction=0.0, patience=0, seed=seed, embed_dim=32, ff_dim=64
    )
    classes = [len(f.values) for f in cohort.schema.fields]
    result = train(cohort, mcfg, tcfg, encoder, field_classes=classes)
    case_ids = cohort.cases["case_id"].astype(str).tolist()
    data = {"cohort": cohort.name, "simulated": True}
    ckpt = build_checkpoint(result, cohort, case_ids, cohort.schema, encoder, tcfg, data)
    ckpt.save(folder)
    return Checkpoint.load(folder)


HELD_OUT_PATIENT = "LIDC-IDRI-0001"  # not in lidc_checkpoint's training cases


def build_lidc_checkpoint(folder: Path, cohort, seed: int = 0) -> Checkpoint:
    """A small model on real LIDC features (extractor and outlines recorded), trained by the
    CLI's own recipe on every case of `cohort` but those of HELD_OUT_PATIENT."""
    import numpy as np

    from clipmed.cli import train_checkpoint

    held_out = np.flatnonzero(cohort.patients == HELD_OUT_PATIENT)
    small = {"epochs": 2, "val_fraction": 0.0, "patience": 0, "seed": seed}
    train_checkpoint(cohort, "lidc", small | {"embed_dim": 32, "ff_dim": 64}, folder, held_out)
    return Checkpoint.load(folder)


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


TEST_PASSWORD = "correct horse battery staple"


def add_user(sessions, username: str, role: str) -> str:
    """Creates a user (password TEST_PASSWORD) and returns a new API token of theirs."""
    from app import accounts

    with sessions() as session:
        user = accounts.create_user(session, username, role, TEST_PASSWORD)
        return accounts.create_token(session, user)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def service_settings(tmp_dir: Path, database_url: str, **overrides) -> Settings:
    # The test client plays a local reverse proxy: X-Forwarded-For/-Proto from 127.0.0.1 count.
    fields = {"max_upload_bytes": MAX_UPLOAD_BYTES, "forwarded_allow_ips": "127.0.0.1"}
    return Settings(data_dir=tmp_dir, database_url=database_url, **(fields | overrides))


@contextmanager
def running_server(app) -> Iterator[str]:
    """Serves `app` with uvicorn on a free localhost port in a thread; yields its base URL."""
    # IPPROTO_TCP named: only then does asyncio set TCP_NODELAY on the connections, as it does
    # for `clipmed serve`'s own sockets; without it each keep-alive request waits ~40 ms.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    proxy = app.state.settings.uvicorn_proxy_options  # as `clipmed serve` runs it
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", **proxy))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


def build_report_folder(folder: Path, encoder, epochs: int = 1, folds: int = 2) -> dict:
    """A real, tiny cross-validation report of one simulated cohort (always the same patients
    and split) written by the project's own evaluate code into `folder`; returns the summary as
    the evaluate job stores it (field -> method -> median macro-F1)."""
    from model.config import preset
    from model.datasets.simulated import simulate_cohort
    from model.evaluate import cross_validate, write_report

    cohort = simulate_cohort(40, None, seed=3, feature_dim=FEATURE_DIM, signal=2.0)
    mcfg, tcfg = preset(
        "lidc", epochs=epochs, val_fraction=0.0, patience=0, embed_dim=32, ff_dim=64, batch_size=16
    )
    result = cross_validate(cohort, mcfg, tcfg, encoder, folds=folds)
    write_report(result, cohort, mcfg, tcfg, folder, "lidc")
    summary: dict[str, dict[str, float]] = {}
    medians = result.metrics.groupby(["field", "method"]).macro_f1.median()
    for (field, method), value in medians.items():
        summary.setdefault(str(field), {})[str(method)] = round(float(value), 4)
    return summary


def add_report_row(
    sessions,
    folder: Path,
    summary: dict,
    cohort: str,
    folds: int,
    job_id: int | None = None,
    simulated: bool = True,
) -> int:
    """An evaluation report row (as the evaluate job stores one) for a report folder."""
    from app.tables import EvaluationReport

    with sessions() as session:
        row = EvaluationReport(
            job_id=job_id,
            cohort=cohort,
            simulated=simulated,
            preset="lidc",
            folds=folds,
            model_config={"architecture": "mlp"},
            train_config={"epochs": 1},
            summary=summary,
            path=str(folder),
        )
        session.add(row)
        session.commit()
        return row.id
