"""/metrics against a real server: what Prometheus scrapes, in both exposition formats.

(Named apart from tests/test_metrics.py, the model's evaluation metrics.)
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import httpx
import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update
from support.http import bearer, post_json
from support.inputs import case
from support.servers import running_server

from app.config import Settings
from app.jobs import queue
from app.main import create_app
from app.tables import Job, JobStatus

Samples = dict[tuple[str, frozenset], float]


def scrape(http: httpx.Client) -> Samples:
    response = http.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_requests_are_counted_by_route_template_never_by_raw_path(service, client_as):
    clinician = client_as("clinician")
    before = scrape(clinician)
    unknown = str(uuid.uuid4())
    for _ in range(3):
        assert clinician.get(f"/api/v1/explanations/{unknown}").status_code == 404
    assert clinician.get(f"/no/such/page/{unknown}").status_code == 404
    assert clinician.get("/healthz").status_code == 200
    after = scrape(clinician)

    route = {"method": "GET", "route": "/api/v1/explanations/{explanation_id}"}
    counted = value(after, "clipmed_http_requests_total", **route, status="404")
    assert counted - value(before, "clipmed_http_requests_total", **route, status="404") == 3
    timed = value(after, "clipmed_http_request_duration_seconds_count", **route)
    assert timed - value(before, "clipmed_http_request_duration_seconds_count", **route) == 3
    unmatched = {"method": "GET", "route": "unmatched", "status": "404"}
    assert value(after, "clipmed_http_requests_total", **unmatched) >= 1
    health = {"method": "GET", "route": "/healthz", "status": "200"}
    assert value(after, "clipmed_http_requests_total", **health) >= 1
    # the scrape before this one was counted too
    scraped = {"method": "GET", "route": "/metrics", "status": "200"}
    assert value(after, "clipmed_http_requests_total", **scraped) >= 1
    label_values = {v for _, labels in after for _, v in labels}
    assert not any(unknown in v for v in label_values), "a raw path became a label"


def test_explanations_are_counted_by_the_model_version_that_made_them(service, client_as):
    first, second = service.checkpoints.first_version[0], service.checkpoints.second_version[0]
    radiologist = client_as("radiologist")
    before = scrape(radiologist)
    for _ in range(3):
        assert post_json(radiologist, case().tolist()).status_code == 201
    assert post_json(radiologist, case(dim=3).tolist()).status_code == 422  # not stored
    service.activate(second)
    try:
        for _ in range(2):
            assert post_json(radiologist, case().tolist()).status_code == 201
    finally:
        service.activate(first)
    after = scrape(radiologist)

    def made(version: str) -> float:
        return value(after, "clipmed_explanations_total", model_version=version) - value(
            before, "clipmed_explanations_total", model_version=version
        )

    assert (made(first), made(second)) == (3, 2)
    # one after the other, each turn of the hot path took one case (the refused one too)
    turns = value(after, "clipmed_explanation_turn_cases_count") - value(
        before, "clipmed_explanation_turn_cases_count"
    )
    cases = value(after, "clipmed_explanation_turn_cases_sum") - value(
        before, "clipmed_explanation_turn_cases_sum"
    )
    assert turns == cases == 6


def test_the_served_model_and_its_load_time(service, client_as):
    samples = scrape(client_as(None))
    version, catalog = service.checkpoints.first_version
    info = {"model_version": version, "catalog_version": catalog}
    assert value(samples, "clipmed_model_info", **info) == 1
    load_seconds = value(samples, "clipmed_model_load_seconds", model_version=version)
    assert 0 < load_seconds < 60


def test_job_gauges_and_durations_follow_the_queue(service, client_as):
    kind = f"probe-{uuid.uuid4().hex[:8]}"  # a kind no other test (or worker) touches
    anonymous = client_as(None)
    before = scrape(anonymous)
    with service.session() as session:
        done, failed, _waiting = (queue.enqueue(session, kind, {}) for _ in range(3))
        for job, status in ((done, JobStatus.succeeded), (failed, JobStatus.failed)):
            claimed = queue.claim(session, f"test:{job.id}", 60, (kind,))
            assert claimed is not None and claimed.id == job.id
            assert queue.finish(session, job.id, f"test:{job.id}", status)
        # a run of 90 s for the succeeded one, 2 s for the failed one
        for job, seconds in ((done, 90), (failed, 2)):
            session.refresh(job)
            started = job.finished_at - timedelta(seconds=seconds)
            session.execute(update(Job).where(Job.id == job.id).values(started_at=started))
        session.commit()
    after = scrape(anonymous)

    def change(status: str) -> float:
        return value(after, "clipmed_jobs", status=status) - value(
            before, "clipmed_jobs", status=status
        )

    assert [change(s.value) for s in JobStatus] == [1, 0, 1, 1, 0]
    succeeded = {"kind": kind, "status": "succeeded"}
    assert value(after, "clipmed_job_duration_seconds_gcount", **succeeded) == 1
    assert value(after, "clipmed_job_duration_seconds_gsum", **succeeded) == pytest.approx(90)
    assert value(after, "clipmed_job_duration_seconds_bucket", **succeeded, le="60.0") == 0
    assert value(after, "clipmed_job_duration_seconds_bucket", **succeeded, le="300.0") == 1
    failed_labels = {"kind": kind, "status": "failed"}
    assert value(after, "clipmed_job_duration_seconds_bucket", **failed_labels, le="10.0") == 1


def test_prometheus_gets_openmetrics_with_a_true_gauge_histogram(service, client_as):
    accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
    response = client_as(None).get("/metrics", headers={"Accept": accept})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    types = {family.name: family.type for family in openmetrics_families(response.text)}
    assert types["clipmed_http_requests"] == "counter"
    assert types["clipmed_http_request_duration_seconds"] == "histogram"
    assert types["clipmed_jobs"] == "gauge"
    assert types["clipmed_job_duration_seconds"] == "gaugehistogram"
    assert types["clipmed_model"] == "info"


def test_a_metrics_token_gates_the_scrape(database, tmp_path):
    settings = Settings(data_dir=tmp_path, database_url=database, metrics_token="scrape-secret")
    with running_server(create_app(settings)) as url, httpx.Client(base_url=url) as http:
        refused = http.get("/metrics")
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
        assert "clipmed_" not in refused.text
        assert http.get("/metrics", headers=bearer("not-the-secret")).status_code == 401
        assert http.get("/metrics", headers={"Authorization": "scrape-secret"}).status_code == 401
        allowed = http.get("/metrics", headers=bearer("scrape-secret"))
        assert allowed.status_code == 200 and "clipmed_jobs" in allowed.text
