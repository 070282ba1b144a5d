"""The API's conventions, as a client generator and an integrator see them: RFC 9457 problem
details for every error, operationIds to name methods by, the two security schemes, examples."""

from __future__ import annotations

import re

import httpx
import pytest
from support.http import bearer

on_sqlite = pytest.mark.parametrize("service", ["sqlite"], indirect=True)
MISSING = "00000000-0000-0000-0000-000000000000"
PROBLEM_KEYS = {"type", "title", "status", "detail", "instance", "code"}


@pytest.fixture(scope="module")
def document(service) -> dict:
    return httpx.get(f"{service.url}/openapi.json", headers=bearer(service.tokens["admin"])).json()


@on_sqlite
@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [
        (
            "GET",
            "/api/v1/explanations/00000000-0000-0000-0000-000000000000",
            None,
            404,
            "not_found",
        ),
        ("POST", "/api/v1/explanations", {"features": [[1.0]]}, 422, "invalid_input"),
        ("POST", "/api/v1/users/0/role", {"role": "root"}, 422, "invalid_input"),
        ("GET", "/api/v1/no-such-thing", None, 404, "not_found"),
        ("DELETE", "/api/v1/tokens", None, 405, "method_not_allowed"),
    ],
)
def test_errors_are_problem_details(client, method, path, body, status, code):
    answer = client.request(method, path, json=body)
    assert answer.status_code == status
    assert answer.headers["content-type"] == "application/problem+json"
    problem = answer.json()
    assert set(problem) == PROBLEM_KEYS
    assert problem["status"] == status and problem["code"] == code
    assert problem["type"] == f"urn:clipmedical:problem:{code}"
    assert problem["instance"] == path and problem["title"] and problem["detail"]


@on_sqlite
def test_a_missing_login_is_a_problem_with_its_challenge(service):
    answer = httpx.get(f"{service.url}/api/v1/models")
    assert answer.status_code == 401 and answer.headers["www-authenticate"] == "Bearer"
    assert answer.json()["title"] == "Not authenticated"
    assert answer.headers["content-type"] == "application/problem+json"


@on_sqlite
def test_operation_ids_name_what_each_operation_does(document):
    ids = [op["operationId"] for path in document["paths"].values() for op in path.values()]
    assert len(ids) == len(set(ids))
    assert all(re.fullmatch(r"[a-z]+(?:[A-Z][a-z]+)*", i) for i in ids), ids
    explanations = document["paths"]["/api/v1/explanations"]
    assert explanations["post"]["operationId"] == "createExplanation"
    assert explanations["get"]["operationId"] == "listExplanations"
    assert document["paths"]["/api/v1/users/{user_id}/role"]["post"]["operationId"] == (
        "setUserRole"
    )


@on_sqlite
def test_security_schemes_are_declared_and_listed_on_gated_operations(document):
    schemes = document["components"]["securitySchemes"]
    assert schemes["bearerToken"] == schemes["bearerToken"] | {"type": "http", "scheme": "bearer"}
    assert schemes["sessionCookie"] | {"description": ""} == {
        "type": "apiKey",
        "in": "cookie",
        "name": "clipmed_session",
        "description": "",
    }
    for path, methods in document["paths"].items():
        for operation in methods.values():
            expected = (
                None
                if path in ("/healthz", "/readyz")
                else [
                    {"bearerToken": []},
                    {"sessionCookie": []},
                ]
            )
            assert operation.get("security") == expected, path


@on_sqlite
def test_bodies_have_examples(document):
    schemas = document["components"]["schemas"]
    for name in ("Problem", "UserOut", "RoleChange", "PasswordReset"):
        assert schemas[name].get("examples"), name
    upload = document["paths"]["/api/v1/explanations"]["post"]["requestBody"]["content"]
    assert upload["application/json"]["examples"]
