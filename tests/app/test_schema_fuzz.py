"""Schemathesis against the OpenAPI document the server serves: every operation, as anonymous and
as each role, on a real server, on SQLite and on PostgreSQL (each refuses different values).

Each operation gets at least EXAMPLES generated requests per caller. Every answer must be free of
5xx and match the document: a documented status code, content type, headers and body. A caller the
route does not admit gets 401 (anonymous) or 403 (a role), never anything else. Random inputs rarely
make a valid case, so valid requests (and generated feature files) check the 2xx answers as well.
"""

from __future__ import annotations

import io
import itertools
from dataclasses import dataclass

import httpx
import numpy as np
import pytest
import schemathesis
from fastapi.routing import APIRoute, iter_route_contexts
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from hypothesis.extra import numpy as hnp
from schemathesis import checks
from schemathesis.core.failures import FailureGroup
from schemathesis.core.transport import Response
from schemathesis.generation import GenerationMode
from schemathesis.generation.case import Case
from schemathesis.schemas import APIOperation
from sqlalchemy import select
from support.checkpoints import FEATURE_DIM
from support.http import add_user, bearer

from app import accounts
from app.tables import ApiToken, User

# What only concerns the document, not the database, runs once.
on_sqlite = pytest.mark.parametrize("service", ["sqlite"], indirect=True)

EXAMPLES = 100  # generated requests per operation and caller
CALLERS = (None, "clinician", "radiologist", "admin")  # None: anonymous
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
]
# Reproducible (derandomized), no example database in the work tree, and no shrinking: a failure
# is reported as found, so a failing run stays as bounded as a passing one.
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    # about the cost of generating, which a fixed sample of requests does not care about
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)
Operations = dict[tuple[str, str], APIOperation]  # (METHOD, path template) -> operation
EXPLAIN = ("POST", "/api/v1/explanations")


@pytest.fixture(scope="module")
def document(service) -> dict:
    """The OpenAPI document as the server serves it (to signed-in users only)."""
    served = httpx.get(f"{service.url}/openapi.json", headers=bearer(service.tokens["admin"]))
    assert served.status_code == 200, served.text
    return served.json()


@pytest.fixture(scope="module")
def operations(document) -> Operations:
    schema = schemathesis.openapi.from_dict(document)
    # .ok() raises on an operation the document does not define properly
    found = [result.ok() for result in schema.get_all_operations()]
    return {(op.method.upper(), op.path): op for op in found}


@on_sqlite
def test_every_error_is_documented_as_the_body_the_app_sends(document):
    """app.problems answers every error, a request that fails validation included, with a
    Problem (application/problem+json), not with FastAPI's HTTPValidationError, which a route
    gets in the document unless it lists its own 422."""
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            for status, response in operation["responses"].items():
                if status.startswith("4"):
                    where = f"{method.upper()} {path} {status}"
                    assert set(response.get("content", {})) == {"application/problem+json"}, where
                    schema = response["content"]["application/problem+json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Problem"}, where


def _role_gates(app) -> dict[tuple[str, str], frozenset[str] | None]:
    """(METHOD, path) -> the roles its `require(...)` gate admits; None for a public route."""
    gates = {}
    for route in iter_route_contexts(app.routes):
        if not isinstance(route.original_route, APIRoute) or not route.include_in_schema:
            continue
        pending, roles = [route.dependant], None
        while pending:
            dependant = pending.pop()
            allowed = getattr(dependant.call, "allowed_roles", None)
            if allowed is not None:
                roles = frozenset(role.value for role in allowed)
            pending.extend(dependant.dependencies)
        for method in route.methods:
            gates[(method, route.path)] = roles
    return gates


@dataclass
class Caller:
    """Sends cases as one caller, runs the checks, and holds the role gate to the answers."""

    role: str | None  # None: anonymous
    token: str | None
    base_url: str
    gates: dict[tuple[str, str], frozenset[str] | None]
    operations: Operations

    @property
    def name(self) -> str:
        return self.role or "anonymous"

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.token) if self.token else {}

    def admitted(self, operation: APIOperation) -> bool:
        roles = self.gates[(operation.method.upper(), operation.path)]
        return roles is None or self.role in roles

    def send(self, case: Case) -> Response:
        response = case.call(base_url=self.base_url, headers=self.headers)
        self.check(case, response)
        return response

    def upload(self, filename: str, data: bytes, k: str) -> httpx.Response:
        """A features file, named as the server needs (schemathesis names parts after fields)."""
        response = httpx.post(
            self.base_url + EXPLAIN[1],
            headers=self.headers,
            files={"file": (filename, data, "application/octet-stream")},
            data={"k": k},
            timeout=30,
        )
        response.request.read()  # schemathesis reads the request it validates against
        body = {"file": data, "k": k}
        self.check(
            self.operations[EXPLAIN].Case(body=body, media_type="multipart/form-data"), response
        )
        return response

    def check(self, case: Case, response: Response | httpx.Response) -> None:
        sent = {"base_url": self.base_url, "headers": self.headers}
        case.validate_response(response, checks=CHECKS, headers=self.headers, transport_kwargs=sent)
        if not self.admitted(case.operation):
            expected = 403 if self.role else 401
            assert response.status_code == expected, (
                f"{case.operation.label} as {self.name}: {response.status_code}, not {expected}"
            )


@pytest.fixture(scope="module")
def callers(service, operations) -> dict[str | None, Caller]:
    gates = _role_gates(service.app)
    assert set(gates) == set(operations), "the document and the routes disagree"
    tokens = {role: service.tokens[role] if role else None for role in CALLERS}
    return {role: Caller(role, tokens[role], service.url, gates, operations) for role in CALLERS}


@pytest.fixture(scope="module")
def own_token_ids(service) -> frozenset[int]:
    """The ids of the callers' tokens: the fuzz must not revoke them mid-run (401 from then on)."""
    digests = [accounts.sha256(token) for token in service.tokens.values()]
    with service.session() as session:
        ids = session.scalars(select(ApiToken.id).where(ApiToken.token_sha256.in_(digests)))
        return frozenset(ids)


@pytest.fixture(scope="module")
def own_user_ids(service) -> frozenset[int]:
    """The callers' accounts: the fuzz must not deactivate, demote or re-password them."""
    with service.session() as session:
        names = list(service.tokens)
        return frozenset(session.scalars(select(User.id).where(User.username.in_(names))))


@pytest.fixture(scope="module")
def generated(operations, own_token_ids, own_user_ids):
    """`generated(operation, mode)`: EXAMPLES cases (fewer where the inputs run out), made once
    and sent as every caller. None where the mode has no case to make (nothing to get wrong)."""
    made: dict[tuple[str, GenerationMode], list[Case] | None] = {}

    def generate(operation: APIOperation, mode: GenerationMode) -> list[Case] | None:
        if (operation.label, mode) in made:
            return made[(operation.label, mode)]
        strategy = operation.as_strategy(generation_mode=mode)
        if operation.path == "/api/v1/tokens/{token_id}/revoke":
            strategy = strategy.filter(
                lambda case: case.path_parameters["token_id"] not in own_token_ids
            )
        if operation.path.startswith("/api/v1/users/{user_id}"):
            strategy = strategy.filter(
                lambda case: case.path_parameters.get("user_id") not in own_user_ids
            )
        cases: list[Case] = []

        @FUZZ_SETTINGS
        @given(case=strategy)
        def collect(case: Case) -> None:
            cases.append(case)

        try:
            collect()
        except Unsatisfiable:
            assert mode is GenerationMode.NEGATIVE and not cases, operation.label
        made[(operation.label, mode)] = cases or None
        return cases or None

    return generate


def _fuzz(caller: Caller, cases: list[Case]) -> list[str]:
    """Sends the cases (again from the first, up to EXAMPLES, when there are fewer: they must
    still get documented answers, and a POST may change state each time); the failures."""
    failures = []
    for case in itertools.islice(itertools.cycle(cases), max(EXAMPLES, len(cases))):
        try:
            caller.send(case)
        except (AssertionError, FailureGroup) as e:
            failures.append(str(e))
    return failures


def _report(failures: list[str], sent: int) -> str:
    distinct = list(dict.fromkeys(failures))
    return f"{len(failures)} of {sent} requests failed; the first:\n\n" + "\n\n".join(distinct[:3])


@pytest.mark.parametrize("role", CALLERS, ids=lambda role: role or "anonymous")
def test_generated_requests_get_documented_answers(operations, callers, generated, role, subtests):
    for operation in operations.values():
        with subtests.test(operation.label):
            cases = generated(operation, GenerationMode.POSITIVE)
            assert cases, operation.label
            failures = _fuzz(callers[role], cases)
            assert not failures, _report(failures, max(EXAMPLES, len(cases)))


def test_invalid_requests_get_documented_answers(operations, callers, generated, subtests):
    """Inputs the document rules out (wrong types, out of range, missing), sent by an admin: the
    one caller every gate admits, so each reaches the validation."""
    for operation in operations.values():
        with subtests.test(operation.label):
            cases = generated(operation, GenerationMode.NEGATIVE)
            if cases is None:
                pytest.skip("no input of this operation can be invalid")
            failures = _fuzz(callers["admin"], cases)
            assert not failures, _report(failures, max(EXAMPLES, len(cases)))


# --- feature files: what the document cannot describe ----------------------------------------
def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _npz(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, features=array)
    return buffer.getvalue()


def _csv(array: np.ndarray) -> bytes:
    rows = array.reshape(len(array), -1) if array.ndim and array.size else array.reshape(-1, 1)
    buffer = io.StringIO()
    np.savetxt(buffer, rows, fmt="%s", delimiter=",", header=",", comments="")
    return buffer.getvalue().encode()


ENCODE = {"npy": _npy, "npz": _npz, "csv": _csv}
DTYPES = st.sampled_from(["<f4", "<f8", ">f8", "<f2", "<i8", "|u1", "|b1", "<c8", "<U4", "<M8[s]"])
SHAPES = st.one_of(
    st.tuples(st.integers(0, 40), st.sampled_from([FEATURE_DIM, FEATURE_DIM - 1, 1, 0])),
    hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=6),
)


@st.composite
def feature_files(draw) -> tuple[str, bytes, str]:
    """(filename, content, k): real arrays of odd and right shapes and types, or random bytes."""
    kind = draw(st.sampled_from(sorted(ENCODE)))
    if draw(st.integers(0, 4)) == 0:
        content = draw(st.binary(max_size=512))
    else:
        # any values, or a case of a feature's magnitude: the explainer refuses values far
        # outside its training range (model.feature_range), so mostly these explain
        plausible = hnp.arrays(
            "<f4",
            st.tuples(st.integers(1, 40), st.just(FEATURE_DIM)),
            elements=st.floats(-5, 5, width=32),
        )
        content = ENCODE[kind](draw(st.one_of(hnp.arrays(DTYPES, SHAPES), plausible)))
    k = draw(st.one_of(st.integers(-2, 60).map(str), st.text(max_size=4)))
    return f"case.{kind}", content, k


@pytest.mark.parametrize("role", ["clinician"])
def test_generated_feature_files_get_documented_answers(callers, role):
    caller, statuses = callers[role], []

    @FUZZ_SETTINGS
    @given(upload=feature_files())
    def run(upload: tuple[str, bytes, str]) -> None:
        statuses.append(caller.upload(*upload).status_code)

    run()
    assert len(statuses) >= EXAMPLES
    assert 201 in statuses and set(statuses) <= {201, 413, 415, 422}, sorted(set(statuses))


# --- valid requests: the 2xx answers -----------------------------------------------------------
@pytest.mark.parametrize("role", CALLERS, ids=lambda role: role or "anonymous")
def test_valid_requests_get_documented_answers(operations, callers, service, role):
    caller = callers[role]
    answered: set[tuple[str, str]] = set()

    def send(method: str, path: str, expected: int, **data) -> Response | None:
        """The answer when the caller is admitted (and `expected`), else None (gate checked)."""
        operation = operations[(method, path)]
        answered.add((method, path))
        response = caller.send(operation.Case(**data))
        if not caller.admitted(operation):
            return None
        assert response.status_code == expected, response.text
        return response

    features = np.random.default_rng(0).normal(size=(4, FEATURE_DIM)).round(4)
    send("GET", "/healthz", 200)
    send("GET", "/readyz", 200)
    explanations = "/api/v1/explanations"
    send("GET", explanations, 200, query={"limit": 5})
    body = {"features": features.tolist(), "k": 3}
    made = send("POST", explanations, 201, body=body, media_type="application/json")
    uploaded = caller.upload("case.npy", _npy(features), "2")
    assert uploaded.status_code == (201 if role else 401), uploaded.text
    explanation = made.json() if made else {"id": "x", "explanation": {"fields": [{"field": "x"}]}}
    by_id = {"explanation_id": explanation["id"]}
    send("GET", f"{explanations}/{{explanation_id}}", 200, path_parameters=by_id)
    send("GET", f"{explanations}/{{explanation_id}}/fhir", 200, path_parameters=by_id)
    # made from features, not a DICOM SEG: the SR it would cite does not exist (documented 404)
    send("GET", f"{explanations}/{{explanation_id}}/sr", 404, path_parameters=by_id)
    batch = {"cases": [{"features": features.tolist()}, {"features": features.tolist()}], "k": 3}
    send("POST", f"{explanations}/batch", 200, body=batch, media_type="application/json")
    send("GET", explanations, 200, query={"patient_pseudonym": "P-1", "study_instance_uid": "1.2"})

    field = explanation["explanation"]["fields"][0]["field"]
    served = explanation["explanation"]["fields"][0].get("vote", {}).get("value")  # a valid code
    flag = {"field": field, "reason": "wrong_value", "corrected_value": served, "comment": "fuzz"}
    path = f"{explanations}/{{explanation_id}}/flags"
    flagged = send("POST", path, 201, path_parameters=by_id, body=flag)
    flag_id = {"flag_id": flagged.json()["id"] if flagged else 1}
    if flagged:  # nobody decides their own flag: another reviewer raises the one decided here
        other = "admin" if role == "radiologist" else "radiologist"
        with httpx.Client(base_url=service.url, headers=bearer(service.tokens[other])) as http:
            raised = http.post(f"{explanations}/{explanation['id']}/flags", json=flag)
        flag_id = {"flag_id": raised.json()["id"]}
    review = {"decision": "accept", "note": "checked"}
    send("POST", "/api/v1/flags/{flag_id}/review", 200, path_parameters=flag_id, body=review)
    send("GET", "/api/v1/flags", 200, query={"status": "accepted", "field": field})
    for format in ("json", "csv"):
        send("GET", "/api/v1/corrections", 200, query={"format": format})

    send("GET", "/api/v1/models", 200)
    send("GET", "/api/v1/models/history", 200)
    second, _ = service.checkpoints.second_version
    first, _ = service.checkpoints.first_version
    for version in (second, first):  # a switch, then back
        path = "/api/v1/models/{version}/activate"
        send("POST", path, 200, path_parameters={"version": version})

    jobs = "/api/v1/admin/jobs"
    queued = send("POST", jobs, 202, body={"kind": "reindex", "include_corrections": False})
    job_id = {"job_id": queued.json()["id"] if queued else 1}
    send("GET", jobs, 200, query={"status": "queued"})
    send("GET", f"{jobs}/{{job_id}}", 200, path_parameters=job_id)
    send("POST", f"{jobs}/{{job_id}}/cancel", 200, path_parameters=job_id)
    send("POST", f"{jobs}/{{job_id}}/cancel", 409, path_parameters=job_id)  # it has ended

    send("GET", "/api/v1/tokens", 200)
    issued = send("POST", "/api/v1/tokens", 201)
    token_id = {"token_id": issued.json()["id"] if issued else 1}
    send("POST", "/api/v1/tokens/{token_id}/revoke", 200, path_parameters=token_id)

    # an account of this run's own (never a caller's), through its whole life
    send("GET", "/api/v1/users", 200)
    username = f"fuzzed-{role or 'anonymous'}"
    add_user(service.app.state.sessions, username, "clinician")
    with service.session() as session:
        other = {"user_id": session.scalar(select(User.id).where(User.username == username))}
    users = "/api/v1/users/{user_id}"
    send("POST", f"{users}/deactivate", 200, path_parameters=other)
    send("POST", f"{users}/activate", 200, path_parameters=other)
    send("POST", f"{users}/role", 200, path_parameters=other, body={"role": "radiologist"})
    password = {"password": "a fuzzed new password"}
    send("POST", f"{users}/password", 200, path_parameters=other, body=password)

    assert answered | {EXPLAIN} == set(operations), "an operation without a valid request here"


# --- what only PostgreSQL refuses --------------------------------------------------------------
NUL = "a\x00b"


@pytest.mark.parametrize(
    ("method", "path", "request_data"),
    [
        (
            "GET",
            "/api/v1/explanations/{explanation_id}",
            {"path_parameters": {"explanation_id": NUL}},
        ),
        ("GET", "/api/v1/flags", {"query": {"field": NUL}}),
        ("GET", "/api/v1/flags", {"query": {"model_version": NUL}}),
        ("POST", "/api/v1/models/{version}/activate", {"path_parameters": {"version": NUL}}),
        (
            "POST",
            "/api/v1/explanations/{explanation_id}/flags",
            {"path_parameters": {"explanation_id": NUL}, "body": {"reason": "other"}},
        ),
        (
            "POST",
            "/api/v1/explanations/{explanation_id}/flags",
            {
                "path_parameters": {"explanation_id": "x"},
                "body": {"reason": "other", "comment": NUL},
            },
        ),
        (
            "POST",
            "/api/v1/flags/{flag_id}/review",
            {"path_parameters": {"flag_id": 1}, "body": {"decision": "reject", "note": NUL}},
        ),
    ],
)
def test_text_with_a_nul_character_is_invalid_input(
    operations, callers, method, path, request_data
):
    """PostgreSQL cannot store or compare a NUL character: refused up front, on either database
    (random strings seldom hold one, so the fuzz alone would not keep this fixed)."""
    response = callers["admin"].send(operations[(method, path)].Case(**request_data))
    assert response.status_code == 422, response.text
    assert "NUL" in response.json()["detail"]
