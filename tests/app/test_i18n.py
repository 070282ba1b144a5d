"""The interface in English, Catalan and Spanish: complete catalogues, every page of every role
(the admin pages included) without English left in it, messages built from values translated
with their values (errors, notices, job progress, low-confidence reasons), the language switch,
and a JSON API and FHIR export that do not change with the reader."""

from __future__ import annotations

import html
import re
import secrets
import subprocess
import sys
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest
from babel import Locale
from babel.messages.pofile import read_po
from sqlalchemy import select
from support.http import add_user, bearer, post_json
from support.inputs import case
from support.reports import add_report_row

from app.explanations import views
from app.i18n import LANGUAGES, LOCALES_DIR, reset_current_locale, set_current_locale
from app.jobs import messages, queue
from app.reports import METHOD_LABELS
from app.tables import Job, JobStatus, User
from model.evaluate import METHOD_NAMES
from model.inference import LOW_PROBABILITY_REASON, LOW_SIMILARITY_REASON, SPLIT_VOTE_REASON
from model.recipe import INDEXING, SCORING

ROOT = Path(__file__).resolve().parents[2]
TRANSLATED = [lang for lang in LANGUAGES if lang != "en"]
PLACEHOLDER = re.compile(r"%\([a-z_]+\)s|%%")


def catalogue(language: str):
    with (LOCALES_DIR / language / "LC_MESSAGES" / "messages.po").open("rb") as f:
        return read_po(f, locale=language)


def ids(catalog) -> set:
    return {m.id if isinstance(m.id, str) else m.id[0] for m in catalog if m.id}


@pytest.mark.parametrize("language", TRANSLATED)
def test_the_catalogue_translates_every_message_with_the_same_placeholders(language):
    template = catalogue(language)
    with (LOCALES_DIR / "messages.pot").open("rb") as f:
        extracted = read_po(f)
    assert ids(template) == ids(extracted)  # `make messages` has run since the last change
    for message in template:
        if not message.id:
            continue
        assert not message.fuzzy, message.id
        # a plural's every form (CLDR gives ca and es three: one, many, other), each checked
        # against the English plural
        pairs = (
            [(message.id[min(i, 1)], form) for i, form in enumerate(message.string)]
            if message.pluralizable
            else [(message.id, message.string)]
        )
        for source, translated in pairs:
            assert translated, f"{language}: {source!r} is not translated"
            assert sorted(PLACEHOLDER.findall(source)) == sorted(PLACEHOLDER.findall(translated))
            assert source.count("<") == translated.count("<"), (source, translated)  # markup kept


def test_the_template_catalogue_holds_every_message_the_code_and_templates_mark(tmp_path):
    """What `make messages` would extract now is what the catalogues hold."""
    out = tmp_path / "messages.pot"
    subprocess.run(
        [
            str(Path(sys.executable).parent / "pybabel"),
            "-q",
            "extract",
            "-F",
            str(ROOT / "babel.cfg"),
            "-k",
            "N_",
            "--no-location",
            "-o",
            str(out),
            ".",
        ],
        cwd=ROOT,
        check=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    with out.open("rb") as f:
        now = read_po(f)
    assert ids(now) == ids(catalogue("ca"))


class _Texts(HTMLParser):
    """Each text node and each human-facing attribute of a page, whitespace collapsed; what an
    element marks `translate="no"` (usernames, parameter names, audit codes: data, not
    messages) is left out, as a browser's translator leaves it."""

    SHOWN_ATTRIBUTES = {"aria-label", "title", "label", "placeholder", "alt", "hx-confirm"}
    SKIPPED = {"script", "style", "code", "pre"}
    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source"}

    def __init__(self) -> None:
        super().__init__()
        self.texts: list[str] = []
        self._open: list[tuple[str, bool]] = []  # (tag, whether its content is shown text)

    @property
    def _shown(self) -> bool:
        return not self._open or self._open[-1][1]

    def handle_starttag(self, tag, attrs):
        values = dict(attrs)
        shown = self._shown and tag not in self.SKIPPED
        if values.get("translate") == "no":
            shown = False
        elif values.get("translate") in ("yes", "") and tag not in self.SKIPPED:
            shown = True
        if shown:
            for name, value in attrs:
                if name in self.SHOWN_ATTRIBUTES and value:
                    self.texts.append(" ".join(value.split()))
        if tag not in self.VOID:
            self._open.append((tag, shown))

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in self.VOID:
            self._open.pop()

    def handle_endtag(self, tag):
        for depth in range(len(self._open) - 1, -1, -1):
            if self._open[depth][0] == tag:
                del self._open[depth:]
                break

    def handle_data(self, data):
        text = " ".join(data.split())
        if text and self._shown:
            self.texts.append(text)


def shown_texts(html: str) -> set[str]:
    parser = _Texts()
    parser.feed(html)
    return set(parser.texts)


def english_left(html: str, language: str) -> set[str]:
    """Message ids shown as they are although the catalogue translates them differently."""
    english = {
        m.id: m.string
        for m in catalogue(language)
        if m.id and isinstance(m.id, str) and m.string and m.string != m.id
    }
    return {text for text in shown_texts(html) if text in english}


def test_the_text_finder_skips_what_is_marked_as_data():
    page = (
        '<p title="Jobs">Jobs<td translate="no">admin<b>queued</b></td>'
        '<tbody translate="no"><td translate="yes">Users</td><td>failed</td></tbody>'
        "<br><pre>Log</pre>Models</p>"
    )
    assert shown_texts(page) == {"Jobs", "Users", "Models"}


# --- every page of every role -----------------------------------------------------------------
@dataclass(frozen=True)
class Made:
    """What the pages show, made once per service: jobs in each state (kinds no worker takes,
    moved by hand through app.jobs.queue, with the workers' own messages), two real reports
    of one cohort, a flag raised by a reviewer who is not named after a role."""

    explanation: str  # its page's path
    parent: int  # a cross-validation waiting for its folds, one fold running
    fold: int
    failed: int
    trained: int  # succeeded, a model version registered and activated
    report_a: int
    report_b: int


LEASE = 60.0


def _job(service, params: dict, parent_id: int | None = None) -> tuple[int, str]:
    kind = f"i18n-{secrets.token_hex(4)}"
    with service.session() as session:
        return queue.enqueue(session, kind, params, parent_id=parent_id).id, kind


def _claim(service, job_id: int, kind: str) -> str:
    token = queue.claim_token()
    with service.session() as session:
        assert queue.claim(session, token, LEASE, kinds=(kind,)).id == job_id
    return token


@pytest.fixture(scope="module")
def explanation_url(service) -> str:
    with httpx.Client(base_url=service.url, headers=bearer(service.tokens["clinician"])) as c:
        made = post_json(c, case().tolist(), k=3)
        assert made.status_code == 201, made.text
        return f"/explanations/{made.json()['id']}"


@pytest.fixture(scope="module")
def made(service, explanation_url, report_folders) -> Made:
    parent, parent_kind = _job(service, {"cohort": "lidc", "folds": 2, "preset": "lidc"})
    parent_token = _claim(service, parent, parent_kind)
    with service.session() as session:
        waiting = messages.WAITING_FOR_FOLDS % {"folds": 2}
        assert queue.wait_for_children(session, parent, parent_token, waiting)
    fold, fold_kind = _job(service, {"fold": 1}, parent_id=parent)
    _job(service, {"fold": 2}, parent_id=parent)
    fold_token = _claim(service, fold, fold_kind)
    epoch = {"epoch": 1, "epochs": 3, "batch": 2, "batches": 5, "loss": "0.700"}
    doing = messages.IN_FOLD % {"fold": 1, "folds": 2, "doing": messages.EPOCH % epoch}
    with service.session() as session:
        queue.report(session, session.get(Job, fold), fold_token, LEASE, 0.4, doing, "")

    failed, failed_kind = _job(service, {"cohort": "lidc"})
    token = _claim(service, failed, failed_kind)
    log = "10:00:00 loading\n10:00:01 Traceback (most recent call last):\n  boom\n"
    with service.session() as session:
        assert queue.finish(
            session,
            failed,
            token,
            JobStatus.failed,
            error="RuntimeError: boom",
            log=log,
            message=messages.FAILED % {"error": "boom"},
        )
    trained, trained_kind = _job(service, {"cohort": "lidc", "activate": True})
    token = _claim(service, trained, trained_kind)
    version = service.checkpoints.first_version[0]
    with service.session() as session:
        assert queue.finish(
            session,
            trained,
            token,
            JobStatus.succeeded,
            result={"version": version, "activated": True},
            message=messages.REGISTERED_ACTIVE % {"version": version},
        )

    sessions = service.app.state.sessions
    (a, a_summary), (b, b_summary) = report_folders.a, report_folders.b
    report_a = add_report_row(sessions, a, a_summary, "simulated-i18n", 2, job_id=trained)
    report_b = add_report_row(sessions, b, b_summary, "simulated-i18n", 2)

    # flagged by a second reader, so no username on the review queue is also a role's name
    reader = bearer(add_user(sessions, f"reader-{secrets.token_hex(3)}", "radiologist"))
    explanation_id = explanation_url.rsplit("/", 1)[1]
    with httpx.Client(base_url=service.url, headers=reader) as http:
        url = f"/api/v1/explanations/{explanation_id}/flags"
        flagged = http.post(url, json={"text_rank": 1, "reason": "wrong_value"})
        assert flagged.status_code == 201, flagged.text
    return Made(explanation_url, parent, fold, failed, trained, report_a, report_b)


CLINICAL = ["/", "/explanations", "{explanation}", "/models", "/docs"]
ADMIN = [
    "/admin/jobs",
    "/admin/jobs/{parent}",
    "/admin/jobs/{fold}",
    "/admin/jobs/{failed}",
    "/admin/jobs/{trained}",
    "/admin/reports",
    "/admin/reports/{report_a}",
    "/admin/reports/compare?a={report_a}&b={report_b}",
    "/admin/users",
    "/admin/users?user={admin_id}&done=unchanged",
    "/admin/audit",
]
PAGES = {
    # role -> the pages it opens (200) and the ones it is refused or that name nothing (errors)
    "clinician": (CLINICAL, ["/explanations/missing", "/review", "/admin/jobs"]),
    "radiologist": (CLINICAL + ["/review"], ["/admin/users", "/admin/reports/999999"]),
    "admin": (
        CLINICAL + ["/review", *ADMIN],
        ["/admin/jobs/999999", "/admin/reports/999999", "/admin/reports/compare?a=x&b=1"],
    ),
    None: (["/login"], ["/lang/fr?next=/", "/lang/ca?next=//evil.example"]),
}
HX = {"HX-Request": "true"}
FRAGMENTS = ["/admin/jobs", "/admin/jobs/{parent}/progress", "/admin/audit", "/explanations"]


def _paths(paths: list[str], made: Made, service) -> list[str]:
    with service.session() as session:
        admin_id = session.scalar(select(User.id).where(User.username == "admin"))
    return [path.format(admin_id=admin_id, **vars(made)) for path in paths]


@pytest.mark.parametrize("language", TRANSLATED)
@pytest.mark.parametrize("role", list(PAGES), ids=str)
def test_every_page_of_every_role_is_in_the_readers_language(
    service, client_as, made, role, language
):
    viewer = client_as(role)
    viewer.cookies.set("lang", language)
    shown, refused = (_paths(paths, made, service) for paths in PAGES[role])
    for url in shown + refused:
        response = viewer.get(url)
        assert (response.status_code == 200) == (url in shown), (url, response.status_code)
        assert f'<html lang="{language}">' in response.text, url
        assert english_left(response.text, language) == set(), (role, url)
    if role == "admin":  # the htmx fragments, on their own
        for url in _paths(FRAGMENTS, made, service):
            fragment = viewer.get(url, headers=HX)
            assert fragment.status_code == 200 and "<html" not in fragment.text, url
            assert english_left(fragment.text, language) == set(), url
    # the English pages do show those ids: the check above can fail
    viewer.cookies.set("lang", "en")
    for url in shown[:1] + refused[:1]:
        assert english_left(viewer.get(url).text, language), url


def said(response: httpx.Response) -> str:
    """A page's markup with its whitespace collapsed and its character references read."""
    return html.unescape(" ".join(response.text.split()))


def test_the_admin_pages_show_messages_built_from_values_in_the_readers_language(
    service, client_as, made
):
    admin = client_as("admin")
    admin.cookies.set("lang", "ca")
    parent = said(admin.get(f"/admin/jobs/{made.parent}"))
    assert '<span class="message">0 de 2 plecs acabats, 1 en curs</span>' in parent
    assert f'<li data-job="{made.fold}">plec 1/2: època 1/3, lot 2/5, pèrdua 0.700</li>' in parent
    assert '<span class="status status-queued">a la cua</span>' in parent
    failed = said(admin.get(f"/admin/jobs/{made.failed}"))
    assert "fallida: boom" in failed and "Traça de la pila (per als administradors)" in failed
    trained = said(admin.get(f"/admin/jobs/{made.trained}"))
    assert "s'ha registrat" in trained and "(activa)" in trained
    assert f"Informe d'avaluació núm. {made.report_a}" in trained

    missing = admin.get("/admin/jobs/999999")
    assert missing.status_code == 404
    assert '<p class="error-action">No s\'ha pogut mostrar la tasca 999999.</p>' in said(missing)
    assert '<span class="error-message">no hi ha cap tasca 999999</span>' in said(missing)
    assert '<span class="error-note">no s\'ha canviat res.</span>' in said(missing)

    admin.cookies.set("lang", "es")
    form = {"kind": "evaluate", "cohort": "nope", "preset": "lidc", "folds": "2"}
    refused = admin.post("/admin/jobs", data=form)
    assert refused.status_code == 422 and "La tarea no se ha iniciado" in said(refused)
    assert "no hay ninguna cohorte 'nope' en el directorio de datos" in said(refused)
    wrong = admin.post("/admin/jobs", data=form | {"cohort": "lidc", "folds": "99"})
    assert "folds debe estar entre 2 y 10; se ha recibido 99" in said(wrong)
    reviewer = client_as("radiologist")
    reviewer.cookies.set("lang", "es")
    days = reviewer.get("/review", params={"since": "2026-02-30"})
    assert days.status_code == 422
    assert "'2026-02-30' no es una fecha válida para «desde el día»" in said(days)
    with service.session() as session:
        admin_id = session.scalar(select(User.id).where(User.username == "admin"))
    users = said(admin.get("/admin/users", params={"user": admin_id, "done": "unchanged"}))
    assert "admin ya estaba así; no ha cambiado nada." in users
    report = said(admin.get(f"/admin/reports/{made.report_a}"))
    assert "Matrices de confusión:" in report and "regresión logística" in report

    # what the JSON API sends stays English whoever asks
    api = admin.get("/api/v1/admin/jobs/999999", headers={"Accept-Language": "es"})
    assert api.json()["detail"] == "no job 999999"
    listed = {job["id"]: job for job in admin.get("/api/v1/admin/jobs").json()}
    assert listed[made.failed]["message"] == "failed: boom"


def test_a_job_message_and_a_low_confidence_reason_are_read_back_and_translated():
    token = set_current_locale(Locale.parse("ca"))
    try:
        epoch = messages.EPOCH % {"epoch": 2, "epochs": 4, "batch": 1, "batches": 5, "loss": "0.7"}
        stage = messages.IN_FOLD % {"fold": 2, "folds": 3, "doing": "predict"}
        nested = messages.IN_FOLD % {"fold": 2, "folds": 3, "doing": epoch}
        assert messages.shown_job_message(stage) == "plec 2/3: predicció"
        assert messages.shown_job_message(nested) == "plec 2/3: època 2/4, lot 1/5, pèrdua 0.7"
        assert messages.shown_job_message("failed: worker lost") == (
            "fallida: s'ha perdut el procés de treball"
        )
        assert messages.shown_job_message("something of its own") == "something of its own"
        reason = LOW_SIMILARITY_REASON % {"best": "0.21", "threshold": "0.35"}
        assert views.shown_reason(reason) == (
            "la millor similitud, 0.21, és inferior a 0.35, el valor que assoleix el 90% dels "
            "casos d'entrenament"
        )
    finally:
        reset_current_locale(token)
    # English outside a request, and the ids are what model/ and the workers write
    assert messages.shown_job_message(stage) == "fold 2/3: predict"
    assert views.LOW_CONFIDENCE_REASONS == (
        LOW_SIMILARITY_REASON,
        LOW_PROBABILITY_REASON,
        SPLIT_VOTE_REASON,
    )
    assert {SCORING, INDEXING, "train", "predict", "baselines"} <= set(messages.STAGES)
    assert set(METHOD_NAMES.values()) <= set(METHOD_LABELS)


def test_the_language_follows_accept_language_by_q_and_the_switch_sticks(service, client_as):
    viewer = client_as("clinician")
    catalan_first = {"Accept-Language": "de-DE;q=1, ca;q=0.8, es;q=0.5"}
    assert '<html lang="ca">' in viewer.get("/", headers=catalan_first).text
    spanish_first = {"Accept-Language": "es;q=0.9, ca;q=0.2"}
    assert '<html lang="es">' in viewer.get("/", headers=spanish_first).text
    assert '<html lang="en">' in viewer.get("/", headers={"Accept-Language": "fr"}).text

    switched = viewer.get("/lang/es", params={"next": "/explanations?patient_pseudonym=P1"})
    assert switched.status_code == 303
    assert switched.headers["location"] == "/explanations?patient_pseudonym=P1"
    cookie = switched.headers["set-cookie"]
    assert cookie.startswith("lang=es;") and "HttpOnly" in cookie and "SameSite=lax" in cookie
    viewer.cookies.set("lang", "es")
    page = viewer.get("/explanations", headers=catalan_first)  # the switch wins
    assert '<html lang="es">' in page.text and "Explicaciones recientes" in page.text
    # the header offers the other languages, each named in itself, back to the same page
    assert 'href="/lang/ca?next=/explanations"' in page.text and ">Català<" in page.text


@pytest.mark.parametrize(
    "target", ["//evil.example/x", "https://evil.example/", "/\\evil.example", "javascript:x"]
)
def test_the_switch_refuses_to_send_the_reader_off_site(client_as, target):
    refused = client_as("clinician").get("/lang/ca", params={"next": target})
    assert refused.status_code == 422 and "set-cookie" not in refused.headers
    assert "location" not in refused.headers
    unknown = client_as("clinician").get("/lang/fr", params={"next": "/"})
    assert unknown.status_code == 404 and "set-cookie" not in unknown.headers


def test_the_fhir_export_is_the_same_for_a_catalan_reader(client_as, explanation_url):
    viewer = client_as("clinician")
    url = f"/api/v1{explanation_url}/fhir"
    english = viewer.get(url, headers={"Accept-Language": "en"})
    viewer.cookies.set("lang", "ca")
    catalan = viewer.get(url, headers={"Accept-Language": "ca-ES,ca"})
    assert english.status_code == catalan.status_code == 200
    assert english.content == catalan.content
    # English display text: a Catalan label never leaks into the codes' displays
    assert "Densitat" not in catalan.text and "Sòlid" not in catalan.text
