"""docker-compose.yml without Docker: its services' very commands, run as processes against the
real PostgreSQL (migrate as the owner, web and workers as the application role the db's init
script makes) and Debian's caddy with deploy/Caddyfile for the `proxy` profile, driven over
HTTP(S). Fails when the compose file and the commands drift apart."""

from __future__ import annotations

import json
import os
import re
import signal
import ssl
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
from sqlalchemy import URL, create_engine, make_url, text
from support.checkpoints import FEATURE_DIM
from support.databases import fresh_postgres_database
from support.http import log_in
from support.servers import free_port

from app.deps import SESSION_COOKIE
from model.datasets.simulated import simulate_cohort

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
INIT_ROLE = REPO / "deploy" / "postgres-init" / "01-app-role.sh"
# The contents of ./secrets/ (passwords with every character a URL would escape)
SECRETS = {
    "postgres_password": "pg-s@cret/for:tests%",
    "db_app_password": "app-s@cret/for:tests%",
    "admin_password": "a long admin pw",
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


def test_secrets_are_files_and_nowhere_else(compose):
    """Every password reaches its service as a file under /run/secrets (a *_FILE variable), from
    ./secrets/, which git ignores; none is in the compose file or the environment."""
    declared = compose["secrets"]
    for name, spec in compose["services"].items():
        for key, value in (spec.get("environment") or {}).items():
            if "PASSWORD" in key or "TOKEN" in key:
                assert key.endswith("_FILE"), (name, key)
                secret = str(value).removeprefix("/run/secrets/")
                assert secret in spec["secrets"] and secret in declared, (name, key)
    assert all(spec["file"] == f"./secrets/{name}" for name, spec in declared.items())
    assert "/secrets/" in (REPO / ".gitignore").read_text().splitlines()
    text = COMPOSE.read_text()
    assert not any(secret in text for secret in SECRETS.values())
    assert "PASSWORD=" not in (REPO / ".env.example").read_text()


def test_migrate_is_the_owner_and_the_services_the_app_role(compose):
    """Only the one-shot migration logs in as the owner and holds its password; it grants the
    role web and the workers log in as, with their own password (the db's init script makes
    that role from the same secret file)."""
    services = compose["services"]
    migrate = services["migrate"]["environment"]
    assert migrate["CLIPMED_DB_USER"] == services["db"]["environment"]["POSTGRES_USER"]
    assert migrate["CLIPMED_DB_PASSWORD_FILE"] == "/run/secrets/postgres_password"
    assert services["migrate"]["secrets"] == ["postgres_password"]
    for name in ("web", "worker"):
        environment = services[name]["environment"]
        assert environment["CLIPMED_DB_USER"] == migrate["CLIPMED_DB_APP_ROLE"] == "clipmed_app"
        assert environment["CLIPMED_DB_PASSWORD_FILE"] == "/run/secrets/db_app_password"
        assert "postgres_password" not in services[name]["secrets"]
        assert "CLIPMED_DB_APP_ROLE" not in environment
    db = services["db"]
    assert set(db["secrets"]) == {"postgres_password", "db_app_password"}
    assert "./deploy/postgres-init:/docker-entrypoint-initdb.d:ro" in db["volumes"]
    assert "/run/secrets/db_app_password" in INIT_ROLE.read_text()


def test_web_has_no_fixed_host_port_and_trusts_only_the_proxy(compose):
    web, proxy = compose["services"]["web"], compose["services"]["proxy"]
    # "127.0.0.1::8000": an ephemeral host port per replica, so `--scale web=2` can start
    assert all(port.split(":")[-2] == "" for port in web["ports"])
    assert proxy["profiles"] == ["proxy"] and "edge" in web["networks"]
    trusted = interpolate(web["environment"]["CLIPMED_FORWARDED_ALLOW_IPS"], {})
    assert trusted == interpolate(proxy["networks"]["edge"]["ipv4_address"], {})
    assert "./deploy/Caddyfile:/etc/caddy/Caddyfile:ro" in proxy["volumes"]


@pytest.fixture
def stack_env(tmp_path) -> Iterator[dict[str, str]]:
    """What a local run of the compose services needs besides the compose file: a database of
    the test server instead of the `db` service (given by parts, as compose gives `db`; its
    owner stands in for `clipmed`, and an application role made by the db's init script,
    deploy/postgres-init/01-app-role.sh, for `clipmed_app`), the secret files, a data folder
    instead of the volume, and a small first training (a simulated cohort instead of LIDC) so
    the test takes seconds."""
    simulate_cohort(120, tmp_path / "sim", seed=4, feature_dim=FEATURE_DIM, signal=2.0)
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    for name, value in SECRETS.items():
        (secrets / name).write_text(value + "\n")
    role = f"infra_compose_{uuid.uuid4().hex[:8]}"
    with fresh_postgres_database("infra_compose") as url, app_role(url, role, secrets):
        parts = make_url(url)
        yield {
            "CLIPMED_DB_HOST": parts.host,
            "CLIPMED_DB_PORT": str(parts.port or 5432),
            "CLIPMED_DB_NAME": parts.database,
            # compose's user names -> the test server's (for local_environment())
            "ROLES": json.dumps({"clipmed": parts.username, "clipmed_app": role}),
            "CLIPMED_DATA_DIR": str(tmp_path),
            "CLIPMED_BOOTSTRAP_COHORT": "sim",
            "CLIPMED_BOOTSTRAP_OVERRIDES": json.dumps({"epochs": 2, "embed_dim": 32}),
            "CLIPMED_JOB_POLL_SECONDS": "0.2",
            "CLIPMED_REGISTRY_POLL_SECONDS": "0.3",
            "CLIPMED_WORKER_TORCH_THREADS": "1",
            "SECRETS_DIR": str(secrets),  # where /run/secrets/ is, for local_environment()
        }


@contextmanager
def app_role(url: str, role: str, secrets: Path) -> Iterator[None]:
    """The application role, made by the db service's init script as the postgres image runs it
    (as the owner, the password from the secret file), dropped afterwards."""
    parts = make_url(url)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "POSTGRES_"))} | {
        "PGHOST": parts.host or "127.0.0.1",
        "PGPORT": str(parts.port or 5432),
        "POSTGRES_USER": parts.username or "postgres",
        "POSTGRES_DB": parts.database or "",
        "CLIPMED_DB_APP_PASSWORD_FILE": str(secrets / "db_app_password"),
        "CLIPMED_DB_APP_ROLE": role,
    }
    made = subprocess.run(["sh", str(INIT_ROLE)], env=env, capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    try:
        yield
    finally:
        engine = create_engine(url, isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:
            connection.execute(text(f"DROP OWNED BY {role}"))
            connection.execute(text(f"DROP ROLE {role}"))
        engine.dispose()


def local_environment(environment: dict[str, str], stack_env: dict[str, str]) -> dict[str, str]:
    """A service's compose environment with /run/secrets/ pointing at the test's secret files,
    compose's database users replaced by the test server's, and the stand-ins (database host,
    port and name, data folder) on top."""
    secrets, roles = stack_env["SECRETS_DIR"], json.loads(stack_env["ROLES"])
    mounted = {k: v.replace("/run/secrets", secrets, 1) for k, v in environment.items()}
    if "CLIPMED_DB_USER" in mounted:
        mounted["CLIPMED_DB_USER"] = roles[mounted["CLIPMED_DB_USER"]]
    if "CLIPMED_DB_APP_ROLE" in mounted:
        mounted["CLIPMED_DB_APP_ROLE"] = roles[mounted["CLIPMED_DB_APP_ROLE"]]
    return mounted | {k: v for k, v in stack_env.items() if k not in ("SECRETS_DIR", "ROLES")}


def test_the_compose_services_commands_run_the_product(compose, stack_env, tmp_path):
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "CLIPMED_"))}
    port = free_port()
    processes: dict[str, subprocess.Popen] = {}

    def start(name: str, key: str | None = None) -> subprocess.Popen:
        command, environment = service(compose, name, base)
        assert command[0] == "clipmed"
        if name == "web":  # the same command on a free local port
            command[command.index("--port") + 1] = str(port)
            command[command.index("--host") + 1] = "127.0.0.1"
        env = base | local_environment(environment, stack_env)
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
            assert log_in(browser, "admin", SECRETS["admin_password"]).status_code == 303
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
        # and every connection of the web service and the workers is the application role's
        assert connected_roles(stack_env) == {json.loads(stack_env["ROLES"])["clipmed_app"]}
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


def connected_roles(stack_env: dict[str, str]) -> set[str]:
    """The roles of the other sessions on the stack's database."""
    owner = json.loads(stack_env["ROLES"])["clipmed"]
    url = URL.create(
        "postgresql+psycopg",
        username=owner,
        host=stack_env["CLIPMED_DB_HOST"],
        port=int(stack_env["CLIPMED_DB_PORT"]),
        database=stack_env["CLIPMED_DB_NAME"],
    )
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return set(
                connection.scalars(
                    text(
                        "SELECT usename FROM pg_stat_activity WHERE datname = current_database() "
                        "AND pid <> pg_backend_pid()"
                    )
                )
            )
    finally:
        engine.dispose()


def csrf(browser: httpx.Client) -> str:
    """The session's CSRF token, as the pages embed it for htmx."""
    page = browser.get("/")
    return re.search(r'name="csrf-token" content="([^"]+)"', page.text)[1]


CADDY = Path("/usr/bin/caddy")


def test_the_proxy_profile_serves_https_with_secure_cookies_and_real_addresses(
    compose, stack_env, tmp_path
):
    """`docker compose --profile proxy up`, as processes: migrate, web and Debian's caddy running
    deploy/Caddyfile (only its environment variables changed: free ports, the local web service
    as upstream, 127.0.0.1 as the site and as the proxy address the web service trusts). A
    browser logging in over HTTPS from 127.0.0.2 gets a Secure session cookie and HSTS; plain
    HTTP is redirected; the web service's access log names 127.0.0.2, not the proxy, even when
    the client sends its own X-Forwarded-For."""
    if not CADDY.exists():
        pytest.fail("caddy is missing: `make caddy` installs Debian's package")
    interpolation = {"CLIPMED_PROXY_IP": "127.0.0.1", "CLIPMED_SITE_ADDRESS": "127.0.0.1"}
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "CLIPMED_"))}
    stack = stack_env | {"CLIPMED_BOOTSTRAP_TRAIN": "false", "CLIPMED_LOG_FORMAT": "json"}
    web_port, http_port, https_port, admin_port = (free_port() for _ in range(4))
    processes: list[subprocess.Popen] = []

    def start(name: str) -> subprocess.Popen:
        command, environment = service(compose, name, interpolation)
        env = base | local_environment(environment, stack)
        if name == "proxy":
            command[command.index("--config") + 1] = str(REPO / "deploy" / "Caddyfile")
            command[0] = str(CADDY)
            env |= {
                "CLIPMED_WEB_HOST": "localhost",
                "CLIPMED_WEB_PORT": str(web_port),
                "CADDY_HTTP_PORT": str(http_port),
                "CADDY_HTTPS_PORT": str(https_port),
                "CADDY_ADMIN": f"127.0.0.1:{admin_port}",
                # the volume caddy-data (its local CA and certificates)
                "XDG_DATA_HOME": str(tmp_path / "caddy-data"),
                "XDG_CONFIG_HOME": str(tmp_path / "caddy-config"),
            }
        else:
            command[0] = str(Path(sys.executable).parent / command[0])
        if name == "web":
            command[command.index("--port") + 1] = str(web_port)
            command[command.index("--host") + 1] = "127.0.0.1"
        log = open(tmp_path / f"{name}.log", "w")  # noqa: SIM115 (closed below)
        process = subprocess.Popen(command, env=env, stdout=log, stderr=log)
        log.close()
        processes.append(process)
        return process

    def logs() -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in tmp_path.glob("*.log"))

    try:
        assert start("migrate").wait(timeout=120) == 0, logs()
        start("web")
        start("proxy")
        root_ca = tmp_path / "caddy-data" / "caddy" / "pki" / "authorities" / "local" / "root.crt"
        url = f"https://127.0.0.1:{https_port}"
        # the client connects from 127.0.0.2, so its address differs from the proxy's
        deadline = time.monotonic() + 120
        while True:
            try:
                if root_ca.exists():
                    transport = httpx.HTTPTransport(
                        local_address="127.0.0.2", verify=ssl.create_default_context(cafile=root_ca)
                    )
                    with httpx.Client(transport=transport) as probe:
                        if probe.get(f"{url}/healthz").status_code == 200:
                            break
            except (httpx.TransportError, OSError):
                pass
            assert time.monotonic() < deadline, f"the proxied stack never answered\n{logs()}"
            time.sleep(0.5)

        with httpx.Client(base_url=url, transport=transport, timeout=30) as browser:
            # the TLS certificate is the one Caddy's local CA issued (verified against its root)
            response = log_in(browser, "admin", SECRETS["admin_password"])
            assert response.status_code == 303, response.text
            cookie = response.headers["set-cookie"]
            assert cookie.startswith(f"{SESSION_COOKIE}=") and "Secure" in cookie
            home = browser.get("/", headers={"X-Forwarded-For": "203.0.113.9"})
            assert home.status_code == 200
            assert home.headers["strict-transport-security"].startswith("max-age=")

        with httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2")) as plain_http:
            plain = plain_http.get(f"http://127.0.0.1:{http_port}/login")
        assert plain.status_code in (301, 308)
        assert plain.headers["location"].startswith("https://127.0.0.1")
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
    access = [
        json.loads(line)
        for line in (tmp_path / "web.log").read_text().splitlines()
        if line.startswith("{") and '"route"' in line
    ]
    logins = [line for line in access if line["path"] == "/login" and line["method"] == "POST"]
    assert logins and all(line["client"] == "127.0.0.2" for line in logins), logs()
    homes = [line for line in access if line["path"] == "/" and line["method"] == "GET"]
    assert homes and all(line["client"] == "127.0.0.2" for line in homes), logs()
