"""Admin jobs end to end: real `clipmed worker` processes on SQLite and PostgreSQL, a real
server, real training on a small simulated cohort; kills, stops, cancels and fan-out."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from sqlalchemy import select
from support.checkpoints import FEATURE_DIM
from support.databases import DATABASES, fresh_database
from support.http import add_user, bearer, post_json
from support.servers import running_server

from app import migrate, registry
from app.config import Settings
from app.jobs import queue
from app.jobs.tasks import HANDLERS
from app.jobs.worker import Worker
from app.main import create_app
from app.tables import EvaluationReport, Job, ModelVersion
from model.datasets.simulated import simulate_cohort

LEASE_SECONDS = 2.0
REPO = Path(__file__).resolve().parents[2]
# Small and quick: 120 simulated cases, a 32-d model; epochs set per test.
TINY = {"embed_dim": 32, "batch_size": 16, "val_fraction": 0.2, "patience": 0}


@dataclass
class JobService:
    url: str
    app: object
    settings: Settings
    admin: httpx.Client
    tokens: dict[str, str]

    def session(self):
        return self.app.state.sessions()

    def job(self, job_id: int) -> Job:
        with self.session() as session:
            return queue.get(session, job_id)

    def start(self, **params) -> int:
        response = self.admin.post("/api/v1/admin/jobs", json=params)
        assert response.status_code == 202, response.text
        assert response.headers["location"] == f"/api/v1/admin/jobs/{response.json()['id']}"
        return response.json()["id"]

    def wait(self, job_id: int, done: Callable[[dict], bool], timeout: float = 180) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            body = self.admin.get(f"/api/v1/admin/jobs/{job_id}").json()
            if done(body):
                return body
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} did not get there in {timeout} s: {body}")
            time.sleep(0.2)

    def wait_ended(self, job_id: int, timeout: float = 180) -> dict:
        return self.wait(job_id, lambda b: b["status"] in ("succeeded", "failed", "cancelled"))


def ended(status: str) -> Callable[[dict], bool]:
    return lambda body: body["status"] == status


@pytest.fixture(params=DATABASES)
def job_service(request, tmp_path, small_checkpoints) -> Iterator[JobService]:
    simulate_cohort(120, tmp_path / "sim", seed=3, feature_dim=FEATURE_DIM, signal=2.0)
    with fresh_database(request.param, tmp_path) as url:
        migrate.upgrade(url)
        settings = Settings(
            data_dir=tmp_path,
            database_url=url,
            job_lease_seconds=LEASE_SECONDS,
            job_poll_seconds=0.2,
            registry_poll_seconds=0.3,
        )
        app = create_app(settings)
        with app.state.sessions() as session:
            first = registry.register_checkpoint(session, small_checkpoints.first)
            registry.activate_version(session, first.version)
        tokens = {role: add_user(app.state.sessions, role, role) for role in ROLES}
        with (
            running_server(app) as base_url,
            httpx.Client(base_url=base_url, timeout=60, headers=bearer(tokens["admin"])) as admin,
        ):
            yield JobService(base_url, app, settings, admin, tokens)


ROLES = ("clinician", "radiologist", "admin")


@pytest.fixture
def workers(job_service) -> Iterator[Callable[[], subprocess.Popen]]:
    """`start()` runs one more `clipmed worker` process on the service's database."""
    settings = job_service.settings
    env = {
        **os.environ,
        "CLIPMED_DATA_DIR": str(settings.data_dir),
        "DATABASE_URL": settings.database_url,
        "CLIPMED_JOB_LEASE_SECONDS": str(LEASE_SECONDS),
        "CLIPMED_JOB_POLL_SECONDS": "0.2",
        "CLIPMED_WORKER_TORCH_THREADS": "1",
    }
    started: list[subprocess.Popen] = []
    logs = Path(settings.data_dir) / "worker-logs"
    logs.mkdir(exist_ok=True)

    def start() -> subprocess.Popen:
        # a file, not a pipe nobody reads: a full pipe would block the worker's logging
        with open(logs / f"worker-{len(started)}.log", "w") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "clipmed", "worker"],
                cwd=REPO,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait()


def running_on(process: subprocess.Popen) -> Callable[[dict], bool]:
    """The job runs on that worker process and has reported progress."""

    def check(body: dict) -> bool:
        return (
            body["status"] == "running"
            and body["progress"] > 0
            and (f":{process.pid}:" in (body["log"] or ""))
        )

    return check


def versions_made_by(service: JobService, job_id: int) -> list[ModelVersion]:
    with service.session() as session:
        return list(session.scalars(select(ModelVersion).where(ModelVersion.job_id == job_id)))


# ---------------------------------------------------------------------------------------------
def test_concurrent_claims_never_take_the_same_job(job_service):
    """Eight claimers race over 40 queued jobs: each job is claimed exactly once."""
    sessions = job_service.app.state.sessions
    with sessions() as session:
        queued = {queue.enqueue(session, "probe", {}).id for _ in range(40)}
    claimed: list[int] = []
    lock = threading.Lock()

    def claimer(n: int) -> None:
        while True:
            with sessions() as session:
                job = queue.claim(session, f"claimer-{n}", 60, kinds=("probe",))
            if job is None:
                return
            with lock:
                claimed.append(job.id)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(claimer, range(8)))
    assert sorted(claimed) == sorted(queued)  # every job once, none twice


def test_train_and_evaluate_run_in_worker_processes(job_service, workers):
    service = job_service
    workers(), workers()
    train_id = service.start(kind="train", cohort="sim", overrides={**TINY, "epochs": 2})
    body = service.wait(train_id, ended("succeeded"))
    version = body["result"]["version"]
    assert body["progress"] == 1.0 and body["attempts"] == 1
    assert "epoch 2/2" in body["log"]
    assert set(body["result"]["metrics"]) >= {"val/cases", "val/density/vote_macro_f1"}
    models = {m["version"]: m for m in service.admin.get("/api/v1/models").json()}
    assert not models[version]["is_active"]  # registered, never activated unless asked
    assert models[version]["metrics"] == body["result"]["metrics"]
    assert [m.version for m in versions_made_by(service, train_id)] == [version]

    eval_id = service.start(kind="evaluate", cohort="sim", folds=3, overrides={"epochs": 1})
    body = service.wait(eval_id, ended("succeeded"))
    folds = body["children"]
    assert [c["status"] for c in folds] == ["succeeded"] * 3
    report_dir = Path(body["result"]["report_dir"])
    assert {"summary.md", "metrics.csv", "per_class.csv", "retrieval.csv"} <= {
        p.name for p in report_dir.iterdir()
    }
    assert (report_dir / "figures" / "boxplots.png").is_file()
    assert "SIMULATED" in (report_dir / "summary.md").read_text()
    with service.session() as session:
        report = session.scalar(select(EvaluationReport).where(EvaluationReport.job_id == eval_id))
    assert report is not None and report.folds == 3 and report.simulated
    assert set(report.summary["density"]) >= {"vote", "logreg", "majority"}
    assert report.train_config["epochs"] == 1


def test_a_killed_worker_loses_nothing_and_another_finishes_the_job(job_service, workers):
    service = job_service
    first = workers()
    job_id = service.start(kind="train", cohort="sim", overrides={**TINY, "epochs": 12})
    service.wait(job_id, running_on(first))
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert versions_made_by(service, job_id) == []  # nothing half-registered

    second = workers()
    body = service.wait(job_id, ended("succeeded"))
    assert body["attempts"] == 2
    assert f":{second.pid}:" in body["log"]  # the second worker finished it
    assert len(versions_made_by(service, job_id)) == 1


def test_a_job_whose_worker_died_too_often_fails(job_service, workers):
    service = job_service
    with service.session() as session:
        job = queue.enqueue(session, "train", {"kind": "train"}, max_attempts=1)
        # a worker took it and died: its lease ran out long ago
        assert queue.claim(session, "dead-worker", -1).id == job.id
    workers()
    body = service.wait(job.id, ended("failed"))
    assert "lease expired" in body["error"] and body["attempts"] == 1


def test_sigterm_hands_the_job_back_and_cancel_stops_it(job_service, workers):
    service = job_service
    first = workers()
    job_id = service.start(kind="train", cohort="sim", overrides={**TINY, "epochs": 500})
    service.wait(job_id, running_on(first))
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=30) == 0
    body = service.admin.get(f"/api/v1/admin/jobs/{job_id}").json()
    assert (body["status"], body["attempts"]) == ("queued", 0)
    assert "handed back" in body["log"]

    second = workers()
    service.wait(job_id, running_on(second))
    cancelled = service.admin.post(f"/api/v1/admin/jobs/{job_id}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["cancel_requested"]
    body = service.wait(job_id, ended("cancelled"), timeout=60)
    assert versions_made_by(service, job_id) == []
    again = service.admin.post(f"/api/v1/admin/jobs/{job_id}/cancel")
    assert again.status_code == 409 and "already ended" in again.json()["detail"]


def test_cancelling_a_queued_evaluation_cancels_it_at_once(job_service):
    service = job_service
    job_id = service.start(kind="evaluate", cohort="sim", folds=2)
    body = service.admin.post(f"/api/v1/admin/jobs/{job_id}/cancel").json()
    assert body["status"] == "cancelled"
    with service.session() as session:  # no worker will ever claim it
        assert queue.claim(session, "w", 60) is None


def test_bad_job_requests_are_refused_by_name(job_service):
    admin = job_service.admin
    cases = [
        ({"kind": "train", "cohort": "../etc"}, "cohort"),
        ({"kind": "train", "overrides": {"epochs": "many"}}, "epochs"),
        ({"kind": "train", "overrides": {"text_encoder": "/tmp"}}, "text_encoder"),
        ({"kind": "evaluate", "folds": 1}, "folds"),
        ({"kind": "dance"}, "dance"),
    ]
    for body, named in cases:
        response = admin.post("/api/v1/admin/jobs", json=body)
        assert response.status_code == 422 and named in response.json()["detail"], body
    with job_service.session() as session:
        assert queue.list_jobs(session) == []


def test_a_train_job_on_a_missing_cohort_is_refused_naming_the_available_ones(job_service):
    service = job_service
    refused = service.admin.post("/api/v1/admin/jobs", json={"kind": "train", "cohort": "nowhere"})
    assert refused.status_code == 422, refused.text
    detail = refused.json()["detail"]
    assert "no cohort 'nowhere'" in detail and "available:" in detail
    assert service.admin.get("/api/v1/admin/jobs").json() == []


def test_reindex_adds_corrected_cases_and_the_service_follows(job_service):
    service = job_service
    with ExitStack() as stack:
        clients = {
            role: stack.enter_context(
                httpx.Client(base_url=service.url, timeout=60, headers=bearer(token))
            )
            for role, token in service.tokens.items()
        }
        # a case where the served read-out and the vote disagree on a field left unflagged,
        # so the corrected case shows which of the two training started from
        for seed in range(5, 60):
            rng = np.random.default_rng(seed)
            features = rng.normal(size=(4, FEATURE_DIM)).astype(np.float32)
            explained = post_json(clients["clinician"], features.tolist()).json()
            fields = explained["explanation"]["fields"]
            if any(f["served"]["value"] != f["vote"]["value"] for f in fields[1:]):
                break
        else:
            raise AssertionError("no case where the served answer and the vote disagree")
        before = explained["catalog_version"]
        flagged = fields[0]
        value = next(v for v in flagged["vote"]["tally"] if v != flagged["vote"]["value"])
        flag = (
            clients["radiologist"]
            .post(
                f"/api/v1/explanations/{explained['id']}/flags",
                json={"field": flagged["field"], "reason": "wrong_value", "corrected_value": value},
            )
            .json()
        )
        clients["admin"].post(f"/api/v1/flags/{flag['id']}/review", json={"decision": "accept"})

        job_id = service.start(kind="reindex")
        Worker(service.settings, service.app.state.sessions, HANDLERS).run(max_jobs=1)
        body = service.admin.get(f"/api/v1/admin/jobs/{job_id}").json()
        assert body["status"] == "succeeded", body
        result = body["result"]
        assert result["changed"] and result["added_cases"] == 1
        assert result["previous_catalog_version"] == before

        # the web service follows the registry by itself: the corrected case becomes the
        # most similar training case of its own features, under its explanation's id
        deadline = time.monotonic() + 30
        while True:
            again = post_json(clients["clinician"], features.tolist()).json()
            similar = again["explanation"]["similar_cases"]
            if similar[0]["case_id"] == f"explanation:{explained['id']}":
                break
            assert time.monotonic() < deadline, "the service did not pick up the new index"
            time.sleep(0.2)
        assert similar[0]["similarity"] > 0.999
        assert similar[0]["descriptors"][flagged["field"]] is not None
        # trained on what the reviewer saw: the served answers, with the correction applied
        assert {f["field"]: similar[0]["descriptors"][f["field"]] for f in fields[1:]} == {
            f["field"]: f["served"]["label"] for f in fields[1:]
        }
        assert (again["model_version"], again["catalog_version"]) == (
            explained["model_version"],
            result["catalog_version"],
        )
        assert service.admin.get("/readyz").json()["catalog_version"] == result["catalog_version"]
        history = service.admin.get("/api/v1/models/history").json()
        assert (history[0]["action"], history[0]["job_id"]) == ("reindex", job_id)
        assert history[0]["previous_catalog_version"] == before

        # nothing new to add: a second re-index changes nothing
        second = service.start(kind="reindex")
        Worker(service.settings, service.app.state.sessions, HANDLERS).run(max_jobs=1)
        assert service.job(second).result["changed"] is False


def test_activation_over_rest_during_a_stream_of_explanations(service):
    """Every response pairs a model with its own catalog while an admin switches versions back
    and forth; every switch is in the history with who made it."""
    first, second = service.checkpoints.first_version, service.checkpoints.second_version
    features = np.random.default_rng(9).normal(size=(4, FEATURE_DIM)).astype(np.float32).tolist()
    stop = threading.Event()

    def stream(_: int) -> list[tuple[str, str]]:
        seen = []
        with httpx.Client(
            base_url=service.url, timeout=60, headers=bearer(service.tokens["clinician"])
        ) as http:
            while not stop.is_set():
                body = post_json(http, features).json()
                inner = body["explanation"]
                assert (body["model_version"], body["catalog_version"]) == (
                    inner["model_version"],
                    inner["catalog_version"],
                )
                seen.append((body["model_version"], body["catalog_version"]))
        return seen

    admin = httpx.Client(base_url=service.url, timeout=60, headers=bearer(service.tokens["admin"]))
    try:
        with ThreadPoolExecutor(3) as pool:
            streams = [pool.submit(stream, i) for i in range(3)]
            for version in [second[0], first[0]] * 3:
                response = admin.post(f"/api/v1/models/{version}/activate")
                assert response.status_code == 200 and response.json()["is_active"]
                time.sleep(0.1)
            stop.set()
            seen = [pair for s in streams for pair in s.result()]
        assert set(seen) <= {first, second} and len(set(seen)) == 2
        history = admin.get("/api/v1/models/history").json()[:6]
        assert [h["version"] for h in history] == [first[0], second[0]] * 3
        assert {h["actor"] for h in history} == {"admin"}
        assert history[1]["previous_version"] == first[0]
    finally:
        stop.set()
        service.activate(first[0])
        admin.close()


def test_only_admins_start_jobs_or_activate(job_service):
    for role in ("clinician", "radiologist"):
        with httpx.Client(
            base_url=job_service.url, headers=bearer(job_service.tokens[role])
        ) as http:
            assert http.post("/api/v1/admin/jobs", json={"kind": "reindex"}).status_code == 403
            assert http.get("/api/v1/admin/jobs").status_code == 403
    with job_service.session() as session:
        assert queue.list_jobs(session) == []
        assert queue.counts_by_status(session) == {}


def test_a_train_job_builds_the_case_index_the_settings_ask_for(job_service):
    service = job_service
    settings = service.settings.model_copy(update={"case_index": "hnsw"})
    job_id = service.start(kind="train", cohort="sim", overrides={**TINY, "epochs": 1})
    Worker(settings, service.app.state.sessions, HANDLERS).run(max_jobs=1)
    result = service.job(job_id).result
    spec = json.loads((Path(result["path"]) / "cases.json").read_text())
    assert spec["kind"] == "hnsw"  # 120 cases: "auto" would have chosen the exact index


def test_overrides_out_of_range_are_refused_by_name_and_nothing_is_queued(job_service):
    admin = job_service.admin
    cases = [
        ({"epochs": 0}, "overrides.epochs: Input should be greater than or equal to 1"),
        ({"epochs": -1}, "overrides.epochs: Input should be greater than or equal to 1"),
        ({"epochs": 1001}, "overrides.epochs: Input should be less than or equal to 1000"),
        ({"epochs": "\u0663"}, "overrides.epochs: Input should be a valid integer"),
        ({"epochs": "3"}, "overrides.epochs: Input should be a valid integer"),
        ({"epochs": True}, "overrides.epochs: Input should be a valid integer"),
        ({"epochs": 2.5}, "overrides.epochs: Input should be a valid integer"),
        ({"batch_size": 1}, "overrides.batch_size"),
        ({"lr": 0}, "overrides.lr"),
        ({"dropout": 1.0}, "overrides.dropout"),
        ({"seed": -1}, "overrides.seed"),
        ({"device": "tpu"}, "overrides.device"),
        ({"feature_dim": 3}, "overrides.feature_dim: Extra inputs are not permitted"),
    ]
    for overrides, named in cases:
        for kind in ("train", "evaluate"):
            body = {"kind": kind, "cohort": "sim", "overrides": overrides}
            response = admin.post("/api/v1/admin/jobs", json=body)
            assert response.status_code == 422, (body, response.text)
            assert named in response.json()["detail"], (body, response.json())
    too_long = b'{"kind": "train", "overrides": {"epochs": ' + b"9" * 5000 + b"}}"
    response = admin.post(
        "/api/v1/admin/jobs", content=too_long, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert len(response.text) < 1000
    with job_service.session() as session:
        assert queue.list_jobs(session) == []


def test_a_stored_train_job_of_zero_epochs_fails_and_registers_nothing(job_service):
    service = job_service
    with service.session() as session:  # queued before the API checked ranges, say
        job = queue.enqueue(
            session, "train", {"kind": "train", "cohort": "sim", "overrides": {"epochs": 0}}
        )
        versions = session.scalars(select(ModelVersion.version)).all()
    Worker(service.settings, service.app.state.sessions, HANDLERS).run(max_jobs=1)
    body = service.admin.get(f"/api/v1/admin/jobs/{job.id}").json()
    assert body["status"] == "failed", body
    assert "epochs" in body["error"] and "greater than or equal to 1" in body["error"], body
    with service.session() as session:
        assert session.scalars(select(ModelVersion.version)).all() == versions
