"""What a running job sees of its worker: its row, settings and sessions, progress and log,
and the checks that stop it at its next progress point (cancelled, lease lost, worker stopping).
The handlers (`app.jobs.tasks`) and the worker (`app.jobs.worker`) both import this module;
neither imports the other.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.jobs import messages, queue
from app.jobs.queue import LeaseLost
from app.tables import Job

log = logging.getLogger(__name__)

PROGRESS_EVERY = 1.0  # seconds between progress writes (training reports every batch)


class Cancelled(Exception):
    """An admin cancelled the job."""


class Stopping(Exception):
    """The worker was asked to stop (SIGTERM); the job goes back to the queue."""


@dataclass
class Outcome:
    """A job's success: its result, and what to write in the same transaction as its status."""

    result: dict[str, Any]
    side_effects: Callable[[Session], None] | None = None
    message: str = messages.SUCCEEDED


@dataclass
class Waiting:
    """The job fanned out child jobs and is to be claimed again when they have all ended."""

    message: str


@dataclass
class JobContext:
    job: Job
    token: str
    settings: Settings
    sessions: sessionmaker[Session]
    stop: threading.Event
    lost: threading.Event = field(default_factory=threading.Event)
    _lines: deque[str] = field(default_factory=lambda: deque(maxlen=500))
    _last_write: float = 0.0

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.job.params)

    @property
    def log_text(self) -> str:
        return "\n".join(self._lines)

    def log(self, line: str) -> None:
        stamp = datetime.now(UTC).strftime("%H:%M:%S")
        self._lines.append(f"{stamp} {line}")
        log.info("job %s: %s", self.job.id, line)

    def check(self) -> None:
        if self.stop.is_set():
            raise Stopping
        if self.lost.is_set():
            raise LeaseLost(f"job {self.job.id} lost its lease")

    def progress(self, fraction: float, message: str, force: bool = False) -> None:
        """Reports progress (at most once a second unless `force`) and stops the job here if it
        was cancelled, its lease was lost, or the worker is stopping."""
        self.check()
        if not force and time.monotonic() - self._last_write < PROGRESS_EVERY:
            return
        self._last_write = time.monotonic()
        with self.sessions() as session:
            cancel = queue.report(
                session,
                self.job,
                self.token,
                self.settings.job_lease_seconds,
                fraction,
                message,
                self.log_text,
            )
        if cancel:
            raise Cancelled

    def work_dir(self, *parts: str) -> Path:
        assert self.settings.data_dir is not None
        folder = Path(self.settings.data_dir, "jobs", str(self.job.id), *parts)
        folder.mkdir(parents=True, exist_ok=True)
        return folder


Handler = Callable[[JobContext], Outcome | Waiting]
