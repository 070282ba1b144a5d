"""A throwaway PostgreSQL cluster a test may stop and start at will (the shared test server is
never restarted): initdb into a temporary folder, its own port and socket folder, trust auth.

initdb refuses to run as root, so under root the cluster belongs to the `postgres` OS user.
Without the server binaries the tests using it skip, or fail under CLIPMED_REQUIRE_POSTGRES=1
(as the other PostgreSQL tests do, so CI never passes by skipping them).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REQUIRED = os.environ.get("CLIPMED_REQUIRE_POSTGRES") == "1"


def _bin_dir() -> Path | None:
    """The newest installed server's binaries (Debian keeps them off PATH)."""
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    candidates = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    candidates.sort(key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    return Path(candidates[-1]).parent if candidates else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _unavailable(reason: str) -> None:
    if REQUIRED:
        pytest.fail(f"CLIPMED_REQUIRE_POSTGRES=1 but {reason}")
    pytest.skip(reason)


class PrivateCluster:
    def __init__(self, bin_dir: Path, root: Path, os_user: str | None) -> None:
        self.bin_dir = bin_dir
        self.root = root  # data/, the socket and the server log
        self.os_user = os_user  # run the server binaries as this user (None: as ourselves)
        self.port = _free_port()

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str, timeout: float = 60) -> None:
        command = [str(self.bin_dir / tool), *args]
        if self.os_user is not None:
            command = ["runuser", "-u", self.os_user, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr or done.stdout}")

    def init(self) -> None:
        # --no-sync only skips initdb's own fsync; the running server syncs as usual.
        self._run("initdb", "-D", str(self.root / "data"), "-A", "trust", "-U", "postgres",
                  "-E", "UTF8", "--no-sync")  # fmt: skip

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        self._run("pg_ctl", "-D", str(self.root / "data"), "-o", options,
                  "-l", str(self.root / "server.log"), "-w", "-t", "60", "start")  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        """`fast`: clients are disconnected, a clean shutdown; `immediate`: like a crash, the
        next start recovers from the write-ahead log."""
        self._run("pg_ctl", "-D", str(self.root / "data"), "-m", mode, "-w", "-t", "60", "stop")

    def kill(self) -> None:
        """SIGQUIT to the postmaster (an immediate shutdown), when pg_ctl could not stop it."""
        try:
            pid = int((self.root / "data" / "postmaster.pid").read_text().split()[0])
            os.kill(pid, signal.SIGQUIT)
        except (OSError, ValueError, IndexError):
            pass

    def is_running(self) -> bool:
        return (self.root / "data" / "postmaster.pid").exists()

    def log_tail(self, lines: int = 40) -> str:
        path = self.root / "server.log"
        return "\n".join(path.read_text().splitlines()[-lines:]) if path.exists() else ""


@contextmanager
def private_cluster() -> Iterator[PrivateCluster]:
    """A started cluster, stopped and deleted afterwards whatever happens."""
    bin_dir = _bin_dir()
    if bin_dir is None:
        _unavailable("no PostgreSQL server binaries (initdb, pg_ctl) to run a private cluster")
    os_user = None
    if os.geteuid() == 0:
        try:
            os_user = pwd.getpwnam("postgres").pw_name
        except KeyError:
            _unavailable("running as root and there is no `postgres` OS user to run initdb as")
    root = Path(tempfile.mkdtemp(prefix="clipmed-pg-"))
    if os_user is not None:
        entry = pwd.getpwnam(os_user)
        os.chown(root, entry.pw_uid, entry.pw_gid)
    cluster = PrivateCluster(bin_dir, root, os_user)
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        if cluster.is_running():
            try:
                cluster.stop("immediate")
            except (RuntimeError, subprocess.TimeoutExpired):
                cluster.kill()
        shutil.rmtree(root, ignore_errors=True)
