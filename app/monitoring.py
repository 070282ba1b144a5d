"""Prometheus metrics of the web service, in a registry of its own per app (tests build many).

- counted as they happen: requests and their latency by route template (never the raw path,
  whose ids would make a series per explanation), explanations stored by model version;
- read at scrape time: the served model and its load time (from the ServingState), jobs by
  status and the durations of recently finished jobs (from the jobs table, so every replica
  reports the same queue, whichever process ran the jobs).

The requests are counted by `app.middleware.observe.ObserveRequests`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import (
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from sqlalchemy import event, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from app.db import as_utc
from app.jobs import queue
from app.serving import ServingState
from app.tables import FINISHED, Explanation, Job, JobStatus

log = logging.getLogger(__name__)

REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Jobs run from seconds (a re-index) to hours (training on LIDC).
JOB_BUCKETS = (1.0, 10.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 12 * 3600.0)
TURN_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
RECENT_JOBS = 1000  # the job-duration histogram covers this many most recently finished jobs
_PENDING = "metrics.explanations"  # Session.info key: versions flushed, counted on commit


class Metrics:
    """The app's registry and the metrics counted as requests are answered."""

    def __init__(self, sessions: sessionmaker[Session], state: ServingState) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "clipmed_http_requests",
            "HTTP requests answered, by method, route template and status.",
            ("method", "route", "status"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "clipmed_http_request_duration_seconds",
            "Time from a request's arrival to the end of its response, by route template.",
            ("method", "route"),
            buckets=REQUEST_BUCKETS,
            registry=self.registry,
        )
        self.explanations = Counter(
            "clipmed_explanations",
            "Explanations stored, by the model version that made them.",
            ("model_version",),
            registry=self.registry,
        )
        self.turn_cases = Histogram(
            "clipmed_explanation_turn_cases",
            "Explanation requests explained together in one hot-path turn (one model pass, "
            "one commit; app.explanations.together).",
            buckets=TURN_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(ServingCollector(state))
        self.registry.register(JobCollector(sessions))
        count_stored_explanations(sessions, self.explanations)

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)

    def exposition(self, accept: str) -> tuple[bytes, str]:
        """The body and content type for this Accept header: OpenMetrics for Prometheus (which
        asks for it, and knows a gauge histogram from it), else the classic text format.
        Reading it queries the jobs table: call it off the event loop."""
        encode, content_type = choose_encoder(accept)
        return encode(self.registry), content_type


def count_stored_explanations(sessions: sessionmaker[Session], counter: Counter) -> None:
    """Counts Explanation rows when their transaction commits, whichever route stored them
    (API, page, example): one place, and a rolled-back insert is not counted."""

    @event.listens_for(sessions, "after_flush")
    def _flushed(session: Session, _context: Any) -> None:
        versions = [row.model_version for row in session.new if isinstance(row, Explanation)]
        if versions:
            session.info.setdefault(_PENDING, []).extend(versions)

    @event.listens_for(sessions, "after_commit")
    def _committed(session: Session) -> None:
        for version in session.info.pop(_PENDING, ()):
            counter.labels(version).inc()

    @event.listens_for(sessions, "after_rollback")
    def _rolled_back(session: Session) -> None:
        session.info.pop(_PENDING, None)


class ServingCollector(Collector):
    """The model this process serves, and how long its checkpoint took to load."""

    def __init__(self, state: ServingState) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        serving = self.state.current
        info = InfoMetricFamily("clipmed_model", "The model version this process serves.")
        load = GaugeMetricFamily(
            "clipmed_model_load_seconds",
            "Time to load the served checkpoint (weights, catalog, case index) and its explainer.",
            labels=("model_version",),
        )
        if serving is not None:
            labels = {
                "model_version": serving.model_version,
                "catalog_version": serving.catalog_version,
            }
            info.add_metric((), labels)
            load.add_metric((serving.model_version,), serving.load_seconds)
        yield info
        yield load


class JobCollector(Collector):
    """The job queue as the database has it at scrape time."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def collect(self) -> Iterator[Metric]:
        try:
            with self.sessions() as session:
                counts = dict.fromkeys((s.value for s in JobStatus), 0)
                counts.update(queue.counts_by_status(session))
                finished = session.execute(_RECENT_FINISHED).all()
        except SQLAlchemyError:  # the database is away: the other metrics still answer
            log.warning("metrics: could not read the jobs table", exc_info=True)
            return
        by_status = GaugeMetricFamily("clipmed_jobs", "Jobs by status.", labels=("status",))
        for status, n in counts.items():
            by_status.add_metric((status,), n)
        yield by_status
        yield job_durations(finished)


_RECENT_FINISHED = (
    select(Job.kind, Job.status, Job.started_at, Job.finished_at)
    .where(Job.status.in_(FINISHED), Job.started_at.is_not(None), Job.finished_at.is_not(None))
    .order_by(Job.finished_at.desc())
    .limit(RECENT_JOBS)
)


def job_durations(rows) -> GaugeHistogramMetricFamily:
    """A gauge histogram (the window slides, so counts may fall) of finished jobs' run times,
    from their first start to their end, by kind and final status."""
    groups: dict[tuple[str, str], list[float]] = {}
    for kind, status, started_at, finished_at in rows:
        seconds = (as_utc(finished_at) - as_utc(started_at)).total_seconds()
        groups.setdefault((kind, JobStatus(status).value), []).append(max(seconds, 0.0))
    family = GaugeHistogramMetricFamily(
        "clipmed_job_duration_seconds",
        f"Run time of the {RECENT_JOBS} most recently finished jobs, by kind and status.",
        labels=("kind", "status"),
    )
    for labels, durations in sorted(groups.items()):
        buckets = [(str(le), sum(d <= le for d in durations)) for le in JOB_BUCKETS]
        buckets.append(("+Inf", len(durations)))
        family.add_metric(labels, buckets, sum(durations))
    return family
