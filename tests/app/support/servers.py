"""Running the service for a test: in a thread (uvicorn on a free port) or as a real `clipmed
serve` process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import uvicorn

from app.config import Settings
from support.http import TEST_PASSWORD

MAX_UPLOAD_BYTES = 256 * 1024  # small, so a too-large body still fits the socket buffers


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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---------------------------------------------------------------------------------------------
# `clipmed serve` itself
# ---------------------------------------------------------------------------------------------
@contextmanager
def serve_process(data: Path, log_file: Path, **settings: str) -> Iterator[tuple]:
    """`clipmed serve` on a free port with these CLIPMED_* settings, its stdout and stderr
    going to `log_file`; yields (process, base URL) once /healthz answers."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update(
        {
            "CLIPMED_DATA_DIR": str(data),
            "CLIPMED_ADMIN_PASSWORD": TEST_PASSWORD,
            "CLIPMED_EMBEDDED_WORKER": "off",
            "CLIPMED_BOOTSTRAP_TRAIN": "false",
            "NO_COLOR": "1",
        }
    )
    env.update({f"CLIPMED_{k.upper()}": v for k, v in settings.items()})
    exe = Path(sys.executable).parent / "clipmed"
    with log_file.open("w") as out:
        proc = subprocess.Popen(
            [str(exe), "serve", "--port", str(port)], env=env, stdout=out, stderr=out
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, log_file.read_text()
            try:
                if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "clipmed serve did not start"
            time.sleep(0.25)
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
