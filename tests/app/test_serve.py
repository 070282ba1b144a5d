"""`clipmed serve` as a user runs it: migrate, register the default checkpoint, serve."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_serve_registers_the_default_checkpoint_and_answers(tmp_path, small_checkpoints):
    data = tmp_path / "data"
    shutil.copytree(small_checkpoints.first, data / "checkpoints" / "default")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update({"CLIPMED_DATA_DIR": str(data), "NO_COLOR": "1"})
    exe = Path(sys.executable).parent / "clipmed"
    proc = subprocess.Popen(
        [str(exe), "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                ready = httpx.get(f"{url}/readyz", timeout=5)
                if ready.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "clipmed serve did not become ready"
            time.sleep(0.25)
        assert ready.json()["model_version"] == small_checkpoints.first_version[0]
        assert httpx.get(f"{url}/api/v1/models", timeout=5).status_code == 401
        token = subprocess.run(
            [str(exe), "users", "token", "admin"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout.strip()
        headers = {"Authorization": f"Bearer {token}"}
        models = httpx.get(f"{url}/api/v1/models", timeout=5, headers=headers).json()
        assert [(m["version"], m["is_active"]) for m in models] == [
            (small_checkpoints.first_version[0], True)
        ]
        assert (data / "clipmed.db").is_file()

        # SQLite: the same command runs a job worker too
        job = httpx.post(
            f"{url}/api/v1/admin/jobs", json={"kind": "reindex"}, timeout=5, headers=headers
        ).json()
        deadline = time.monotonic() + 90
        while job["status"] not in ("succeeded", "failed", "cancelled"):
            assert time.monotonic() < deadline, f"no worker ran the job: {job}"
            time.sleep(0.25)
            job = httpx.get(
                f"{url}/api/v1/admin/jobs/{job['id']}", timeout=5, headers=headers
            ).json()
        assert job["status"] == "succeeded" and job["result"]["changed"] is False, job
    finally:
        proc.terminate()
        try:
            output, _ = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
    # The first start made an admin with a random password, printed once.
    assert re.search(r"created the first user: admin / \S{16,}", output), output
    worker = int(re.search(r"started a job worker \(pid (\d+)\)", output).group(1))
    # uvicorn re-raises SIGTERM once it has shut down, so the worker sees its parent go
    deadline = time.monotonic() + 20
    while Path(f"/proc/{worker}").exists():
        assert time.monotonic() < deadline, "the job worker outlived the service"
        time.sleep(0.25)
