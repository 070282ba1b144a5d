"""Accounts over their whole life (app.users): the API, the admin page and the CLI end a user's
sessions and tokens in the change's own transaction, audit every attempt, and never remove the
last active admin, even when two admins demote each other at the same moment."""

from __future__ import annotations

import getpass
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
from sqlalchemy import select, text
from support.cli import clipmed_runner
from support.databases import events
from support.http import TEST_PASSWORD, add_user, bearer, log_in, page_csrf

from app import accounts, users
from app.db import make_engine, make_session_factory
from app.errors import LastActiveAdmin
from app.tables import AuditEvent, Role, User


def user_id(service, username: str) -> int:
    with service.session() as session:
        return session.scalar(select(User.id).where(User.username == username))


@contextmanager
def signed_in(service, username: str) -> Iterator[httpx.Client]:
    """A browser session of `username`, through the login form."""
    with httpx.Client(base_url=service.url, timeout=30) as http:
        assert log_in(http, username).status_code == 303
        yield http


# what the test calls it -> (the API's path, its body, the audit action)
ACTIONS = {
    "deactivate": ("deactivate", None, "user.deactivate"),
    "role": ("role", {"role": "radiologist"}, "user.set_role"),
    "password": ("password", {"password": "a brand new password"}, "user.reset_password"),
}


@pytest.mark.parametrize("action", sorted(ACTIONS))
def test_a_change_ends_the_accounts_sessions_and_tokens_at_once(service, client, action):
    username = f"life-{action}"
    token = add_user(service.app.state.sessions, username, "clinician")
    api = httpx.Client(base_url=service.url, headers=bearer(token))
    with signed_in(service, username) as browser, api:
        assert api.get("/api/v1/tokens").status_code == 200
        assert browser.get("/api/v1/models").status_code == 200
        path, body, audited = ACTIONS[action]
        target = user_id(service, username)
        done = client.post(f"/api/v1/users/{target}/{path}", json=body)
        assert done.status_code == 200, done.text
        assert done.json() | {"user": None} == {
            "user": None,
            "changed": True,
            "sessions_ended": 1,
            "tokens_revoked": 1,
        }
        # the very next request of either credential is refused
        assert api.get("/api/v1/tokens").status_code == 401
        assert browser.get("/api/v1/models").status_code == 401
        assert browser.get("/").status_code == 303  # a page: back to the login form
    [event] = events(service, action=audited, target_id=str(target))
    assert (event.actor, event.outcome) == ("admin", "success")
    with httpx.Client(base_url=service.url) as again:
        if action == "deactivate":
            assert log_in(again, username).status_code == 401
        elif action == "password":
            assert log_in(again, username).status_code == 401
            assert log_in(again, username, "a brand new password").status_code == 303
        else:
            assert log_in(again, username).status_code == 303
            assert f"{username} (radiologist)" in again.get("/").text


def test_the_last_active_admin_stays(service, client):
    admin = user_id(service, "admin")
    for path, body in (("deactivate", None), ("role", {"role": "clinician"})):
        refused = client.post(f"/api/v1/users/{admin}/{path}", json=body)
        assert refused.status_code == 409, refused.text
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["code"] == "last_active_admin"
        assert "last active admin" in refused.json()["detail"]
    refusals = events(service, target_id=str(admin), outcome="last_active_admin")
    assert [e.action for e in refusals] == ["user.deactivate", "user.set_role"]
    # a deactivated admin does not count; another active one does
    add_user(service.app.state.sessions, "admin-away", "admin")
    away = user_id(service, "admin-away")
    assert client.post(f"/api/v1/users/{away}/deactivate").status_code == 200
    assert client.post(f"/api/v1/users/{admin}/deactivate").status_code == 409
    add_user(service.app.state.sessions, "admin-two", "admin")
    two = user_id(service, "admin-two")
    demoted = client.post(f"/api/v1/users/{two}/role", json={"role": "clinician"})
    assert demoted.status_code == 200 and demoted.json()["user"]["role"] == "clinician"
    assert client.post(f"/api/v1/users/{admin}/role", json={"role": "clinician"}).status_code == 409
    listed = {u["username"]: u for u in client.get("/api/v1/users").json()}
    assert listed["admin"]["role"] == "admin" and listed["admin"]["is_active"]
    assert not listed["admin-away"]["is_active"]


def test_refusals_are_audited_too(service, client):
    add_user(service.app.state.sessions, "short-pw", "clinician")
    target = user_id(service, "short-pw")
    short = client.post(f"/api/v1/users/{target}/password", json={"password": "short"})
    assert short.status_code == 422 and "at least 8 characters" in short.json()["detail"]
    missing = client.post("/api/v1/users/999999/deactivate")
    assert missing.status_code == 404
    assert [
        e.outcome for e in events(service, action="user.reset_password", target_id=str(target))
    ] == ["invalid_input"]
    assert [e.outcome for e in events(service, action="user.deactivate", target_id="999999")] == [
        "not_found"
    ]
    # nothing was half-done: the account still signs in with its password
    with httpx.Client(base_url=service.url) as http:
        assert log_in(http, "short-pw", TEST_PASSWORD).status_code == 303


def test_the_admin_page_asks_first_then_says_what_happened(service):
    add_user(service.app.state.sessions, "page-user", "clinician")
    target = user_id(service, "page-user")
    with signed_in(service, "admin") as http:
        page = http.get("/admin/users")
        assert page.status_code == 200 and "page-user" in page.text
        assert "<script>" not in page.text.split("</head>")[1]  # CSP: no inline script
        form = page.text.split(f'action="/admin/users/{target}/deactivate"')[1].split(">")[0]
        assert 'hx-boost="true"' in form and 'hx-confirm="Deactivate page-user?' in form
        token = page_csrf(page.text)
        done = http.post(f"/admin/users/{target}/deactivate", data={"csrf_token": token})
        assert done.status_code == 303
        after = http.get(done.headers["location"])
        assert (
            "page-user is deactivated; their browser sessions and API tokens have ended."
            in after.text
        )
        role = http.post(f"/admin/users/{target}/role", data={"csrf_token": token, "role": "admin"})
        assert "page-user is now admin" in http.get(role.headers["location"]).text
        # a link cannot make the page claim what did not happen
        assert (
            "is deactivated"
            not in http.get(f"/admin/users?user={user_id(service, 'admin')}&done=deactivated").text
        )
        # a refusal says what and why, with its status
        admin = user_id(service, "admin")
        back = http.post(
            f"/admin/users/{target}/role", data={"csrf_token": token, "role": "clinician"}
        )
        assert back.status_code == 303
        refused = http.post(f"/admin/users/{admin}/deactivate", data={"csrf_token": token})
        assert refused.status_code == 409
        assert f"Could not deactivate account {admin}" in refused.text
        assert "last active admin" in refused.text
        # without the session's CSRF token: refused before anything changes
        assert http.post(f"/admin/users/{target}/activate").status_code == 403
    with service.session() as session:
        row = session.get(User, target)
        assert (row.role, row.is_active) == (Role.clinician, False)


# --- the command line ----------------------------------------------------------------------------
def test_clipmed_users_lifecycle(tmp_path):
    run = clipmed_runner(tmp_path)

    def clipmed(*args: str, stdin: str = ""):
        return run("users", *args, stdin=stdin)

    for name, role in (("ada", "admin"), ("bob", "clinician")):
        made = clipmed(
            "create",
            "--username",
            name,
            "--role",
            role,
            "--password-stdin",
            stdin="long enough pw\n",
        )
        assert made.returncode == 0, made.stderr
    assert clipmed("token", "bob").returncode == 0
    listed = clipmed("list")
    assert (
        listed.returncode == 0
        and '"username": "bob", "role": "clinician", "is_active": true' in listed.stdout
    )
    off = clipmed("deactivate", "bob")
    assert (
        off.returncode == 0
        and '"is_active": false' in off.stdout
        and '"tokens_revoked": 1' in off.stdout
    )
    assert '"changed": false' in clipmed("deactivate", "bob").stdout
    assert '"is_active": true' in clipmed("activate", "bob").stdout
    assert '"role": "radiologist"' in clipmed("set-role", "bob", "radiologist").stdout
    reset = clipmed("reset-password", "bob", "--password-stdin", stdin="another long pw\n")
    assert reset.returncode == 0, reset.stderr
    # runtime errors exit 1, usage errors 2
    last = clipmed("deactivate", "ada")
    assert last.returncode == 1 and "last active admin" in last.stderr
    assert clipmed("deactivate", "nobody").returncode == 1
    assert clipmed("set-role", "bob", "root").returncode == 2
    assert clipmed("reset-password", "bob", "--password-stdin", stdin="short\n").returncode == 2
    engine = make_engine(f"sqlite:///{tmp_path / 'clipmed.db'}")
    try:
        with make_session_factory(engine)() as session:
            query = (
                select(AuditEvent)
                .where(AuditEvent.action.startswith("user."))
                .order_by(AuditEvent.id)
            )
            trail = [(e.actor, e.action, e.outcome) for e in session.scalars(query)]
    finally:
        engine.dispose()
    assert [t[1:] for t in trail] == [
        ("user.deactivate", "success"),
        ("user.deactivate", "unchanged"),
        ("user.activate", "success"),
        ("user.set_role", "success"),
        ("user.reset_password", "success"),
        ("user.deactivate", "last_active_admin"),
        ("user.reset_password", "invalid_input"),
    ]
    assert {t[0] for t in trail} == {f"cli:{getpass.getuser()}"}


# --- two admins demoting each other at once (PostgreSQL: row locks) ------------------------------
@pytest.mark.parametrize("empty_database", ["postgresql"], indirect=True)
def test_two_admins_demoting_each_other_at_once_leave_one_admin(database):
    """Each UPDATE of a user row sleeps a second (a trigger), so the second demotion starts while
    the first is between its check and its commit. Without the row locks both checks see two
    admins and both commit: no admin is left."""
    engine = make_engine(database)
    sessions = make_session_factory(engine)
    try:
        with sessions() as session:
            a = accounts.create_user(session, "admin-a", "admin", TEST_PASSWORD).id
            b = accounts.create_user(session, "admin-b", "admin", TEST_PASSWORD).id
            session.execute(
                text(
                    "CREATE FUNCTION slow_user_update() RETURNS trigger AS "
                    "$$ BEGIN PERFORM pg_sleep(1); RETURN NEW; END $$ LANGUAGE plpgsql"
                )
            )
            session.execute(
                text(
                    "CREATE TRIGGER slow_user_update BEFORE UPDATE ON users "
                    "FOR EACH ROW EXECUTE FUNCTION slow_user_update()"
                )
            )
            session.commit()
        outcomes: dict[int, str] = {}

        def demote(target: int) -> None:
            with sessions() as session:
                try:
                    users.set_role(session, target, Role.clinician, users.Actor.command_line())
                    outcomes[target] = "demoted"
                except LastActiveAdmin:
                    outcomes[target] = "refused"

        first = threading.Thread(target=demote, args=(a,))
        second = threading.Thread(target=demote, args=(b,))
        first.start()
        time.sleep(0.3)  # the first is inside its UPDATE (sleeping) when the second starts
        second.start()
        first.join(30)
        second.join(30)
        assert sorted(outcomes.values()) == ["demoted", "refused"], outcomes
        with sessions() as session:
            admins = session.scalars(select(User.username).where(User.role == Role.admin)).all()
        assert admins == ["admin-b"]
    finally:
        engine.dispose()
