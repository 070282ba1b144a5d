"""`clipmed serve` as a user runs it: migrate, register the default checkpoint, serve."""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import httpx
from support.servers import free_port


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
        with closing(sqlite3.connect(data / "clipmed.db")) as db:  # the first activation: audited
            activations = db.execute(
                "SELECT actor, target_id, outcome FROM audit_events WHERE action = ?",
                ("model.activate",),
            ).fetchall()
        assert activations == [("clipmed serve", small_checkpoints.first_version[0], "success")]

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


def gone(pid: int) -> bool:
    """No such process, or only its exit status left (a zombie not yet reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def test_the_embedded_worker_does_not_outlive_a_serve_killed_at_start(tmp_path):
    """`clipmed serve` killed (SIGKILL: no clean-up runs) right after starting its worker,
    while the worker is still starting up: the worker must not run on as an orphan."""
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update({"CLIPMED_DATA_DIR": str(tmp_path / "data"), "CLIPMED_BOOTSTRAP_TRAIN": "false"})
    exe = Path(sys.executable).parent / "clipmed"
    log = tmp_path / "serve.log"
    worker = None
    with log.open("w") as output:  # a file, not a pipe: the worker inherits it and lives on
        proc = subprocess.Popen(
            [str(exe), "serve", "--port", str(free_port())],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 90
        while worker is None:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"no worker started: {log.read_text()}"
            found = re.search(r"started a job worker \(pid (\d+)\)", log.read_text())
            worker = int(found.group(1)) if found else None
            time.sleep(0.01)
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 60
        while not gone(worker):
            assert time.monotonic() < deadline, "the job worker outlived the killed service"
            time.sleep(0.1)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if worker is not None and not gone(worker):
            os.kill(worker, 9)


def test_a_worker_whose_parent_has_gone_does_not_start(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["CLIPMED_DATA_DIR"] = str(tmp_path)
    exe = Path(sys.executable).parent / "clipmed"
    # Its parent is this test process, not the one named: as if that one had died already.
    not_the_parent = os.getppid()
    started = subprocess.run(
        [str(exe), "worker", "--parent-pid", str(not_the_parent)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert started.returncode == 0, started.stderr
    assert f"the parent process {not_the_parent} has gone; not starting" in started.stderr
