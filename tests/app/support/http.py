"""Talking to a running service as its clients do: API tokens, JSON bodies, the login form and
its CSRF tokens, and the path values that name nothing."""

from __future__ import annotations

import json
import re

import httpx

TEST_PASSWORD = "correct horse battery staple"


def add_user(sessions, username: str, role: str) -> str:
    """Creates a user (password TEST_PASSWORD) and returns a new API token of theirs."""
    from app import accounts

    with sessions() as session:
        user = accounts.create_user(session, username, role, TEST_PASSWORD)
        return accounts.create_token(session, user)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def post_json(client: httpx.Client, features, k: int = 5) -> httpx.Response:
    # json.dumps writes NaN/Infinity (as JavaScript clients do); httpx's json= refuses them
    body = json.dumps({"features": features, "k": k}).encode()
    return client.post(
        "/api/v1/explanations", content=body, headers={"content-type": "application/json"}
    )


MISSING = "00000000-0000-0000-0000-000000000000"


PATH_VALUES = {
    "explanation_id": MISSING,
    "name": "no-such-example.npy",
    "flag_id": "0",
    "token_id": "0",
    "job_id": "0",
    "version": "no-such-version",
    "report_id": "0",
    "code": "ca",
    "user_id": "0",
}


def log_in(http: httpx.Client, username: str, password: str = TEST_PASSWORD) -> httpx.Response:
    """Logs in through the form as a browser does: from then on the client sends this site's
    Origin on every request (app.origin checks it on state-changing ones)."""
    http.headers.setdefault("Origin", str(http.base_url).rstrip("/"))
    form = http.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)
    data = {"username": username, "password": password, "csrf_token": token}
    return http.post("/login", data=data)


def page_csrf(page: str) -> str:
    return re.search(r'<meta name="csrf-token" content="([^"]+)"', page).group(1)
