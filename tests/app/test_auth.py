"""Who may do what: every route's decision per role, ownership, sessions, CSRF, throttling."""

from __future__ import annotations

import html
import re

import httpx
import pytest
from fastapi.routing import APIRoute, iter_route_contexts
from support.cli import clipmed_runner
from support.http import PATH_VALUES, TEST_PASSWORD, add_user, bearer, log_in, page_csrf, post_json
from support.inputs import case

from app.deps import SESSION_COOKIE

CALLERS = (None, "clinician", "radiologist", "admin")

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
    ("GET", "/api/v1/explanations/{explanation_id}/fhir"): (401, 404, 404, 404),
    ("GET", "/api/v1/explanations/{explanation_id}/sr"): (401, 404, 404, 404),
    ("POST", "/api/v1/explanations/batch"): (401, 415, 415, 415),
    ("GET", "/"): (303, 200, 200, 200),
    ("POST", "/explanations"): (303, 415, 415, 415),
    ("POST", "/examples/{name}"): (303, 404, 404, 404),
    ("GET", "/explanations"): (303, 200, 200, 200),
    ("GET", "/explanations/{explanation_id}"): (303, 404, 404, 404),
    ("GET", "/login"): (200, 200, 200, 200),
    ("GET", "/lang/{code}"): (303, 303, 303, 303),  # a preference cookie, for anyone
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
    # without the two report ids: 422 naming the missing one
    ("GET", "/admin/reports/compare"): (303, 403, 403, 422),
    ("GET", "/admin/reports/compare/figure"): (303, 403, 403, 422),
    ("GET", "/admin/reports/{report_id}/figures/{name}"): (303, 403, 403, 404),
    ("GET", "/admin/reports/{report_id}/files/{name}"): (303, 403, 403, 404),
    ("GET", "/api/v1/users"): (401, 403, 403, 200),
    ("POST", "/api/v1/users/{user_id}/deactivate"): (401, 403, 403, 404),
    ("POST", "/api/v1/users/{user_id}/activate"): (401, 403, 403, 404),
    ("POST", "/api/v1/users/{user_id}/role"): (401, 403, 403, 422),
    ("POST", "/api/v1/users/{user_id}/password"): (401, 403, 403, 422),
    ("GET", "/admin/users"): (303, 403, 403, 200),
    ("POST", "/admin/users/{user_id}/deactivate"): (303, 403, 403, 404),
    ("POST", "/admin/users/{user_id}/activate"): (303, 403, 403, 404),
    ("POST", "/admin/users/{user_id}/role"): (303, 403, 403, 422),
    ("POST", "/admin/users/{user_id}/password"): (303, 403, 403, 422),
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
    from support.databases import events

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
        form_cookie = re.search(r"clipmed_login_form=([^;]+)", form.headers["set-cookie"])[1]
        http.cookies.clear()  # httpx keeps Secure cookies off plain http; send it by hand
        response = http.post(
            "/login",
            data={"username": "radiologist", "password": TEST_PASSWORD, "csrf_token": token},
            headers={
                "Cookie": f"clipmed_login_form={form_cookie}",
                "Origin": service.url.replace("http://", "https://"),
            },
        )
        assert response.status_code == 303
        assert "Secure" in response.headers["set-cookie"]


def login_form(http: httpx.Client) -> tuple[str, str]:
    """(the form's cookie, its CSRF token) of a fresh login form."""
    page = http.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    return page.cookies["clipmed_login_form"], token


def test_the_login_form_token_is_checked_against_the_server_not_the_cookie(service):
    credentials = {"username": "clinician", "password": TEST_PASSWORD}
    with httpx.Client(base_url=service.url, headers={"Origin": service.url}) as http:

        def post(cookie: str, token: str) -> httpx.Response:
            http.cookies.clear()
            headers = {"Cookie": f"clipmed_login_form={cookie}"}
            return http.post("/login", data=credentials | {"csrf_token": token}, headers=headers)

        # a planted cookie with a matching token of the attacker's choosing (double submit)
        planted = post("attacker-chosen", "attacker-chosen")
        assert planted.status_code == 403 and "the form expired" in planted.text
        assert SESSION_COOKIE not in planted.headers.get("set-cookie", "")
        # a real form's cookie with another real form's token
        (cookie_a, token_a), (_, token_b) = login_form(http), login_form(http)
        assert post(cookie_a, token_b).status_code == 403
        assert post(cookie_a, token_a).status_code == 403  # any attempt uses the form up
        # a form's token used as its own cookie
        _, token_c = login_form(http)
        assert post(token_c, token_c).status_code == 403
        # the real pair works once; the form cannot be replayed
        cookie_d, token_d = login_form(http)
        assert post(cookie_d, token_d).status_code == 303
        assert post(cookie_d, token_d).status_code == 403
    outcomes = [e.outcome for e in events_of(service, "login", "clinician")]
    assert outcomes.count("csrf_failed") >= 5 and "success" in outcomes


def events_of(service, action: str, actor: str) -> list:
    from sqlalchemy import select

    from app.tables import AuditEvent

    with service.session() as session:
        query = select(AuditEvent).where(AuditEvent.action == action, AuditEvent.actor == actor)
        return list(session.scalars(query))


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


def said(response: httpx.Response) -> str:
    """A page's text with HTML entities undone (quotes in a message are escaped)."""
    return html.unescape(response.text)


def test_browser_requests_that_change_state_must_come_from_this_site(service):
    with httpx.Client(base_url=service.url) as http:
        log_in(http, "admin")
        csrf = page_csrf(http.get("/").text)
        del http.headers["Origin"]
        form = {"csrf_token": csrf}
        cases = {
            "https://evil.example": "Origin 'https://evil.example' is not this site",
            "null": "Origin 'null' is not this site",
            service.url.replace("http://", "https://"): "is not this site",  # scheme differs
            service.url.rsplit(":", 1)[0] + ":1": "is not this site",  # port differs
        }
        for origin, problem in cases.items():
            refused = http.post("/logout", data=form, headers={"Origin": origin})
            assert refused.status_code == 403 and problem in said(refused), origin
        foreign_referer = {"Referer": "https://evil.example/page"}
        refused = http.post("/logout", data=form, headers=foreign_referer)
        assert refused.status_code == 403 and "Referer 'https://evil.example/page'" in said(refused)
        neither = http.post("/logout", data=form)
        assert neither.status_code == 403 and "needs an Origin or Referer header" in said(neither)
        refused_api = http.post("/api/v1/tokens", headers={"X-CSRF-Token": csrf})
        assert refused_api.status_code == 403
        assert "Origin or Referer" in refused_api.json()["detail"]
        assert http.get("/").status_code == 200  # all refused: still logged in
        # this site's Referer (no Origin) will do, as will its Origin
        own_referer = {"X-CSRF-Token": csrf, "Referer": f"{service.url}/"}
        assert http.post("/api/v1/tokens", headers=own_referer).status_code == 201
        kept = http.post("/logout", data=form, headers={"Origin": service.url})
        assert kept.status_code == 303
    # a bearer token needs neither (another site cannot make a browser send it)
    with httpx.Client(base_url=service.url, headers=bearer(service.tokens["admin"])) as api:
        elsewhere = {"Origin": "https://evil.example"}
        assert api.post("/api/v1/tokens", headers=elsewhere).status_code == 201
    # nor can another site post the login form
    with httpx.Client(base_url=service.url) as http:
        token = re.search(r'name="csrf_token" value="([^"]+)"', http.get("/login").text).group(1)
        data = {"username": "admin", "password": TEST_PASSWORD, "csrf_token": token}
        forged = http.post("/login", data=data, headers={"Origin": "https://evil.example"})
        assert forged.status_code == 403 and "is not this site" in said(forged)
        assert SESSION_COOKIE not in forged.headers.get("set-cookie", "")


def test_origins_that_only_look_like_this_site_are_refused(service):
    """New since the attack: look-alike origins and referers, each refused with a 403."""
    site = service.url  # http://127.0.0.1:PORT
    host, port = site.removeprefix("http://").split(":")
    with httpx.Client(base_url=site) as http:
        log_in(http, "admin")
        csrf = page_csrf(http.get("/").text)
        del http.headers["Origin"]
        form = {"csrf_token": csrf}
        look_alikes = [
            ("Origin", f"http://evil@{host}:{port}"),  # user information
            ("Origin", f"{site}.evil.example"),
            ("Origin", f"http://{host}.:{port}"),  # trailing dot
            ("Origin", f"{site}, https://evil.example"),  # a list
            ("Origin", f"http://{host}:{port}0"),
            ("Origin", f"ws://{host}:{port}"),
            ("Origin", f"//{host}:{port}"),
            ("Origin", ""),
            ("Referer", f"http://{host}:{port}@evil.example/"),
            ("Referer", f"http://evil.example/{site}"),
            ("Referer", f"https://evil.example/?next={site}"),
        ]
        for header, value in look_alikes:
            refused = http.post("/logout", data=form, headers={header: value})
            assert refused.status_code == 403, (header, value)
        assert http.get("/").status_code == 200  # still logged in: nothing got through
        assert http.post("/logout", data=form, headers={"Origin": site}).status_code == 303


def test_the_public_origin_setting_names_this_site(service, tmp_path):
    from pydantic import ValidationError
    from support.servers import running_server, service_settings

    from app.main import create_app

    url = service.app.state.settings.database_url
    public = "https://clipmed.example.org"
    settings = service_settings(tmp_path, url, public_origin=public)
    with running_server(create_app(settings)) as base, httpx.Client(base_url=base) as http:
        http.headers["Origin"] = public
        assert log_in(http, "clinician").status_code == 303
        own_host = http.post(
            "/logout", data={"csrf_token": page_csrf(http.get("/").text)}, headers={"Origin": base}
        )
        assert own_host.status_code == 403 and public in said(own_host)
    for wrong in ("clipmed.example.org", "https://clipmed.example.org/app", "ftp://x"):
        with pytest.raises(ValidationError, match="public_origin"):
            service_settings(tmp_path, url, public_origin=wrong)


def from_address(service, address: str) -> httpx.Client:
    """A browser behind the (trusted, local) proxy that names its address in X-Forwarded-For."""
    return httpx.Client(base_url=service.url, headers={"X-Forwarded-For": address})


def test_repeated_failed_logins_are_slowed_down(service):
    add_user(service.app.state.sessions, "throttled", "clinician")
    with from_address(service, "192.0.2.10") as http:
        limit = service.app.state.login_throttle.max_failures
        for _ in range(limit):
            assert log_in(http, "throttled", "wrong password").status_code == 401
        refused = log_in(http, "throttled")  # even the right password, until the window passes
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 0
        assert "too many failed logins for &#39;throttled&#39; from your address" in refused.text
        assert log_in(http, "clinician").status_code == 303  # other users are not affected


def test_a_flood_from_one_address_does_not_lock_the_user_out_elsewhere(service):
    add_user(service.app.state.sessions, "victim", "radiologist")
    throttle = service.app.state.login_throttle
    with from_address(service, "198.51.100.7") as attacker:
        for _ in range(throttle.max_failures + 3):
            assert log_in(attacker, "victim", "guess").status_code in (401, 429)
        assert log_in(attacker, "victim").status_code == 429
    with from_address(service, "203.0.113.9") as user:
        assert log_in(user, "victim").status_code == 303
    # a success clears that address's failures for the name, not the attacker's
    with from_address(service, "198.51.100.7") as attacker:
        assert log_in(attacker, "victim").status_code == 429


def test_one_address_trying_many_usernames_is_stopped(service):
    add_user(service.app.state.sessions, "sprayed", "clinician")
    throttle = service.app.state.login_throttle
    assert throttle.max_failures < throttle.max_failures_per_address
    with from_address(service, "198.51.100.99") as sprayer:
        for i in range(throttle.max_failures_per_address):
            assert log_in(sprayer, f"guess-{i}", "password1").status_code == 401
        refused = log_in(sprayer, "sprayed")  # a name it never failed on, the right password
        assert refused.status_code == 429 and "from your address" in refused.text
    with from_address(service, "198.51.100.100") as neighbour:
        assert log_in(neighbour, "sprayed").status_code == 303


def test_failed_logins_are_counted_in_the_database(service, tmp_path):
    """Another replica (or the same service restarted) on the database sees the same count."""
    from support.servers import running_server, service_settings

    from app.main import create_app

    add_user(service.app.state.sessions, "replicated", "clinician")
    with from_address(service, "192.0.2.77") as http:
        for _ in range(service.app.state.login_throttle.max_failures):
            assert log_in(http, "replicated", "wrong password").status_code == 401
    settings = service_settings(tmp_path, service.app.state.settings.database_url)
    with running_server(create_app(settings)) as other:
        with httpx.Client(base_url=other, headers={"X-Forwarded-For": "192.0.2.77"}) as http:
            assert log_in(http, "replicated").status_code == 429
        with httpx.Client(base_url=other, headers={"X-Forwarded-For": "192.0.2.78"}) as http:
            assert log_in(http, "replicated").status_code == 303


def test_forwarded_for_is_ignored_unless_the_proxy_is_trusted(service, tmp_path):
    """By default (no CLIPMED_FORWARDED_ALLOW_IPS) a client cannot pick its own address: every
    request here comes from 127.0.0.1, whatever X-Forwarded-For says."""
    from support.servers import running_server, service_settings

    from app.main import create_app

    add_user(service.app.state.sessions, "untrusting", "clinician")
    settings = service_settings(
        tmp_path, service.app.state.settings.database_url, forwarded_allow_ips=""
    )
    with running_server(create_app(settings)) as url:
        for i in range(settings.login_max_failures):
            with httpx.Client(base_url=url, headers={"X-Forwarded-For": f"192.0.2.{i}"}) as http:
                assert log_in(http, "untrusting", "wrong password").status_code == 401
        with httpx.Client(base_url=url, headers={"X-Forwarded-For": "192.0.2.200"}) as http:
            assert log_in(http, "untrusting").status_code == 429
        with httpx.Client(base_url=url, headers={"X-Forwarded-Proto": "https"}) as http:
            assert "Secure" not in http.get("/login").headers["set-cookie"]


def test_clipmed_users_create_and_token(tmp_path):
    clipmed = clipmed_runner(tmp_path)

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
    assert again.returncode == 2 and "taken" in again.stderr
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
    assert bad_role.returncode == 2 and "'root' is not one of" in bad_role.stderr
    token = clipmed("users", "token", "ada")
    assert token.returncode == 0 and token.stdout.strip().startswith("clipmed_")
    clipmed("users", "token", "ada")
    revoked = clipmed("users", "revoke-tokens", "ada")
    assert revoked.returncode == 0 and '"revoked": 2' in revoked.stdout
    assert clipmed("users", "token", "nobody").returncode == 1

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
