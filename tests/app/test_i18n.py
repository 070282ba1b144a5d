"""The interface in English, Catalan and Spanish: complete catalogues, pages without English
left in them, the language switch, and a FHIR export that does not change with the reader."""

from __future__ import annotations

import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest
from babel.messages.pofile import read_po
from support.http import bearer, post_json
from support.inputs import case

from app.i18n import LANGUAGES, LOCALES_DIR

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
        pairs = (
            zip(message.id, message.string, strict=False)
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
    """Each text node and each human-facing attribute of a page, whitespace collapsed."""

    SHOWN_ATTRIBUTES = {"aria-label", "title", "label", "placeholder", "alt"}

    def __init__(self) -> None:
        super().__init__()
        self.texts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style", "code", "pre"):
            self._skip += 1
        for name, value in attrs:
            if name in self.SHOWN_ATTRIBUTES and value:
                self.texts.append(" ".join(value.split()))

    def handle_endtag(self, tag):
        if tag in ("script", "style", "code", "pre") and self._skip:
            self._skip -= 1

    def handle_data(self, data):
        text = " ".join(data.split())
        if text and not self._skip:
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


PAGES = {
    # the clinical pages each role can open (the admin-only pages, jobs, reports, the audit
    # trail and /docs, are not translated yet: README, "Languages")
    "clinician": ["/", "/explanations", "{explanation}", "/models", "/explanations/missing"],
    "radiologist": ["/", "/explanations", "{explanation}", "/models", "/review"],
    "admin": ["/", "/explanations", "{explanation}", "/models", "/review"],
}


@pytest.fixture(scope="module")
def explanation_url(service) -> str:
    with httpx.Client(base_url=service.url, headers=bearer(service.tokens["clinician"])) as c:
        made = post_json(c, case().tolist(), k=3)
        assert made.status_code == 201, made.text
        return f"/explanations/{made.json()['id']}"


@pytest.mark.parametrize("language", TRANSLATED)
@pytest.mark.parametrize("role", sorted(PAGES))
def test_the_clinical_pages_of_every_role_are_in_the_readers_language(
    service, client_as, explanation_url, role, language
):
    viewer = client_as(role)
    viewer.cookies.set("lang", language)
    for path in PAGES[role]:
        url = path.format(explanation=explanation_url)
        response = viewer.get(url)
        assert response.status_code in (200, 404), (url, response.status_code)
        assert f'<html lang="{language}">' in response.text
        assert english_left(response.text, language) == set(), (role, url)
    # the English page does show those ids: the check above can fail
    viewer.cookies.set("lang", "en")
    assert english_left(viewer.get("/").text, language)


def test_the_login_page_and_the_error_pages_are_translated_too(service):
    with httpx.Client(base_url=service.url, cookies={"lang": "es"}) as anonymous:
        login = anonymous.get("/login")
        assert "Iniciar sesión" in login.text and english_left(login.text, "es") == set()


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
