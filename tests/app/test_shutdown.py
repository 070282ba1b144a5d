"""`clipmed serve` on SIGTERM: stops accepting at once, finishes the requests in flight, exits;
and a request that never ends holds the exit back no longer than the shutdown timeout.

(A worker handing its job back on SIGTERM: tests/app/test_jobs.py.)
"""

from __future__ import annotations

import json
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import suppress

import httpx
from sqlalchemy import create_engine
from sqlalchemy.orm import Session
from support.inputs import case
from support.servers import serve_process

from app import accounts


def admin_token(data) -> str:
    engine = create_engine(f"sqlite:///{data / 'clipmed.db'}")
    try:
        with Session(engine) as session:
            return accounts.create_token(session, accounts.get_user(session, "admin"))
    finally:
        engine.dispose()


def refuses_connections(url: str, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{url}/healthz", timeout=1)
        except httpx.ConnectError:
            return True
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    return False


def test_sigterm_finishes_the_request_in_flight_and_refuses_new_ones(tmp_path, small_checkpoints):
    data = tmp_path / "data"
    shutil.copytree(small_checkpoints.first, data / "checkpoints" / "default")
    with serve_process(data, tmp_path / "serve.log", log_format="json") as (proc, url):
        headers = {
            "Authorization": f"Bearer {admin_token(data)}",
            "Content-Type": "application/json",
        }
        body = json.dumps({"features": case().tolist(), "k": 3}).encode()
        refused_meanwhile = []

        def slow_body() -> Iterator[bytes]:
            yield body[:20]
            time.sleep(0.5)  # the request is in flight: its head and a first chunk are in
            proc.send_signal(signal.SIGTERM)
            refused_meanwhile.append(refuses_connections(url, within=5))
            yield body[20:]

        response = httpx.post(
            f"{url}/api/v1/explanations", content=slow_body(), headers=headers, timeout=30
        )
        assert response.status_code == 201, response.text
        assert response.json()["model_version"] == small_checkpoints.first_version[0]
        assert refused_meanwhile == [True], "the server still accepted connections"
        returncode = proc.wait(timeout=30)
    # uvicorn ends by re-raising the SIGTERM it handled, once the shutdown is complete
    assert returncode == -signal.SIGTERM
    log = (tmp_path / "serve.log").read_text()
    assert "Application shutdown complete" in log and "Traceback" not in log
    assert refuses_connections(url, within=1)


def test_a_request_that_never_ends_holds_the_exit_no_longer_than_the_timeout(
    tmp_path, small_checkpoints
):
    data = tmp_path / "data"
    shutil.copytree(small_checkpoints.first, data / "checkpoints" / "default")
    log_file = tmp_path / "serve.log"
    with serve_process(data, log_file, shutdown_timeout_seconds="2") as (proc, url):
        headers = {
            "Authorization": f"Bearer {admin_token(data)}",
            "Content-Type": "application/json",
        }
        stalled = threading.Event()
        release = threading.Event()

        def never_finished() -> Iterator[bytes]:
            yield b'{"features": '
            stalled.set()
            release.wait(60)  # the client goes quiet, connection open
            yield b"[]}"

        def client() -> None:
            with suppress(httpx.TransportError):  # the server gives up on it: expected
                httpx.post(f"{url}/api/v1/explanations", content=never_finished(), headers=headers)

        thread = threading.Thread(target=client, daemon=True)
        thread.start()
        try:
            assert stalled.wait(10)
            time.sleep(0.5)
            signalled = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            returncode = proc.wait(timeout=30)
            took = time.monotonic() - signalled
        finally:
            release.set()
            thread.join(timeout=10)
    assert returncode == -signal.SIGTERM
    assert 1.5 < took < 10, f"exited {took:.1f} s after SIGTERM with a 2 s shutdown timeout"
    assert "Application shutdown complete" in log_file.read_text()
