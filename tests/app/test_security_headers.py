"""Security headers on every answer of every route (app.middleware.security_headers), no
inline script in any page, and the API viewer served by the app itself."""

from __future__ import annotations

import re

import pytest
from fastapi.routing import APIRoute, iter_route_contexts
from starlette.routing import Mount
from support.http import PATH_VALUES

from app.middleware.security_headers import CONTENT_SECURITY_POLICY
from app.web import TEMPLATES_DIR

# A file each mount serves; a mount missing here fails the test (so a new one gets checked).
MOUNT_FILES = {"static": "app.css", "swagger-ui": "swagger-ui-bundle.js"}

# The headers do not depend on the database: one is enough (the HTTP tests cover both).
pytestmark = pytest.mark.parametrize("service", ["sqlite"], indirect=True)

INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.IGNORECASE)
HANDLER_ATTRIBUTE = re.compile(r"""\s(on[a-z]+|hx-on[:\w-]*)\s*=""", re.IGNORECASE)


def every_request(app) -> list[tuple[str, str, bool]]:
    """(method, URL, cacheable) for every route of the app: each method of each API route,
    with its path parameters filled in, and a file of each mount."""
    requests = []
    for context in iter_route_contexts(app.routes):
        route = context.route
        if isinstance(route, APIRoute):
            path = context.path
            url = path.format(**PATH_VALUES) if "{" in path else path
            requests += [(method, url, False) for method in sorted(context.methods)]
        elif isinstance(route, Mount):
            assert route.name in MOUNT_FILES, f"no file to fetch from the mount {route.path}"
            requests.append(("GET", f"{route.path}/{MOUNT_FILES[route.name]}", True))
        else:
            pytest.fail(f"a route the test does not know how to call: {route!r}")
    return requests


def assert_security_headers(response, cacheable: bool) -> None:
    headers = response.headers
    where = f"{response.request.method} {response.request.url.path} ({response.status_code})"
    assert headers["content-security-policy"] == CONTENT_SECURITY_POLICY, where
    csp = dict(part.strip().split(" ", 1) for part in CONTENT_SECURITY_POLICY.split(";"))
    assert csp["script-src"] == "'self'" and csp["frame-ancestors"] == "'none'"
    assert headers["x-frame-options"] == "DENY", where
    assert headers["x-content-type-options"] == "nosniff", where
    assert headers["referrer-policy"] == "same-origin", where
    if cacheable:
        assert "no-store" not in headers.get("cache-control", ""), where
    else:
        assert headers["cache-control"] == "no-store", where
    assert "strict-transport-security" not in headers, where  # plain HTTP


@pytest.mark.parametrize("caller", [None, "clinician", "admin"])
def test_every_route_answers_with_the_security_headers(service, client_as, caller):
    http = client_as(caller)
    requests = every_request(service.app)
    assert len(requests) > 40
    statuses = set()
    for method, url, cacheable in requests:
        response = http.request(method, url)
        statuses.add(response.status_code)
        assert_security_headers(response, cacheable)
    # answers of every kind carry them: pages, redirects, refusals, errors, files
    if caller is None:
        assert {200, 303, 401, 422} <= statuses
    else:
        assert {200, 404, 422} <= statuses
    unknown = ("/no-such-page", "/static/no-such.js", "/static/swagger-ui/redoc.standalone.js")
    for url in unknown:
        response = http.get(url)
        assert response.status_code == 404
        assert_security_headers(response, cacheable=url.startswith("/static/"))


def test_patient_data_is_never_cached(service, client_as):
    from support.http import post_json
    from support.inputs import case

    http = client_as("radiologist")
    created = post_json(http, case().tolist())
    assert created.status_code == 201 and created.headers["cache-control"] == "no-store"
    for url in (
        f"/api/v1/explanations/{created.json()['id']}",
        f"/explanations/{created.json()['id']}",
        "/api/v1/corrections?format=csv",
        "/review",
    ):
        assert http.get(url).headers["cache-control"] == "no-store", url
    assert client_as("admin").get("/admin/audit.csv").headers["cache-control"] == "no-store"


def test_hsts_only_over_https(service, client_as):
    http = client_as("admin")
    # uvicorn takes the scheme from X-Forwarded-Proto sent by a trusted proxy (127.0.0.1)
    for url in ("/healthz", "/", "/api/v1/models", "/static/app.css"):
        over_https = http.get(url, headers={"X-Forwarded-Proto": "https"})
        assert over_https.headers["strict-transport-security"].startswith("max-age="), url
        assert "strict-transport-security" not in http.get(url).headers, url


def test_pages_have_no_inline_script(service, client_as):
    # the templates themselves, including ones only some requests render
    for template in sorted(TEMPLATES_DIR.glob("*.html")):
        text = template.read_text()
        assert not INLINE_SCRIPT.search(text), template.name
        assert not HANDLER_ATTRIBUTE.search(text), template.name
        assert "javascript:" not in text.lower(), template.name
    # and every page as rendered, the API viewer included
    http = client_as("admin")
    pages = 0
    for method, url, _ in every_request(service.app):
        if method != "GET":
            continue
        response = http.get(url)
        if response.headers.get("content-type", "").startswith("text/html"):
            pages += 1
            assert not INLINE_SCRIPT.search(response.text), url
            assert not HANDLER_ATTRIBUTE.search(response.text), url
    assert pages >= 8


def test_the_api_viewer_is_served_by_the_app(service, client_as):
    http = client_as("clinician")
    page = http.get("/docs")
    assert page.status_code == 200
    sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert sources and all(s.startswith("/") and not s.startswith("//") for s in sources)
    for source in sources:
        asset = http.get(source)
        assert asset.status_code == 200 and len(asset.content) > 100, source
    bundle = http.get("/static/swagger-ui/swagger-ui-bundle.js")
    assert "javascript" in bundle.headers["content-type"] and b"SwaggerUIBundle" in bundle.content
    # the viewer's assets are public (they hold nothing of ours); the document is not
    with_no_login = client_as(None)
    assert with_no_login.get("/static/swagger-ui/swagger-ui.css").status_code == 200
    assert with_no_login.get("/openapi.json").status_code == 401
