"""Who may do what: every route's decision per role, ownership, sessions, CSRF, throttling."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from fastapi.routing import APIRoute, iter_route_contexts
from service_support import TEST_PASSWORD, add_user, bearer
from test_api import case, post_json

from app.deps import SESSION_COOKIE

CALLERS = (None, "clinician", "radiologist", "admin")
MISSING = "00000000-0000-0000-0000-000000000000"

# (method, path) -> expected status for (anonymous, clinician, radiologist, admin), each request
# sent with no body. A route missing here fails test_every_route_has_an_expected_decision.
# Anonymous pages redirect to the login form (303); anonymous API calls get 401.
EXPECTED: dict[tuple[str, str], tuple[int, int, int, int]] = {
    ("GET", "/healthz"): (200, 200, 200, 200),
    ("GET", "/readyz"): (200, 200, 200, 200),
    ("GET", "/metrics"): (200, 200, 200, 200),
    ("GET", "/api/v1/models"): (401, 200, 200, 200),
    ("POST", "/api/v1/explanations"): (401, 415, 415, 415),
    ("GET", "/api/v1/explanations"): (401, 200, 200, 200),
    ("GET", "/api/v1/explanations/{explanation_id}"): (401, 404, 404, 404),
    ("GET", "/"): (303, 200, 200, 200),
    ("POST", "/explanations"): (303, 415, 415, 415),
    ("POST", "/examples/{name}"): (303, 404, 404, 404),
    ("GET", "/explanations"): (303, 200, 200, 200),
    ("GET", "/explanations/{explanation_id}"): (303, 404, 404, 404),
    ("GET", "/login"): (200, 200, 200, 200),
    ("POST", "/login"): (422, 422, 422, 422),
    ("POST", "/logout"): (303, 303, 303, 303),
    ("GET", "/openapi.json"): (401, 200, 200, 200),
    ("GET", "/docs"): (303, 200, 200, 200),
    ("GET", "/admin/audit"): (303, 403, 403, 200),
    ("POST", "/api/v1/explanations/{explanation_id}/flags"): (401, 403, 422, 422),
    ("GET", "/api/v1/flags"): (401, 403, 200, 200),
    ("POST", "/api/v1/flags/{flag_id}/review"): (401, 403, 422, 422),
    ("GET", "/api/v1/corrections"): (401, 403, 200, 200),
    ("POST", "/explanations/{explanation_id}/flags"): (303, 403, 422, 422),
    ("GET", "/review"): (303, 403, 200, 200),
    ("GET", "/models"): (303, 200, 200, 200),
    ("GET", "/api/v1/tokens"): (401, 200, 200, 200),
    ("POST", "/api/v1/tokens"): (401, 201, 201, 201),
    ("POST", "/api/v1/tokens/{token_id}/revoke"): (401, 404, 404, 404),
    ("POST", "/review/{flag_id}"): (303, 403, 422, 422),
    ("GET", "/admin/audit.csv"): (303, 403, 403, 200),
    ("POST", "/api/v1/admin/jobs"): (401, 403, 403, 422),
    ("GET", "/api/v1/admin/jobs"): (401, 403, 403, 200),
    ("GET", "/api/v1/admin/jobs/{job_id}"): (401, 403, 403, 404),
    ("POST", "/api/v1/admin/jobs/{job_id}/cancel"): (401, 403, 403, 404),
    ("GET", "/api/v1/models/history"): (401, 403, 403, 200),
    ("POST", "/api/v1/models/{version}/activate"): (401, 403, 403, 404),
    ("GET", "/admin/jobs"): (303, 403, 403, 200),
    ("POST", "/admin/jobs"): (303, 403, 403, 422),
    ("GET", "/admin/jobs/{job_id}"): (303, 403, 403, 404),
    ("GET", "/admin/jobs/{job_id}/progress"): (303, 403, 403, 404),
    ("POST", "/admin/jobs/{job_id}/cancel"): (303, 403, 403, 404),
    ("POST", "/admin/models/{version}/activate"): (303, 403, 403, 404),
    ("GET", "/admin/reports"): (303, 403, 403, 200),
    ("GET", "/admin/reports/{report_id}"): (303, 403, 403, 404),
    ("GET", "/admin/reports/{report_id}/figures/{name}"): (303, 403, 403, 404),
    ("GET", "/admin/reports/{report_id}/files/{name}"): (303, 403, 403, 404),
}
PATH_VALUES = {
    "explanation_id": MISSING,
    "name": "no-such-example.npy",
    "flag_id": "0",
    "token_id": "0",
    "job_id": "0",
    "version": "no-such-version",
    "report_id": "0",
}


def app_routes(app) -> set[tuple[str, str]]:
    found = set()
    for context in iter_route_contexts(app.routes):
        if isinstance(context.route, APIRoute):
            found |= {(method, context.path) for method in context.methods}
    return found


def test_every_route_has_an_expected_decision(service):
    assert app_routes(service.app) == set(EXPECTED)


@pytest.mark.parametrize("route", sorted(EXPECTED), ids=lambda r: f"{r[0]} {r[1]}")
def test_route_by_role_matrix(service, client_as, route):
    method, path = route
    url = path.format(**PATH_VALUES) if "{" in path else path
    got = tuple(client_as(caller).request(method, url).status_code for caller in CALLERS)
    assert got == EXPECTED[route]


@pytest.mark.parametrize("flagger", ["radiologist", "admin"])
def test_nobody_reviews_their_own_flag(service, client_as, flagger):
    """Separation of duties, in the service layer: the API and the page refuse (403) and audit
    it, whatever the role; the other reviewer decides."""
    from test_audit import events

    own = client_as(flagger)
    created = post_json(own, case().tolist())
    field = created.json()["explanation"]["fields"][0]["field"]
    url = f"/api/v1/explanations/{created.json()['id']}/flags"
    flag_id = own.post(url, json={"field": field, "reason": "ambiguous"}).json()["id"]

    api = own.post(f"/api/v1/flags/{flag_id}/review", json={"decision": "accept"})
    assert api.status_code == 403 and "separation of duties" in api.json()["detail"]
    page = own.post(f"/review/{flag_id}", data={"decision": "reject"})
    assert page.status_code == 403 and "another reviewer" in page.text
    refusals = events(service, target_type="flag", target_id=str(flag_id), outcome="forbidden")
    assert [(e.action, e.actor) for e in refusals] == [
        ("flag.accept", flagger),
        ("flag.reject", flagger),
    ]
    assert "Raised by you" in own.get("/review").text

    other = client_as("admin" if flagger == "radiologist" else "radiologist")
    decided = other.post(f"/api/v1/flags/{flag_id}/review", json={"decision": "accept"})
    assert decided.status_code == 200 and decided.json()["status"] == "accepted"


def test_only_radiologists_and_admins_read_other_peoples_explanations(service, client_as):
    other_token = add_user(service.app.state.sessions, "clinician-b", "clinician")
    owner = client_as("clinician")
    created = post_json(owner, case().tolist())
    assert created.status_code == 201
    explanation_id = created.json()["id"]
    url = f"/api/v1/explanations/{explanation_id}"

    with httpx.Client(base_url=service.url, headers=bearer(other_token)) as other:
        assert other.get(url).status_code == 404
        assert other.get(f"/explanations/{explanation_id}").status_code == 404
        listed = [e["id"] for e in other.get("/api/v1/explanations").json()]
        assert explanation_id not in listed
    for role in ("clinician", "radiologist", "admin"):
        assert client_as(role).get(url).status_code == 200, role
    listed = [e["id"] for e in owner.get("/api/v1/explanations", params={"limit": 200}).json()]
    assert explanation_id in listed


def test_a_revoked_or_unknown_token_is_refused(service):
    from app import accounts

    token = add_user(service.app.state.sessions, "revoked-user", "admin")
    with httpx.Client(base_url=service.url, headers=bearer(token)) as http:
        assert http.get("/api/v1/models").status_code == 200
        with service.session() as session:
            accounts.revoke_token(session, token)
        refused = http.get("/api/v1/models")
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
    with httpx.Client(base_url=service.url, headers=bearer("clipmed_made-up")) as http:
        assert http.get("/api/v1/models").status_code == 401


def test_owners_and_admins_create_and_revoke_tokens(service, client_as):
    clinician = client_as("clinician")
    made = clinician.post("/api/v1/tokens")
    assert made.status_code == 201
    new = made.json()
    with httpx.Client(base_url=service.url, headers=bearer(new["token"])) as http:
        assert http.get("/api/v1/models").status_code == 200
        assert new["id"] in [t["id"] for t in clinician.get("/api/v1/tokens").json()]
        assert "token" not in clinician.get("/api/v1/tokens").json()[0]
        # A radiologist cannot revoke a clinician's token; the owner and an admin can.
        assert (
            client_as("radiologist").post(f"/api/v1/tokens/{new['id']}/revoke").status_code == 404
        )
        assert client_as("admin").post(f"/api/v1/tokens/{new['id']}/revoke").status_code == 200
        assert http.get("/api/v1/models").status_code == 401
    second = clinician.post("/api/v1/tokens").json()
    revoked = clinician.post(f"/api/v1/tokens/{second['id']}/revoke").json()
    assert revoked["revoked_at"] is not None


def log_in(http: httpx.Client, username: str, password: str = TEST_PASSWORD) -> httpx.Response:
    form = http.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)
    data = {"username": username, "password": password, "csrf_token": token}
    return http.post("/login", data=data)


def page_csrf(page: str) -> str:
    return re.search(r'<meta name="csrf-token" content="([^"]+)"', page).group(1)


def test_browser_session_cookie_and_logout(service):
    with httpx.Client(base_url=service.url) as http:
        response = log_in(http, "clinician")
        assert response.status_code == 303 and response.headers["location"] == "/"
        cookie = response.headers["set-cookie"]
        assert cookie.startswith(f"{SESSION_COOKIE}=")
        assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Secure" not in cookie
        home = http.get("/")
        assert home.status_code == 200 and "clinician (clinician)" in home.text
        csrf = page_csrf(home.text)
        assert f'hx-headers=\'{{"X-CSRF-Token": "{csrf}"}}\'' in home.text

        assert http.post("/logout").status_code == 403  # no CSRF token
        assert http.post("/logout", data={"csrf_token": csrf}).status_code == 303
        assert http.get("/").status_code == 303  # the session is gone server-side


def test_the_cookie_is_secure_over_https(service):
    # uvicorn trusts X-Forwarded-Proto from 127.0.0.1, as behind a local TLS proxy.
    with httpx.Client(base_url=service.url, headers={"X-Forwarded-Proto": "https"}) as http:
        form = http.get("/login")
        assert "Secure" in form.headers["set-cookie"]
        token = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)
        http.cookies.clear()  # httpx keeps Secure cookies off plain http; send it by hand
        response = http.post(
            "/login",
            data={"username": "radiologist", "password": TEST_PASSWORD, "csrf_token": token},
            headers={"Cookie": f"clipmed_login_csrf={token}"},
        )
        assert response.status_code == 303
        assert "Secure" in response.headers["set-cookie"]


def test_state_changing_requests_need_the_csrf_token(service):
    features = {"file": ("case.npy", b"not really npy", "application/octet-stream")}
    with httpx.Client(base_url=service.url) as http:
        log_in(http, "admin")
        csrf = page_csrf(http.get("/").text)
        refused = http.post("/explanations", files=features, data={"k": "3"})
        assert refused.status_code == 403 and "CSRF" in refused.text
        wrong = http.post("/explanations", files=features, headers={"X-CSRF-Token": "nope"})
        assert wrong.status_code == 403
        # With the token (htmx header, or the form field) the request reaches the route.
        by_header = http.post("/explanations", files=features, headers={"X-CSRF-Token": csrf})
        by_field = http.post("/explanations", files=features, data={"csrf_token": csrf})
        assert by_header.status_code == by_field.status_code == 422
    with httpx.Client(base_url=service.url) as http:  # the login form has its own token
        forged = http.post("/login", data={"username": "admin", "password": TEST_PASSWORD})
        assert forged.status_code == 403 and SESSION_COOKIE not in forged.headers.get(
            "set-cookie", ""
        )


def test_repeated_failed_logins_are_slowed_down(service):
    add_user(service.app.state.sessions, "throttled", "clinician")
    with httpx.Client(base_url=service.url) as http:
        limit = service.app.state.login_throttle.max_failures
        for _ in range(limit):
            assert log_in(http, "throttled", "wrong password").status_code == 401
        refused = log_in(http, "throttled")  # even the right password, until the window passes
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 0
        assert log_in(http, "clinician").status_code == 303  # other users are not affected


def test_clipmed_users_create_and_token(tmp_path):
    exe = Path(sys.executable).parent / "clipmed"
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update({"CLIPMED_DATA_DIR": str(tmp_path), "NO_COLOR": "1"})

    def clipmed(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(exe), *args], input=stdin, env=env, capture_output=True, text=True, timeout=120
        )

    made = clipmed(
        "users",
        "create",
        "--username",
        "ada",
        "--role",
        "radiologist",
        "--password-stdin",
        stdin="a long enough password\n",
    )
    assert made.returncode == 0, made.stderr
    assert '"role": "radiologist"' in made.stdout
    again = clipmed(
        "users",
        "create",
        "--username",
        "ada",
        "--role",
        "admin",
        "--password-stdin",
        stdin="another password\n",
    )
    assert again.returncode != 0 and "taken" in again.stderr
    bad_role = clipmed(
        "users",
        "create",
        "--username",
        "bob",
        "--role",
        "root",
        "--password-stdin",
        stdin="a long enough password\n",
    )
    assert bad_role.returncode != 0 and "unknown role" in bad_role.stderr
    token = clipmed("users", "token", "ada")
    assert token.returncode == 0 and token.stdout.strip().startswith("clipmed_")
    clipmed("users", "token", "ada")
    revoked = clipmed("users", "revoke-tokens", "ada")
    assert revoked.returncode == 0 and '"revoked": 2' in revoked.stdout
    assert clipmed("users", "token", "nobody").returncode != 0

    from sqlalchemy import create_engine, text

    engine = create_engine(f"sqlite:///{tmp_path / 'clipmed.db'}")
    try:
        with engine.connect() as connection:
            stored = " ".join(
                connection.execute(text("SELECT token_sha256 FROM api_tokens")).scalars()
            )
            password_hash = connection.execute(text("SELECT password_hash FROM users")).scalar()
    finally:
        engine.dispose()
    assert token.stdout.strip() not in stored and password_hash.startswith("$argon2id$")
