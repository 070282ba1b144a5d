"""The JSON API end to end: a real uvicorn server on localhost, a real HTTP client."""

from __future__ import annotations

import io
import json
import socket
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
from sqlalchemy import func, select
from support.checkpoints import FEATURE_DIM
from support.http import add_user, bearer, post_json
from support.inputs import case
from support.servers import MAX_UPLOAD_BYTES

from app import registry
from app.tables import Explanation


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def npz(array: np.ndarray, name: str = "features") -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **{name: array})
    return buffer.getvalue()


def csv(array: np.ndarray, names: list[str] | None = None) -> bytes:
    """A .csv with a header row: the test models' feature names (the simulated cohort's),
    unless `names` are given; `names=[]` writes no header."""
    if names is None:
        names = [f"sim_{j:04d}" for j in range(array.shape[1])]
    rows = [",".join(repr(float(v)) for v in row) for row in array]
    return ("\n".join([",".join(names), *rows] if names else rows) + "\n").encode()


def post_file(client: httpx.Client, filename: str, data: bytes, k: int | str = 5) -> httpx.Response:
    return client.post(
        "/api/v1/explanations",
        files={"file": (filename, data, "application/octet-stream")},
        data={"k": str(k)},
    )


def stored_count(service) -> int:
    with service.session() as session:
        return session.scalar(select(func.count()).select_from(Explanation))


# -- explaining -------------------------------------------------------------------------------
@pytest.mark.parametrize("form", ["npy", "npz", "csv", "json"])
def test_each_input_form_is_explained_and_stored(client, service, form):
    features = case()
    if form == "json":
        response = post_json(client, features.tolist(), k=4)
    else:
        encode = {"npy": npy, "npz": npz, "csv": csv}[form]
        response = post_file(client, f"case.{form}", encode(features), k=4)
    assert response.status_code == 201, response.text
    body = response.json()
    model_version, catalog_version = service.checkpoints.first_version
    assert (body["model_version"], body["catalog_version"]) == (model_version, catalog_version)
    explanation = body["explanation"]
    assert (explanation["model_version"], explanation["catalog_version"]) == (
        model_version,
        catalog_version,
    )
    texts = explanation["texts"]
    assert [t["rank"] for t in texts] == list(range(1, len(texts) + 1)) and 1 <= len(texts) <= 4
    similarities = [t["similarity"] for t in texts]
    assert similarities == sorted(similarities, reverse=True)
    assert len({t["text"] for t in texts}) == len(texts)
    assert body["n_slices"] == 5 and body["k"] == 4 and explanation["simulated"] is True

    again = client.get(f"/api/v1/explanations/{body['id']}")
    assert again.status_code == 200
    assert again.json() == body
    with service.session() as session:
        row = session.get(Explanation, body["id"])
        stored = np.load(io.BytesIO(row.features_npy), allow_pickle=False)
    np.testing.assert_allclose(stored, features, rtol=1e-6)


def test_the_same_case_in_any_form_has_the_same_input_hash(client):
    features = case(3)
    hashes = {
        post_file(client, "a.npy", npy(features)).json()["input_sha256"],
        post_file(client, "a.csv", csv(features)).json()["input_sha256"],
        post_json(client, features.tolist()).json()["input_sha256"],
    }
    assert len(hashes) == 1


def test_a_csv_header_must_name_the_models_features(client):
    features = case(3)
    assert post_file(client, "plain.csv", csv(features, names=[])).status_code == 201
    renamed = [f"sim_{j:04d}" for j in range(FEATURE_DIM)]
    renamed[2], renamed[5] = "diameter_mm", "sim_0004"
    refused = post_file(client, "named.csv", csv(features, renamed))
    assert refused.status_code == 422
    detail = refused.json()["detail"]
    assert "the .csv header does not name the model's features" in detail
    assert "column 3 is 'diameter_mm', the model's feature 3 is 'sim_0002'" in detail
    assert "column 6 is 'sim_0004', the model's feature 6 is 'sim_0005'" in detail
    short = post_file(client, "short.csv", csv(features[:, :-1], renamed[:-1]))
    assert short.status_code == 422
    assert f"the header has {FEATURE_DIM - 1} columns" in short.json()["detail"]


def test_more_slices_than_the_model_takes_are_subsampled(client):
    response = post_file(client, "long.npy", npy(case(20)))
    assert response.status_code == 201, response.text
    slices = response.json()["explanation"]["slices"]
    assert slices == {"received": 20, "used": 12, "subsampled": True}


def test_recent_explanations_and_models(client, service):
    made = post_json(client, case(2).tolist()).json()
    recent = client.get("/api/v1/explanations", params={"limit": 3})
    assert recent.status_code == 200
    assert len(recent.json()) <= 3 and recent.json()[0]["id"] == made["id"]
    assert client.get("/api/v1/explanations", params={"limit": 0}).status_code == 422

    models = client.get("/api/v1/models").json()
    versions = {m["version"]: m for m in models}
    first, second = service.checkpoints.first_version, service.checkpoints.second_version
    assert set(versions) == {first[0], second[0]}
    assert versions[first[0]]["is_active"] and not versions[second[0]]["is_active"]
    assert versions[first[0]]["catalog_version"] == first[1]
    assert versions[first[0]]["feature_dim"] == FEATURE_DIM


# -- refusals ---------------------------------------------------------------------------------
def nan_rows() -> list[list[float]]:
    rows = case(3).tolist()
    rows[1][2] = float("nan")
    return rows


BAD_INPUTS = {
    "wrong dimension (.npy)": (
        lambda c: post_file(c, "x.npy", npy(case(4, dim=7))),
        f"expected {FEATURE_DIM} features per slice, got 7",
    ),
    "wrong dimension (json)": (
        lambda c: post_json(c, case(2, dim=9).tolist()),
        f"expected {FEATURE_DIM} features per slice, got 9",
    ),
    "NaN (json)": (lambda c: post_json(c, nan_rows()), "NaN or infinite values in slice(s) 1"),
    "infinite (.csv)": (
        lambda c: post_file(
            c, "x.csv", csv(np.array([[1.0] * FEATURE_DIM, [np.inf] * FEATURE_DIM]))
        ),
        "finite",
    ),
    "zero slices (.npy)": (lambda c: post_file(c, "x.npy", npy(case(0))), "no slices"),
    "zero slices (json)": (lambda c: post_json(c, []), "no slices"),
    "ragged rows (json)": (
        lambda c: post_json(c, [[0.0] * FEATURE_DIM, [0.0] * 3]),
        "same number of features",
    ),
    "text in a .csv": (
        lambda c: post_file(c, "x.csv", b"1,2,abc\n"),
        "column 3: 'abc' is not a number",
    ),
    ".npz without features": (
        lambda c: post_file(c, "x.npz", npz(case(), name="other")),
        "no 'features'",
    ),
    "not a .npy": (lambda c: post_file(c, "x.npy", b"hello"), "not a valid .npy file"),
    "k out of range": (lambda c: post_file(c, "x.npy", npy(case()), k=0), "k must be between"),
    "k not a number": (lambda c: post_file(c, "x.npy", npy(case()), k="five"), "k must be"),
    "no file field": (
        lambda c: c.post("/api/v1/explanations", files={"other": ("x.npy", b"")}),
        "field 'file'",
    ),
    "features not numbers (json)": (
        lambda c: post_json(c, [["a"] * FEATURE_DIM]),
        "features.0.0",
    ),
    "not JSON": (
        lambda c: c.post(
            "/api/v1/explanations", content=b"{", headers={"content-type": "application/json"}
        ),
        "not valid JSON",
    ),
}


@pytest.mark.parametrize("name", BAD_INPUTS)
def test_bad_input_is_a_422_naming_the_problem(client, service, name):
    send, message = BAD_INPUTS[name]
    before = stored_count(service)
    response = send(client)
    assert response.status_code == 422, response.text
    assert message in response.json()["detail"]
    assert response.json()["code"] == "invalid_input"
    assert stored_count(service) == before


class WritesAFile:
    """Unpickling this creates a file: proof that nothing was unpickled if the file is absent."""

    def __init__(self, path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_an_object_array_is_refused_without_being_unpickled(client, service, tmp_path):
    marker = tmp_path / "unpickled"
    payload = np.array([WritesAFile(marker)], dtype=object)
    buffer = io.BytesIO()
    np.save(buffer, payload, allow_pickle=True)
    before = stored_count(service)
    for filename, data in (("evil.npy", buffer.getvalue()), ("evil.npz", npz(payload))):
        response = post_file(client, filename, data)
        assert response.status_code == 422, response.text
        assert "Python objects" in response.json()["detail"]
    assert not marker.exists()
    assert stored_count(service) == before


def test_unsupported_types_are_415(client):
    response = post_file(client, "case.txt", b"1,2,3")
    assert response.status_code == 415
    assert "'.txt'" in response.json()["detail"]
    pickled = post_file(client, "case.pkl", b"\x80\x04.")
    assert pickled.status_code == 415
    plain = client.post(
        "/api/v1/explanations", content=b"1,2", headers={"content-type": "text/plain"}
    )
    assert plain.status_code == 415
    assert "'text/plain'" in plain.json()["detail"]


def test_a_body_over_the_limit_is_413(client, service):
    big = npy(np.zeros((MAX_UPLOAD_BYTES // (4 * FEATURE_DIM) + 64, FEATURE_DIM), np.float32))
    declared = post_file(client, "big.npy", big)  # refused from Content-Length
    assert declared.status_code == 413
    assert f"limit of {MAX_UPLOAD_BYTES} bytes" in declared.json()["detail"]

    def chunks():  # no Content-Length: refused while reading
        for _ in range(MAX_UPLOAD_BYTES // 4096 + 16):
            yield b" " * 4096

    streamed = client.post(
        "/api/v1/explanations", content=chunks(), headers={"content-type": "application/json"}
    )
    assert streamed.status_code == 413
    assert "over the limit" in streamed.json()["detail"]


def test_a_declared_size_over_the_limit_is_refused_before_the_body_is_sent(service):
    address = urlsplit(service.url)
    with socket.create_connection((address.hostname, address.port), timeout=10) as sock:
        sock.sendall(
            b"POST /api/v1/explanations HTTP/1.1\r\nHost: test\r\n"
            + f"Authorization: Bearer {service.tokens['admin']}\r\n".encode()
            + b"Content-Type: application/json\r\nContent-Length: 1000000000\r\n\r\n"
        )
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 413")
    assert b"over the limit" in reply


def test_an_unknown_id_is_404(client):
    response = client.get("/api/v1/explanations/00000000-0000-0000-0000-000000000000")
    assert response.status_code == 404
    assert "no explanation with id" in response.json()["detail"]


# -- health and versions ----------------------------------------------------------------------
def test_health_and_readiness_with_a_model(client, service):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["model_version"] == service.checkpoints.first_version[0]


def test_not_ready_without_an_active_model(database, make_server, small_checkpoints):
    app, url = make_server(database)
    headers = bearer(add_user(app.state.sessions, "admin", "admin"))
    with httpx.Client(base_url=url, timeout=30, headers=headers) as client:
        assert client.get("/healthz").status_code == 200
        response = client.get("/readyz")
        assert response.status_code == 503
        assert "no model is loaded" in response.json()["problems"]
        refused = post_json(client, case().tolist())
        assert refused.status_code == 503 and refused.json()["code"] == "no_active_model"

        with app.state.sessions() as session:
            row = registry.register_checkpoint(session, small_checkpoints.second)
            registry.activate_version(session, row.version, app.state.serving)
        assert client.get("/readyz").status_code == 200
        assert post_json(client, case().tolist()).status_code == 201


def test_switching_versions_swaps_model_and_catalog_together(service):
    first, second = service.checkpoints.first_version, service.checkpoints.second_version
    features = case(4).tolist()

    def explain(_: int) -> tuple[tuple[str, str], tuple[str, str], str]:
        headers = bearer(service.tokens["admin"])
        with httpx.Client(base_url=service.url, timeout=60, headers=headers) as http:
            body = post_json(http, features).json()
        inner = body["explanation"]
        return (
            (body["model_version"], body["catalog_version"]),
            (inner["model_version"], inner["catalog_version"]),
            body["id"],
        )

    try:
        with ThreadPoolExecutor(4) as pool:
            pending = pool.map(explain, range(24))
            service.activate(second[0])
            during = list(pending)
        after = [explain(i) for i in range(3)]
    finally:
        service.activate(first[0])
    for outer, inner, _ in during + after:
        assert outer == inner and outer in (first, second)
    assert all(outer == second for outer, _, _ in after)
    with service.session() as session:
        for outer, _, explanation_id in during:
            row = session.get(Explanation, explanation_id)
            assert (row.model_version, row.catalog_version) == outer
            assert (row.result["model_version"], row.result["catalog_version"]) == outer


def test_openapi_documents_every_route(client):
    spec = client.get("/openapi.json").json()
    assert {"/healthz", "/readyz", "/api/v1/models", "/api/v1/explanations"} <= set(spec["paths"])
    assert "/api/v1/explanations/{explanation_id}" in spec["paths"]
    post = spec["paths"]["/api/v1/explanations"]["post"]
    assert {"multipart/form-data", "application/json"} <= set(post["requestBody"]["content"])
    assert {"201", "413", "415", "422"} <= set(post["responses"])
    assert json.dumps(spec)  # serialisable as served


def test_only_admins_see_where_checkpoints_lie(service, client_as):
    admin = client_as("admin").get("/api/v1/models").json()
    assert admin and all(m["path"] for m in admin)
    assert {m["path"] for m in admin} == {
        str(service.checkpoints.first),
        str(service.checkpoints.second),
    }
    for role in ("clinician", "radiologist"):
        answer = client_as(role).get("/api/v1/models")
        assert answer.status_code == 200
        assert str(service.checkpoints.first) not in answer.text, role
        models = answer.json()
        assert [{k: v for k, v in m.items() if k != "path"} for m in admin] == models, role
        assert all("path" not in m for m in models), role
