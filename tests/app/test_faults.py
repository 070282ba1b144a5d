"""Faults: PostgreSQL restarted under writes; checkpoint saves killed or out of disk.

The third fault of the suite, a worker killed mid-job, is tested with the other job tests on
SQLite and PostgreSQL, where its fixtures live:
test_jobs.py::test_a_killed_worker_loses_nothing_and_another_finishes_the_job.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from sqlalchemy import create_engine, select
from support.checkpoints import FEATURE_DIM
from support.databases import fresh_database
from support.http import TEST_PASSWORD, add_user, bearer, log_in, post_json
from support.private_postgres import private_cluster
from support.servers import running_server

from app import migrate, registry
from app.config import Settings
from app.db import make_engine, make_session_factory
from app.errors import CheckpointRejected
from app.explanations.service import npy_bytes
from app.main import create_app
from app.tables import AuditEvent, Explanation, Flag, ModelVersion
from model.checkpoint import Checkpoint
from model.datasets.simulated import simulate_cohort

REPO = Path(__file__).resolve().parents[2]
SAVE_WITH_FAULT = Path(__file__).with_name("save_with_fault.py")
ROLES = ("clinician", "radiologist", "admin")


# =============================================================================================
# PostgreSQL restarted while explanations and flags are written
# =============================================================================================
EXPLAINERS = 3  # clinician threads posting explanations
FLAGGERS = 2  # radiologist threads flagging fields of explanations
OUTAGE_SECONDS = 3.0
ANSWER_WITHIN = 10.0  # seconds: no request may hang while the database is away


@dataclass
class Attempt:
    kind: str  # "explanation" or "flag"
    key: str  # the explanation's input sha256, or the flag's (unique) comment
    started: float  # time.monotonic()
    seconds: float
    status: int | None  # None: no HTTP answer at all
    body: dict
    retry_after: str | None

    @property
    def acknowledged(self) -> bool:
        return self.status == 201

    def overlaps(self, start: float, end: float) -> bool:
        return self.started <= end and start <= self.started + self.seconds


def attempt(kind: str, key: str, send: Callable[..., httpx.Response], *args, **kwargs) -> Attempt:
    started = time.monotonic()
    try:
        response = send(*args, **kwargs)
    except httpx.HTTPError as e:
        seconds = time.monotonic() - started
        return Attempt(kind, key, started, seconds, None, {"error": repr(e)}, None)
    try:
        body = response.json()
    except ValueError:
        body = {"text": response.text[:500]}
    seconds = time.monotonic() - started
    return Attempt(
        kind, key, started, seconds, response.status_code, body, response.headers.get("retry-after")
    )


def explain_forever(http: httpx.Client, seed: int, stop: threading.Event, out: list) -> None:
    rng = np.random.default_rng(seed)
    while not stop.is_set():
        features = rng.normal(size=(3, FEATURE_DIM)).astype(np.float32)
        key = hashlib.sha256(npy_bytes(features)).hexdigest()  # as the service computes it
        out.append(attempt("explanation", key, post_json, http, features.tolist(), k=3))
        stop.wait(0.02)


def flag_forever(
    http: httpx.Client, name: str, targets: list[tuple[str, str]], stop, out: list
) -> None:
    n = 0
    while not stop.is_set():
        explanation_id, field = targets[n % len(targets)]
        key = f"{name}-{n}"
        url = f"/api/v1/explanations/{explanation_id}/flags"
        body = {"field": field, "reason": "other", "comment": key}
        out.append(attempt("flag", key, http.post, url, json=body))
        n += 1
        stop.wait(0.02)


@dataclass
class Outage:
    mode: str  # pg_ctl stop mode
    stopping_at: float  # pg_ctl stop called
    down_at: float  # ... returned: the server is gone
    starting_at: float  # pg_ctl start called
    ready_at: float  # /readyz answered 200 again


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> float:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.1)
    return time.monotonic()


def assert_unavailable(response: httpx.Response, started: float, retry: bool = True) -> None:
    assert time.monotonic() - started < ANSWER_WITHIN
    assert response.status_code == 503, response.text
    if retry:
        assert response.headers.get("retry-after", "").isdigit()


def test_a_postgresql_restart_answers_503_recovers_by_itself_and_loses_nothing(
    tmp_path, small_checkpoints
):
    with private_cluster() as pg:
        migrate.upgrade(pg.url)
        settings = Settings(data_dir=tmp_path, database_url=pg.url, registry_poll_seconds=0.5)
        app = create_app(settings)
        with app.state.sessions() as session:
            first = registry.register_checkpoint(session, small_checkpoints.first)
            registry.activate_version(session, first.version)
        tokens = {role: add_user(app.state.sessions, role, role) for role in ROLES}
        for n in range(EXPLAINERS):
            tokens[f"clinician-{n}"] = add_user(app.state.sessions, f"clinician-{n}", "clinician")
        with running_server(app) as url:
            outages, attempts, targets = run_writers_through_outages(pg, url, tokens)
        assert app.state.serving.current.model_version == first.version  # never restarted
        check_nothing_acknowledged_was_lost(pg.url, outages, attempts, targets)


def run_writers_through_outages(pg, url: str, tokens: dict[str, str]):
    clients: list[httpx.Client] = []

    def client(role: str | None) -> httpx.Client:
        headers = bearer(tokens[role]) if role else {}
        clients.append(httpx.Client(base_url=url, timeout=ANSWER_WITHIN + 5, headers=headers))
        return clients[-1]

    stop = threading.Event()
    attempts: list[list[Attempt]] = [[] for _ in range(EXPLAINERS + FLAGGERS)]
    threads: list[threading.Thread] = []
    try:
        radiologist = client("radiologist")
        targets = []
        for _ in range(4):  # explanations to flag, made before any outage
            made = post_json(radiologist, np.ones((2, FEATURE_DIM)).tolist(), k=3)
            assert made.status_code == 201, made.text
            targets.append((made.json()["id"], made.json()["explanation"]["fields"][0]["field"]))
        browser = client(None)
        assert log_in(browser, "radiologist").status_code == 303
        api = client("admin")
        login_form = client(None)
        login_form.headers["Origin"] = str(login_form.base_url).rstrip("/")  # as a browser does
        form = login_form.get("/login")  # handed out (a row in the database) before the outage
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)

        for n in range(EXPLAINERS):
            args = (client(f"clinician-{n}"), n, stop, attempts[n])
            threads.append(threading.Thread(target=explain_forever, args=args))
        for n in range(FLAGGERS):
            args = (client("radiologist"), f"flagger{n}", targets, stop, attempts[EXPLAINERS + n])
            threads.append(threading.Thread(target=flag_forever, args=args))
        for thread in threads:
            thread.start()

        def everyone_wrote_since(instant: float) -> Callable[[], bool]:
            return lambda: all(
                sum(a.acknowledged and a.started > instant for a in list(mine)) >= 3
                for mine in attempts
            )

        outages = []
        wait_until(everyone_wrote_since(0), 60, "writes before the first outage")
        for mode in ("fast", "immediate"):
            stopping_at = time.monotonic()
            pg.stop(mode)
            down_at = time.monotonic()

            started = time.monotonic()
            ready = api.get("/readyz")
            assert_unavailable(ready, started, retry=False)  # not ready, and it says why
            assert any("database" in p for p in ready.json()["problems"]), ready.text
            started = time.monotonic()
            listed = api.get("/api/v1/models")
            assert_unavailable(listed, started)
            assert listed.json()["code"] == "database_unavailable"
            started = time.monotonic()
            login = login_form.post(
                "/login",
                data={"username": "admin", "password": TEST_PASSWORD, "csrf_token": csrf},
            )
            assert_unavailable(login, started)
            assert "database_unavailable" in login.text
            started = time.monotonic()
            page = browser.get("/")  # a page of a logged-in user: the session is in the database
            assert_unavailable(page, started)
            assert "text/html" in page.headers["content-type"]

            time.sleep(max(0.0, down_at + OUTAGE_SECONDS - time.monotonic()))
            starting_at = time.monotonic()
            pg.start()
            ready_at = wait_until(
                lambda: api.get("/readyz").status_code == 200, 30, "ready again after restart"
            )
            outages.append(Outage(mode, stopping_at, down_at, starting_at, ready_at))
            wait_until(everyone_wrote_since(ready_at), 60, f"writes after the {mode} restart")
        assert api.get("/api/v1/models").status_code == 200
        assert browser.get("/").status_code == 200  # the web session survived the restarts
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
        for http in clients:
            http.close()
    return outages, [a for mine in attempts for a in mine], targets


def check_nothing_acknowledged_was_lost(
    url: str, outages: list[Outage], attempts: list[Attempt], targets
) -> None:
    by_status: dict[int | None, int] = {}
    for a in attempts:
        by_status[a.status] = by_status.get(a.status, 0) + 1
    # Only two answers: stored (201), or the database is away (503) -- never a 500 or no answer.
    assert set(by_status) <= {201, 503}, {
        s: next(a.body for a in attempts if a.status == s) for s in by_status
    }
    refused = [a for a in attempts if a.status == 503]
    assert all(a.body.get("code") == "database_unavailable" for a in refused)
    assert all(a.retry_after and a.retry_after.isdigit() for a in refused)
    assert max(a.seconds for a in attempts) < ANSWER_WITHIN
    ends = [o.stopping_at for o in outages[1:]] + [float("inf")]
    for outage, next_outage in zip(outages, ends, strict=True):
        during = [a for a in attempts if outage.down_at <= a.started <= outage.starting_at]
        assert all(a.status == 503 for a in during), outage
        assert {a.kind for a in during} == {"explanation", "flag"}, outage
        # recovered by itself: once ready, every request succeeds (until the next outage)
        after = [
            a
            for a in attempts
            if outage.ready_at <= a.started and a.started + a.seconds < next_outage
        ]
        assert after and all(a.acknowledged for a in after), outage

    engine = create_engine(url)
    try:
        with make_session_factory(engine)() as session:
            explanations = {
                row.input_sha256: row
                for row in session.scalars(select(Explanation))
                if row.id not in {t[0] for t in targets}
            }
            flags = {row.comment: row for row in session.scalars(select(Flag))}
            audit_rows = session.execute(
                select(AuditEvent.action, AuditEvent.target_id).where(
                    AuditEvent.action.in_(["explanation.create", "flag.create"])
                )
            )
            audited = {(action, target) for action, target in audit_rows}
    finally:
        engine.dispose()

    acknowledged = [a for a in attempts if a.acknowledged]
    for a in acknowledged:
        stored = explanations if a.kind == "explanation" else flags
        assert a.key in stored, f"acknowledged {a.kind} {a.body.get('id')} was lost"
        assert stored[a.key].id == a.body["id"]
        assert (f"{a.kind}.create", str(a.body["id"])) in audited  # audited before the 201
    for row in explanations.values():  # whole rows only: the result and the features
        assert row.result["fields"] and row.result["texts"]
        assert np.load(io.BytesIO(row.features_npy)).shape == (3, FEATURE_DIM)

    # A request refused with 503 stored nothing -- unless it was in flight when the database
    # went down: its commit may have landed and the answer been lost. Such rows are whole, and
    # there is at most one per writer per outage. Each has its audit event: the two are
    # committed in one transaction.
    sent = {a.key for a in attempts}
    assert set(explanations) <= sent and set(flags) <= sent  # nothing nobody asked for
    unacknowledged = [a for a in attempts if not a.acknowledged]
    stored_anyway = [
        a for a in unacknowledged if a.key in (explanations if a.kind == "explanation" else flags)
    ]
    for a in stored_anyway:
        assert any(a.overlaps(o.stopping_at, o.down_at) for o in outages), a
    assert len(stored_anyway) <= len(outages) * (EXPLAINERS + FLAGGERS)
    unaudited = [
        a
        for a in stored_anyway
        if (f"{a.kind}.create", str((explanations if a.kind == "explanation" else flags)[a.key].id))
        not in audited
    ]
    assert not unaudited, unaudited
    print(
        f"{len(attempts)} writes: {by_status}; {len(stored_anyway)} answered 503 while their "
        "commit landed as the database went down; outages "
        + ", ".join(f"{o.mode}: ready {o.ready_at - o.starting_at:.1f} s after" for o in outages)
    )


# =============================================================================================
# A checkpoint save interrupted part-way
# =============================================================================================
@pytest.fixture
def registry_session(tmp_path):
    """A session on a fresh migrated SQLite registry."""
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    migrate.upgrade(url)
    engine = make_engine(url)
    try:
        with make_session_factory(engine)() as session:
            yield session
    finally:
        engine.dispose()


def save_with_fault(source: Path, target: Path, fault: str, step: int = 0):
    return subprocess.run(
        [sys.executable, str(SAVE_WITH_FAULT), str(source), str(target)]
        + ["--fault", fault, "--step", str(step)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def save_steps(source: Path, tmp_path: Path) -> list[str]:
    """The writer steps of Checkpoint.save, from an uninterrupted save."""
    target = tmp_path / "uninterrupted" / "ckpt"
    done = save_with_fault(source, target, "none")
    assert done.returncode == 0, done.stderr
    assert Checkpoint.load(target).version == Checkpoint.load(source).version
    steps = re.findall(r"^step \d+ (\S+)$", done.stdout, re.MULTILINE)
    assert steps[-1] == "os.replace" and len(steps) >= 5, steps  # the rename comes last
    return steps


def leftovers(target: Path) -> list[Path]:
    return [p for p in target.parent.iterdir() if p != target]


def assert_no_broken_checkpoint(target: Path, version: str, session) -> None:
    """The target folder is absent or loads completely; whatever else is left is hidden and
    cannot be registered."""
    if target.exists():
        assert Checkpoint.load(target).version == version
    for partial in leftovers(target):
        assert partial.name.startswith(f".{target.name}."), partial
        with pytest.raises(CheckpointRejected):
            registry.register_checkpoint(session, partial)
    assert registry.list_versions(session) == []


def test_a_checkpoint_save_killed_at_any_step_leaves_no_broken_checkpoint(
    tmp_path, small_checkpoints, registry_session
):
    source = small_checkpoints.first
    version = Checkpoint.load(source).version
    steps = save_steps(source, tmp_path)
    for step in range(1, len(steps) + 2):  # before each step, and after the rename
        target = tmp_path / f"killed-before-step-{step}" / "ckpt"
        done = save_with_fault(source, target, "kill", step)
        assert done.returncode == -signal.SIGKILL, done.stderr
        assert target.exists() == (step > len(steps)), (step, steps)
        assert_no_broken_checkpoint(target, version, registry_session)
        if not target.exists():  # the interrupted save leaves nothing in the way of a retry
            assert len(leftovers(target)) == 1
            assert save_with_fault(source, target, "none").returncode == 0
            assert Checkpoint.load(target).version == version


def test_a_checkpoint_save_on_a_full_disk_fails_cleanly_at_any_step(
    tmp_path, small_checkpoints, registry_session
):
    source = small_checkpoints.first
    steps = save_steps(source, tmp_path)
    writes = [n for n, name in enumerate(steps, 1) if name != "os.replace"]
    for step in writes:
        target = tmp_path / f"full-from-step-{step}" / "ckpt"
        done = save_with_fault(source, target, "disk-full", step)
        assert done.returncode == 1
        error = done.stderr.strip().splitlines()[-1]
        assert "CheckpointError: could not write the checkpoint" in error, done.stderr
        assert "File too large" in error, error
        assert not target.exists() and leftovers(target) == [], step  # nothing left behind


@pytest.fixture(scope="module")
def small_cohort(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("fault-cohort") / "sim"
    simulate_cohort(120, folder, seed=3, feature_dim=FEATURE_DIM, signal=2.0)
    return folder


TRAIN_SETTINGS = ["--set", "epochs=1", "--set", "embed_dim=32", "--set", "val_fraction=0"]
FILE_SIZE_LIMIT = 16 * 1024  # bytes: the weights file of that model is about 75 KB


def limit_file_size(limit: int) -> Callable[[], None]:
    def preexec() -> None:  # in the child: writes past `limit` fail with EFBIG, as on a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

    return preexec


def train_command(cohort: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "clipmed", "train", "--cohort", str(cohort), "--out", str(out)]


@pytest.mark.slow  # three real trainings
def test_clipmed_train_killed_while_saving_leaves_no_broken_checkpoint(
    tmp_path, small_cohort, registry_session
):
    """A real `clipmed train` killed the moment its temporary folder appears."""
    caught = 0
    for run in range(3):
        target = tmp_path / f"run-{run}" / "ckpt"
        target.parent.mkdir()
        process = subprocess.Popen(
            train_command(small_cohort, target) + TRAIN_SETTINGS,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            while process.poll() is None:
                if any(p.name.startswith(".ckpt.") for p in target.parent.iterdir()):
                    process.send_signal(signal.SIGKILL)
                    caught += 1
                    break
                time.sleep(0.0005)
        finally:
            if process.poll() is None:
                process.kill()
            process.wait()
        if target.exists():  # the save finished before the kill landed
            assert leftovers(target) == []
            version = Checkpoint.load(target).version
        else:
            version = ""
        assert_no_broken_checkpoint(target, version, registry_session)
        if caught and not target.exists():
            break
    assert caught, "the temporary checkpoint folder was never seen; the save was not interrupted"


@pytest.mark.slow  # a real training
def test_clipmed_train_on_a_full_disk_fails_with_a_clear_error(tmp_path, small_cohort):
    target = tmp_path / "out" / "ckpt"
    done = subprocess.run(
        train_command(small_cohort, target) + TRAIN_SETTINGS,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=limit_file_size(FILE_SIZE_LIMIT),
    )
    assert done.returncode == 1, done.stderr  # a runtime error (2 is for usage errors)
    error = done.stderr.strip().splitlines()[-1]
    assert error.startswith(f"error: could not write the checkpoint {target}"), done.stderr
    assert "File too large" in error
    assert not target.exists() and leftovers(target) == []


# ---------------------------------------------------------------------------------------------
# ... and through the service: a train job whose save fails changes nothing that is served
# ---------------------------------------------------------------------------------------------
@contextmanager
def worker_process(settings: Settings, preexec: Callable[[], None]) -> Iterator[Path]:
    """`clipmed worker` on the service's database; yields the path of its log."""
    env = {
        **os.environ,
        "CLIPMED_DATA_DIR": str(settings.data_dir),
        "DATABASE_URL": settings.database_url,
        "CLIPMED_JOB_POLL_SECONDS": "0.2",
        "CLIPMED_WORKER_TORCH_THREADS": "1",
    }
    log = Path(settings.data_dir) / "worker.log"
    with open(log, "w") as stderr:  # a file: a pipe nobody reads would block the worker
        process = subprocess.Popen(
            [sys.executable, "-m", "clipmed", "worker"],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            preexec_fn=preexec,
        )
    try:
        yield log
    finally:
        process.kill()
        process.wait()


def test_a_train_job_whose_save_fails_registers_nothing_and_serving_goes_on(
    tmp_path, small_checkpoints, small_cohort
):
    """PostgreSQL only: a worker limited in file size can still write to a database server
    (a SQLite file would hit the limit itself)."""
    (tmp_path / "sim").symlink_to(small_cohort, target_is_directory=True)
    with fresh_database("postgresql", tmp_path) as url:
        migrate.upgrade(url)
        settings = Settings(data_dir=tmp_path, database_url=url, registry_poll_seconds=0.3)
        app = create_app(settings)
        with app.state.sessions() as session:
            first = registry.register_checkpoint(session, small_checkpoints.first)
            registry.activate_version(session, first.version)
        tokens = {role: add_user(app.state.sessions, role, role) for role in ROLES}
        with (
            running_server(app) as base_url,
            httpx.Client(base_url=base_url, timeout=60, headers=bearer(tokens["admin"])) as admin,
            worker_process(settings, limit_file_size(FILE_SIZE_LIMIT)) as worker_log,
        ):
            overrides = {"epochs": 1, "embed_dim": 32, "val_fraction": 0.2, "batch_size": 16}
            started = admin.post(
                "/api/v1/admin/jobs",
                json={"kind": "train", "cohort": "sim", "overrides": overrides, "activate": True},
            )
            assert started.status_code == 202, started.text
            job_id = started.json()["id"]
            deadline = time.monotonic() + 180
            while (body := admin.get(f"/api/v1/admin/jobs/{job_id}").json())["status"] in (
                "queued",
                "running",
            ):
                assert time.monotonic() < deadline, (body, worker_log.read_text()[-3000:])
                time.sleep(0.3)

            assert body["status"] == "failed", body
            assert "could not write the checkpoint" in body["error"], body["error"]
            assert "File too large" in body["error"]
            with app.state.sessions() as session:
                versions = registry.list_versions(session)
                made = session.scalars(select(ModelVersion).where(ModelVersion.job_id == job_id))
                assert list(made) == []
            assert [v.version for v in versions] == [first.version]
            checkpoints = Path(settings.checkpoints_dir)
            assert not checkpoints.exists() or list(checkpoints.iterdir()) == []

            time.sleep(3 * settings.registry_poll_seconds)  # the service followed the registry
            ready = admin.get("/readyz")
            assert ready.status_code == 200 and ready.json()["model_version"] == first.version
            explained = post_json(admin, np.ones((2, FEATURE_DIM)).tolist(), k=3)
            assert explained.status_code == 201, explained.text
            assert explained.json()["model_version"] == first.version
