"""The admin screens over real HTTP (and one real browser): jobs with their live progress,
starting and cancelling, model activation from the models page, evaluation reports.

Jobs are rows moved through their states with `app.jobs.queue` (claim, report, finish) against the
real database of a real server; no worker runs. Each test's jobs get a kind of their own, so a
claim takes exactly the job the test made.
"""

from __future__ import annotations

import html
import re
import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select, update
from support.browser import launched_chromium, needs_chromium
from support.browser import log_in as browser_log_in
from support.http import log_in, page_csrf
from support.reports import add_report_row, build_report_folder

from app.jobs import queue
from app.tables import (
    AuditEvent,
    Job,
    JobStatus,
    ModelEvent,
    ModelVersion,
    User,
)

HX = {"HX-Request": "true"}
LEASE = 60.0
LIVE_ROOT = re.compile(r'<section id="job-live"[^>]*>')


# --- jobs moved through their states by hand ------------------------------------------------
def new_job(service, params: dict | None = None, parent_id: int | None = None) -> tuple[int, str]:
    """A queued job of a kind no other test uses: (id, kind)."""
    kind = f"ui-{secrets.token_hex(4)}"
    with service.session() as session:
        job = queue.enqueue(session, kind, params or {"cohort": "lidc"}, parent_id=parent_id)
        return job.id, kind


def claim(service, job_id: int, kind: str) -> str:
    token = queue.claim_token()
    with service.session() as session:
        job = queue.claim(session, token, LEASE, kinds=(kind,))
        assert job is not None and job.id == job_id
    return token


def progress(service, job_id: int, token: str, value: float, message: str, log: str) -> None:
    with service.session() as session:
        queue.report(session, session.get(Job, job_id), token, LEASE, value, message, log)


def finish(service, job_id: int, token: str, status: JobStatus, **fields) -> None:
    with service.session() as session:
        assert queue.finish(session, job_id, token, status, **fields)


def live_root(html: str) -> str:
    found = LIVE_ROOT.search(html)
    assert found is not None, html
    return found.group(0)


def polls(root: str) -> bool:
    return 'hx-trigger="every 1s"' in root


# --- the progress fragment --------------------------------------------------------------------
@pytest.mark.parametrize("end", ["succeeded", "failed", "cancelled"])
def test_the_progress_fragment_polls_while_the_job_runs_and_stops_when_it_ends(
    service, client, end
):
    job_id, kind = new_job(service)
    url = f"/admin/jobs/{job_id}/progress"

    queued = client.get(url, headers=HX)
    assert queued.status_code == 200 and queued.headers["vary"] == "HX-Request"
    assert queued.text.lstrip().startswith('<section id="job-live"')  # the fragment alone
    root = live_root(queued.text)
    assert polls(root) and f'hx-get="{url}"' in root and 'hx-swap="outerHTML"' in root
    assert 'data-status="queued"' in root

    token = claim(service, job_id, kind)
    progress(service, job_id, token, 0.4, "epoch 2 of 5", "loading\nepoch 1\nepoch 2\n")
    running = client.get(url, headers=HX).text
    assert polls(live_root(running)) and 'data-status="running"' in live_root(running)
    assert 'value="0.400"' in running and "40%" in running and "epoch 2 of 5" in running
    assert "epoch 1\nepoch 2" in running  # the log tail refreshes with the bar

    if end == "cancelled":
        with service.session() as session:
            queue.cancel(session, job_id)  # a held job: asked, the worker stops at its next point
        assert "Cancellation requested" in client.get(url, headers=HX).text
        finish(service, job_id, token, JobStatus.cancelled, log="stopped\n")
    elif end == "failed":
        finish(service, job_id, token, JobStatus.failed, error="RuntimeError: out of patience")
    else:
        finish(service, job_id, token, JobStatus.succeeded, result={"best_epoch": 4})

    ended = client.get(url, headers=HX)
    root = live_root(ended.text)
    assert ended.status_code == 200 and f'data-status="{end}"' in root
    assert "hx-trigger" not in root and "hx-get" not in root  # nothing polls any more
    assert "hx-trigger" not in ended.text
    assert 'id="cancel-form"' not in ended.text
    if end == "failed":
        assert "RuntimeError: out of patience" in ended.text
    if end == "succeeded":
        assert 'value="1.000"' in ended.text and "best_epoch" in ended.text

    # One URL, two renderings: without htmx the same address is the whole page.
    page = client.get(url)
    assert page.text.lstrip().startswith("<!doctype html>") and 'id="job-live"' in page.text


def test_the_job_page_shows_params_folds_their_progress_and_the_log(service, client):
    parent_id, parent_kind = new_job(service, {"cohort": "lidc", "folds": 2, "preset": "lidc"})
    parent_token = claim(service, parent_id, parent_kind)
    with service.session() as session:
        queue.wait_for_children(session, parent_id, parent_token, "waiting for 2 fold jobs")
    fold_ids = [new_job(service, {"fold": f}, parent_id=parent_id) for f in (1, 2)]
    fold_token = claim(service, *fold_ids[0])
    progress(service, fold_ids[0][0], fold_token, 0.5, "fold 1/2: epoch 1", "fold one says hi\n")

    page = client.get(f"/admin/jobs/{parent_id}")
    assert page.status_code == 200
    assert '<th scope="row">folds</th>' in page.text and "<code>2</code>" in page.text
    rows = re.findall(r'<tr class="job child" data-job="(\d+)" data-status="(\w+)"', page.text)
    assert rows == [(str(fold_ids[0][0]), "running"), (str(fold_ids[1][0]), "queued")]
    assert 'value="0.500"' in page.text  # the running fold's own bar
    assert 'value="0.250"' in page.text  # the parent: the mean of its folds
    assert polls(live_root(page.text))

    fold_page = client.get(f"/admin/jobs/{fold_ids[0][0]}")
    assert f'a fold of <a href="/admin/jobs/{parent_id}">' in fold_page.text
    assert "fold one says hi" in fold_page.text

    # the list shows top-level jobs only, and refreshes itself while one can still change
    listed = client.get("/admin/jobs", headers=HX)
    assert listed.text.lstrip().startswith('<div id="jobs-table"')
    assert f'data-job="{parent_id}"' in listed.text
    assert f'data-job="{fold_ids[1][0]}"' not in listed.text
    assert 'hx-trigger="every 2s"' in listed.text

    missing = client.get("/admin/jobs/999999")
    assert missing.status_code == 404 and "Could not show job 999999" in missing.text


def test_a_cross_validation_waiting_for_its_folds_shows_what_each_is_doing(service, client):
    parent_id, parent_kind = new_job(service, {"cohort": "lidc", "folds": 3, "preset": "lidc"})
    parent_token = claim(service, parent_id, parent_kind)
    with service.session() as session:
        queue.wait_for_children(session, parent_id, parent_token, "waiting for 3 fold jobs")
    folds = [new_job(service, {"fold": f}, parent_id=parent_id) for f in (1, 2, 3)]
    first = claim(service, *folds[0])
    finish(service, folds[0][0], first, JobStatus.succeeded, message="fold 1/3 done")
    second = claim(service, *folds[1])
    doing = "fold 2/3: epoch 2/4, batch 1/5, loss 0.700"
    progress(service, folds[1][0], second, 0.5, doing, "")

    # the API: the folds' mean (a finished fold counts whole) and the running fold's own words
    api = client.get(f"/api/v1/admin/jobs/{parent_id}").json()
    assert api["status"] == "running" and api["progress"] == pytest.approx(0.5)
    assert api["message"] == f"1 of 3 folds done, 1 running, 50% overall: {doing}"
    listed = {job["id"]: job for job in client.get("/api/v1/admin/jobs").json()}
    assert listed[parent_id]["message"] == api["message"]

    page = client.get(f"/admin/jobs/{parent_id}", headers=HX).text
    assert "waiting for 3 fold jobs" not in page
    assert "1 of 3 folds done, 1 running" in page and 'value="0.500"' in page
    activity = re.search(r'<ul class="fold-activity">(.*?)</ul>', page, re.S)
    assert activity is not None
    assert re.findall(r'<li data-job="(\d+)">([^<]*)</li>', activity.group(1)) == [
        (str(folds[1][0]), doing)
    ]

    # once every fold has ended the parent speaks for itself again (it merges them)
    finish(service, folds[1][0], second, JobStatus.succeeded)
    with service.session() as session:
        queue.cancel(session, folds[2][0])  # queued: ends at once
    ended = client.get(f"/api/v1/admin/jobs/{parent_id}").json()
    assert ended["message"] == "waiting for 3 fold jobs"


def test_a_failed_job_shows_one_line_and_folds_the_traceback_away(service, client):
    job_id, kind = new_job(service)
    token = claim(service, job_id, kind)
    log = (
        "10:00:00 loading the cohort\n"
        "10:00:01 Traceback (most recent call last):\n"
        '  File "app/jobs/tasks.py", line 55, in load_cohort\n'
        "ValueError: disk on fire\n"
        "10:00:02 giving up"
    )
    with service.session() as session:
        queue.finish(
            session, job_id, token, JobStatus.failed, error="ValueError: disk on fire", log=log
        )

    page = client.get(f"/admin/jobs/{job_id}").text
    assert '<p class="job-error">ValueError: disk on fire</p>' in page
    folded = re.search(r'<details class="traceback">(.*?)</details>', page, re.S)
    assert folded and 'File "app/jobs/tasks.py", line 55' in html.unescape(folded.group(1))
    shown = re.search(r'<pre class="log" id="job-log">(.*?)</pre>', page, re.S).group(1)
    assert "loading the cohort" in shown and "giving up" in shown and "Traceback" not in shown


def test_the_jobs_table_stops_polling_once_every_job_has_ended(service, client):
    new_job(service)
    assert 'hx-trigger="every 2s"' in client.get("/admin/jobs", headers=HX).text
    with service.session() as session:  # end everything, as workers eventually do
        session.execute(
            update(Job)
            .where(Job.status.in_(queue.ACTIVE))
            .values(status=JobStatus.cancelled, worker=None)
        )
        session.commit()
    table = client.get("/admin/jobs", headers=HX).text
    assert "hx-trigger" not in table and 'data-status="cancelled"' in table


# --- starting and cancelling from the pages ---------------------------------------------------
@pytest.fixture
def admin_browser(service) -> Iterator[tuple[httpx.Client, str]]:
    """An admin logged in through the login form (cookie + CSRF token), as a browser is."""
    with httpx.Client(base_url=service.url, timeout=30) as http:
        assert log_in(http, "admin").status_code == 303
        yield http, page_csrf(http.get("/admin/jobs").text)


def test_start_a_job_from_the_form_then_cancel_it(service, admin_browser):
    http, csrf = admin_browser
    form_page = http.get("/admin/jobs").text
    assert 'action="/admin/jobs"' in form_page
    assert f'name="csrf_token" value="{csrf}"' in form_page
    for preset_name in ("lidc", "lidc-attn", "thesis"):
        assert f'<option value="{preset_name}"' in form_page
    cohorts = re.search(r'<datalist id="job-cohorts">(.*?)</datalist>', form_page).group(1)
    assert '<option value="lidc">' in cohorts

    fields = {"kind": "evaluate", "cohort": "lidc", "preset": "lidc-attn", "folds": "3"}
    fields |= {"epochs": "7", "include_corrections": "on"}
    assert http.post("/admin/jobs", data=fields).status_code == 403  # no CSRF token
    started = http.post("/admin/jobs", data=fields | {"csrf_token": csrf})
    assert started.status_code == 303
    job_id = int(re.fullmatch(r"/admin/jobs/(\d+)", started.headers["location"]).group(1))
    with service.session() as session:
        job = session.get(Job, job_id)
        admin_id = session.scalar(select(User.id).where(User.username == "admin"))
        assert (job.kind, job.status, job.requested_by) == ("evaluate", JobStatus.queued, admin_id)
        assert job.params == {
            "kind": "evaluate",
            "cohort": "lidc",
            "preset": "lidc-attn",
            "overrides": {"epochs": 7},
            "folds": 3,
            "vote_k": 5,
            "seed": 0,
        }
        starts = session.scalars(
            select(AuditEvent).where(
                AuditEvent.action == "job.start", AuditEvent.target_id == str(job_id)
            )
        ).all()
        assert [(e.actor, e.outcome) for e in starts] == [("admin", "success")]

    train = http.post(
        "/admin/jobs",
        data={"kind": "train", "cohort": "lidc", "preset": "lidc", "activate": "on"}
        | {"csrf_token": csrf},
    )
    assert train.status_code == 303
    with service.session() as session:
        params = session.get(Job, int(train.headers["location"].rsplit("/", 1)[1])).params
    assert params["activate"] is True and params["include_corrections"] is False
    assert params["overrides"] == {}

    page = http.get(f"/admin/jobs/{job_id}")
    assert 'id="cancel-form"' in page.text and polls(live_root(page.text))
    cancel_form = re.search(r'<form id="cancel-form"[^>]*>', page.text).group(0)
    assert 'hx-boost="true"' in cancel_form and f'hx-confirm="Cancel job #{job_id}' in cancel_form
    cancelled = http.post(f"/admin/jobs/{job_id}/cancel", data={"csrf_token": csrf})
    assert cancelled.status_code == 303
    assert cancelled.headers["location"] == f"/admin/jobs/{job_id}"
    with service.session() as session:
        assert session.get(Job, job_id).status == JobStatus.cancelled
    page = http.get(f"/admin/jobs/{job_id}")
    assert 'data-status="cancelled"' in page.text and "hx-trigger" not in page.text
    again = http.post(f"/admin/jobs/{job_id}/cancel", data={"csrf_token": csrf})
    assert again.status_code == 409
    assert f"Could not cancel job {job_id}" in again.text and "already ended" in again.text
    assert '<h1 class="error-heading">This cannot be done now</h1>' in again.text


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"kind": "evaluate", "cohort": "lidc", "preset": "lidc", "folds": "1"}, "folds must be"),
        (
            {"kind": "evaluate", "cohort": "lidc", "preset": "lidc", "folds": "many"},
            "folds must be",
        ),
        ({"kind": "train", "cohort": "../etc", "preset": "lidc"}, "cohort:"),
        ({"kind": "train", "cohort": "lidc", "preset": "no-such"}, "preset:"),
        ({"kind": "train", "cohort": "no-such-cohort", "preset": "lidc"}, "available: lidc"),
        ({"kind": "train", "cohort": "lidc", "preset": "lidc", "epochs": "-3"}, "epochs must"),
        ({"kind": "train", "cohort": "lidc", "preset": "lidc", "epochs": "2.5"}, "epochs must"),
        ({"kind": "train", "cohort": "lidc", "preset": "lidc", "epochs": "0"}, "epochs must"),
        ({"kind": "train", "cohort": "lidc", "preset": "lidc", "epochs": "-1"}, "epochs must"),
        ({"kind": "train", "cohort": "lidc", "preset": "lidc", "epochs": "\u0663"}, "epochs must"),
        ({"kind": "train", "cohort": "lidc", "preset": "lidc", "epochs": "--3"}, "epochs must"),
        ({"kind": "train", "cohort": "lidc", "preset": "lidc", "epochs": "+-3"}, "epochs must"),
        (
            {"kind": "evaluate", "cohort": "lidc", "preset": "lidc", "epochs": "9" * 200},
            "200-digit",
        ),
        ({"kind": "evaluate", "cohort": "lidc", "preset": "lidc", "folds": "\u00b2"}, "folds must"),
        # new since the attack: fullwidth digits, a Unicode minus, a no-break space
        ({"kind": "train", "cohort": "lidc", "preset": "lidc", "epochs": "\uff12"}, "epochs must"),
        (
            {"kind": "evaluate", "cohort": "lidc", "preset": "lidc", "folds": "\u22125"},
            "folds must",
        ),
        ({"kind": "train", "cohort": "lidc", "preset": "lidc", "epochs": "\u00a02"}, "epochs must"),
        ({"kind": "shutdown"}, "choose the kind of job"),
        ({}, "choose the kind of job"),
    ],
)
def test_a_refused_form_comes_back_with_422_naming_the_problem(service, client, fields, problem):
    with service.session() as session:
        before = session.scalar(select(Job.id).order_by(Job.id.desc()).limit(1))
    refused = client.post("/admin/jobs", data=fields)
    assert refused.status_code == 422
    assert "The job was not started" in refused.text and problem in refused.text
    assert refused.text.lstrip().startswith("<!doctype html>")
    for name in ("cohort", "folds", "epochs"):  # the form comes back as it was sent
        if name in fields:
            assert re.search(rf'name="{name}"[^>]*value="{re.escape(fields[name])}"', refused.text)
    fragment = client.post("/admin/jobs", data=fields, headers=HX)
    assert fragment.status_code == 422
    assert fragment.text.lstrip().startswith('<form id="job-form"')
    with service.session() as session:
        assert session.scalar(select(Job.id).order_by(Job.id.desc()).limit(1)) == before


def test_the_api_refuses_an_unknown_cohort_listing_the_available_ones(service, client_as):
    with service.session() as session:
        before = session.scalar(select(Job.id).order_by(Job.id.desc()).limit(1))
    refused = client_as("admin").post(
        "/api/v1/admin/jobs", json={"kind": "train", "cohort": "no-such-cohort"}
    )
    assert refused.status_code == 422
    assert "no-such-cohort" in refused.json()["detail"]
    assert "available: lidc" in refused.json()["detail"]
    with service.session() as session:
        assert session.scalar(select(Job.id).order_by(Job.id.desc()).limit(1)) == before


# --- models -----------------------------------------------------------------------------------
def test_numbers_are_written_for_the_readers_locale(service, client_as):
    """A count is a whole number, a score keeps three decimals; both in the reader's format
    (Accept-Language, or the language switch's cookie, which wins)."""
    first = service.checkpoints.first_version[0]
    with service.session() as session:
        row = session.scalar(select(ModelVersion).where(ModelVersion.version == first))
        kept = row.metrics
        row.metrics = {"val/cases": 6600.0, "val/density/vote_macro_f1": 0.4567}
        session.commit()
    viewer = client_as("clinician")
    try:
        for accept, cookie, cases, f1 in [
            ("en-US,en;q=0.9", None, "6,600", "0.457"),
            ("ca-ES,ca;q=0.9,en;q=0.5", None, "6.600", "0,457"),
            ("de-DE,es;q=0.8", None, "6.600", "0,457"),  # Spanish: the best offered
            ("en-US", "ca", "6.600", "0,457"),  # the switch wins
            ("fr-FR", None, "6,600", "0.457"),  # nothing offered: English
        ]:
            viewer.cookies.clear()
            if cookie:
                viewer.cookies.set("lang", cookie)
            page = viewer.get("/models", headers={"Accept-Language": accept}).text
            shown = re.search(r'data-field="val/cases">(.*?)</tr>', page, re.S).group(1)
            assert f"<td>{cases}</td>" in shown, (accept, cookie)
            vote = re.search(r'data-mode="vote".*?</table>', page, re.S).group(0)
            assert f"<td>{f1}</td>" in vote, (accept, cookie)
    finally:
        with service.session() as session:
            row = session.scalar(select(ModelVersion).where(ModelVersion.version == first))
            row.metrics = kept
            session.commit()


def test_activation_from_the_models_page_switches_the_served_model(
    service, admin_browser, client_as
):
    http, csrf = admin_browser
    first, second = service.checkpoints.first_version[0], service.checkpoints.second_version[0]
    with service.session() as session:
        for version, score in ((first, 0.41), (second, 0.52)):
            session.execute(
                update(ModelVersion)
                .where(ModelVersion.version == version)
                .values(
                    metrics={
                        "val/density/vote_macro_f1": score,
                        "val/density/top1_macro_f1": score - 0.1,
                        "val/cases": 12.0,
                    }
                )
            )
        session.commit()
        events_before = session.scalar(select(ModelEvent.id).order_by(ModelEvent.id.desc()))
    assert http.get("/readyz").json()["model_version"] == first

    page = http.get("/models").text
    assert f'action="/admin/models/{second}/activate"' in page
    assert f'action="/admin/models/{first}/activate"' not in page  # already active
    vote = re.search(r'data-mode="vote".*?</table>', page, re.S).group(0)
    assert "<strong>0.520</strong>" in vote and "0.410" in vote
    assert re.search(r'data-field="val/cases"><td>val/cases</td>\s*<td>12</td>', page)
    assert '<table class="history">' in page

    # the button asks first (htmx's confirm on a boosted form: no inline script)
    form = re.search(rf'<form class="activate"[^>]*{re.escape(second)}/activate"[^>]*>', page)
    assert form and 'hx-boost="true"' in form.group(0) and "hx-confirm=" in form.group(0)
    activated = http.post(f"/admin/models/{second}/activate", data={"csrf_token": csrf})
    assert activated.status_code == 303
    assert activated.headers["location"] == f"/models?activated={second}"
    said = http.get(activated.headers["location"]).text
    assert (
        f'<p class="notice" role="status" id="models-notice">Model {second} is now served.' in said
    )
    try:
        assert http.get("/readyz").json()["model_version"] == second
        with service.session() as session:
            event = session.scalars(select(ModelEvent).order_by(ModelEvent.id.desc())).first()
            assert event.id != events_before
            assert (event.action, event.version, event.previous_version, event.actor) == (
                "activate",
                second,
                first,
                "admin",
            )
            audited = session.scalars(
                select(AuditEvent).where(AuditEvent.action == "model.activate")
            ).all()
            assert any(e.model_version == second and e.actor == "admin" for e in audited)
        page = http.get("/models").text
        history = re.search(r'<table class="history">.*?</table>', page, re.S).group(0)
        assert f'data-version="{second}"' in history and "admin" in history
        # the first version was registered before the one now active: going back is a rollback
        rollback = re.search(
            rf'action="/admin/models/{first}/activate"[^>]*>.*?</form>', page, re.S
        ).group(0)
        assert (
            "Roll back to this" in rollback
            and f'hx-confirm="Roll back to model {first}?' in rollback
        )

        for role in ("clinician", "radiologist"):
            other = client_as(role)
            seen = other.get("/models")
            assert seen.status_code == 200 and "/activate" not in seen.text
            assert (
                '<table class="history">' not in seen.text and 'class="activate"' not in seen.text
            )
            assert "Roll back" not in seen.text and ">Activate<" not in seen.text
            assert other.post(f"/admin/models/{first}/activate").status_code == 403
        assert http.get("/readyz").json()["model_version"] == second

        unknown = http.post("/admin/models/no-such-version/activate", data={"csrf_token": csrf})
        assert unknown.status_code == 404 and "Could not activate model" in unknown.text
    finally:
        service.activate(first)


# --- evaluation reports -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def report_folder(tmp_path_factory, text_encoder) -> tuple[Path, dict, bool]:
    """A real, tiny cross-validation report: (folder, summary as the evaluate job stores it,
    simulated)."""
    folder = tmp_path_factory.mktemp("report")
    summary = build_report_folder(folder, text_encoder)
    # Files a request must never reach: one beside the figures, one linked into them.
    (folder / "outside.png").write_bytes((folder / "figures" / "boxplots.png").read_bytes())
    (folder / "figures" / "linked.png").symlink_to(folder / "outside.png")
    return folder, summary, True  # a simulated cohort


def add_report(service, folder: Path, summary: dict, simulated: bool, job_id=None) -> int:
    sessions = service.app.state.sessions
    return add_report_row(sessions, folder, summary, "simulated-test", 2, job_id, simulated)


def test_a_report_page_shows_the_table_figures_and_downloads(service, client, report_folder):
    folder, summary, simulated = report_folder
    job_id, kind = new_job(service, {"cohort": "simulated-test", "folds": 2})
    token = claim(service, job_id, kind)
    finish(service, job_id, token, JobStatus.succeeded, result={"report_dir": str(folder)})
    report_id = add_report(service, folder, summary, simulated, job_id)

    listed = client.get("/admin/reports").text
    row = re.search(rf'<tr class="report" data-report="{report_id}">.*?</tr>', listed, re.S)
    assert (
        row and "SIMULATED" in row.group(0) and f'href="/admin/reports/{report_id}"' in row.group(0)
    )
    job_page = client.get(f"/admin/jobs/{job_id}").text
    assert f'href="/admin/reports/{report_id}"' in job_page

    page = client.get(f"/admin/reports/{report_id}")
    assert page.status_code == 200 and "SIMULATED COHORT" in page.text
    for field, scores in summary.items():
        cells = re.search(rf'data-field="{field}">(.*?)</tr>', page.text, re.S).group(1)
        for method in ("top1", "vote", "head", "probe", "majority", "logreg"):
            shown = re.search(rf'data-method="{method}">(.*?)</td>', cells, re.S).group(1)
            assert f"{scores[method]:.3f}" in shown, (field, method)
        best = (
            "served"
            if "served" in scores
            else max(("top1", "vote", "head", "probe"), key=scores.__getitem__)
        )
        bold = re.search(rf'data-method="{best}"><strong>', cells)
        assert bold, (field, best)
        assert cells.count("<strong>") == 1
    for name in ("CLIP top-1 text", "CLIP top-k vote", "majority class", "logistic regression"):
        assert name in page.text

    sources = re.findall(r'<img src="([^"]+)"', page.text)
    names = {src.rsplit("/", 1)[1] for src in sources}
    assert {"boxplots.png", "loss_curves.png"} <= names
    assert any(n.startswith("confusion_") and n.endswith("_logreg.png") for n in names)
    assert "linked.png" not in names  # a link out of the folder is not a figure
    for src in sources:
        figure = client.get(src)
        assert figure.status_code == 200 and figure.headers["content-type"] == "image/png"
        assert figure.content.startswith(b"\x89PNG")

    for name in ("metrics.csv", "per_class.csv", "retrieval.csv", "summary.md"):
        assert f'/admin/reports/{report_id}/files/{name}"' in page.text
        got = client.get(f"/admin/reports/{report_id}/files/{name}")
        assert got.status_code == 200 and got.content == (folder / name).read_bytes()
        assert got.headers["content-disposition"].startswith("attachment")
    assert (
        client.get(f"/admin/reports/{report_id}/files/metrics.csv")
        .headers["content-type"]
        .startswith("text/csv")
    )

    base = f"/admin/reports/{report_id}"
    for url in (
        f"{base}/files/report.json",  # in the folder, not in the list
        f"{base}/files/..%2Fmetrics.csv",
        f"{base}/figures/..%2Foutside.png",
        f"{base}/figures/%2E%2E%2Foutside.png",
        f"{base}/figures/..%2F..%2Fmetrics.csv",
        f"{base}/figures/linked.png",
        f"{base}/figures/outside.png",
        f"{base}/figures/metrics.csv",
        f"{base}/figures/nope.png",
        "/admin/reports/999999/figures/boxplots.png",
        "/admin/reports/999999",
    ):
        refused = client.get(url)
        assert refused.status_code == 404, url
        assert not refused.content.startswith(b"\x89PNG"), url


def test_the_report_says_plainly_where_the_model_is_below_logistic_regression(
    service, client, report_folder
):
    folder, _, _ = report_folder
    summary = {
        "density": {
            "top1": 0.30,
            "vote": 0.35,
            "head": 0.33,
            "probe": 0.31,
            "majority": 0.2,
            "logreg": 0.50,
        },
        "margin": {
            "top1": 0.40,
            "vote": 0.44,
            "head": 0.47,
            "probe": 0.42,
            "majority": 0.2,
            "logreg": 0.45,
        },
    }
    report_id = add_report(service, folder, summary, simulated=False)
    page = client.get(f"/admin/reports/{report_id}").text
    assert "SIMULATED COHORT" not in page
    worse = re.findall(r'<li class="worse-field" data-field="(\w+)">(.*?)</li>', page, re.S)
    assert [field for field, _ in worse] == ["density"]
    said = " ".join(worse[0][1].split())
    assert "CLIP top-k vote 0.350 vs logistic regression 0.500 (0.150 lower)" in said
    flat = " ".join(page.split())
    assert "On 1 of 2 fields the model's best mode is worse than logistic regression" in flat
    margin = re.search(r'data-field="margin">(.*?)</tr>', page, re.S).group(1)
    assert '<td class="" data-method="head"><strong>0.470</strong>' in margin

    even = add_report(service, folder, {"density": summary["margin"]}, simulated=False)
    even_page = " ".join(client.get(f"/admin/reports/{even}").text.split())
    assert "at least as good as logistic regression" in even_page


# --- in a real browser ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser() -> Iterator:
    with launched_chromium() as chromium:
        yield chromium


@needs_chromium
@pytest.mark.parametrize("service", ["sqlite"], indirect=True)
def test_the_browser_follows_a_running_job_then_stops_polling(browser, service):
    from playwright.sync_api import expect

    job_id, kind = new_job(service)
    token = claim(service, job_id, kind)
    progress(service, job_id, token, 0.25, "epoch 1 of 4", "epoch 1: loss 2.31\n")

    context = browser.new_context(base_url=service.url)
    context.set_default_timeout(15_000)
    try:
        tab = context.new_page()
        browser_log_in(tab, "admin")
        polled: list[str] = []
        tab.on("request", lambda r: polled.append(r.url) if "/progress" in r.url else None)
        tab.goto(f"/admin/jobs/{job_id}")
        bar = tab.locator("#job-live progress.job-progress")
        expect(bar).to_have_attribute("value", "0.250")

        progress(service, job_id, token, 0.75, "epoch 3 of 4", "epoch 1\nepoch 3: loss 1.02\n")
        expect(bar).to_have_attribute("value", "0.750")
        expect(tab.locator("#job-log")).to_contain_text("epoch 3: loss 1.02")
        expect(tab.locator("#job-live .message")).to_have_text("epoch 3 of 4")
        assert polled, "the fragment never asked for itself"

        finish(service, job_id, token, JobStatus.succeeded, result={"best_epoch": 3})
        expect(tab.locator('#job-live[data-status="succeeded"]')).to_be_visible()
        expect(bar).to_have_attribute("value", "1.000")
        assert tab.locator("#job-live").get_attribute("hx-trigger") is None
        settled = len(polled)
        tab.wait_for_timeout(3_000)
        assert len(polled) == settled, polled[settled:]  # no request after the job ended
    finally:
        context.close()
