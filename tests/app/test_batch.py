"""POST /api/v1/explanations/batch end to end: many cases in one request, each answered alone."""

from __future__ import annotations

import io
import json

import httpx
import numpy as np
from sqlalchemy import select
from support.checkpoints import FEATURE_DIM
from support.servers import MAX_UPLOAD_BYTES

from app.explanations.batches import MAX_BATCH_CASES
from app.tables import AuditEvent, Explanation

URL = "/api/v1/explanations/batch"
RNG = np.random.default_rng(7)


def case(slices: int = 4, dim: int = FEATURE_DIM) -> np.ndarray:
    return RNG.normal(size=(slices, dim)).astype(np.float32)


def post_cases(client: httpx.Client, cases: list, k: int = 3) -> httpx.Response:
    body = json.dumps({"cases": cases, "k": k}).encode()  # NaN written as JavaScript does
    return client.post(URL, content=body, headers={"content-type": "application/json"})


def post_npz(client: httpx.Client, members: dict[str, np.ndarray], k: str = "3") -> httpx.Response:
    buffer = io.BytesIO()
    np.savez(buffer, **members)
    files = {"file": ("cases.npz", buffer.getvalue(), "application/octet-stream")}
    return client.post(URL, files=files, data={"k": k})


def test_json_cases_are_each_explained_stored_and_audited(service, client):
    good = [case(3), case(6)]
    bad = np.full((2, FEATURE_DIM), np.nan).tolist()
    response = post_cases(
        client,
        [
            {"name": "a", "features": good[0].tolist()},
            {"features": bad},
            {"name": "c", "features": good[1].tolist()},
            {"name": "d", "features": [[1.0, 2.0]]},
        ],
    )
    assert response.status_code == 200, response.text
    answers = response.json()
    assert [a["index"] for a in answers] == [0, 1, 2, 3]
    assert [a["name"] for a in answers] == ["a", None, "c", "d"]
    assert answers[1]["status"] == 422 and "finite" in answers[1]["detail"]
    assert (
        answers[3]["status"] == 422 and f"expected {FEATURE_DIM} features" in answers[3]["detail"]
    )
    for answer, features in zip((answers[0], answers[2]), good, strict=True):
        assert answer["explanation"]["k"] == 3
        assert answer["explanation"]["slices"]["received"] == len(features)
        # The same as the single endpoint stores: the stored record reads back the same.
        single = client.get(f"/api/v1/explanations/{answer['id']}").json()
        assert single["explanation"]["texts"] == answer["explanation"]["texts"]
        assert single["n_slices"] == len(features) and single["input_kind"] == "features"
    ids = [answers[0]["id"], answers[2]["id"]]
    with service.session() as session:
        rows = session.scalars(select(Explanation).where(Explanation.id.in_(ids))).all()
        events = session.scalars(
            select(AuditEvent).where(
                AuditEvent.action == "explanation.create", AuditEvent.target_id.in_(ids)
            )
        ).all()
    assert len(rows) == 2 and sorted(e.target_id for e in events) == sorted(ids)


def test_a_batch_answers_as_single_requests_do(client):
    features = case(5)
    batch = post_cases(client, [{"features": features.tolist()}], k=4).json()[0]
    single = client.post(
        "/api/v1/explanations",
        content=json.dumps({"features": features.tolist(), "k": 4}).encode(),
        headers={"content-type": "application/json"},
    ).json()
    assert batch["explanation"]["texts"] == single["explanation"]["texts"]
    assert batch["explanation"]["fields"] == single["explanation"]["fields"]


def test_a_case_far_outside_the_training_ranges_is_refused_as_a_single_one_is(client):
    far = case(3)
    far[1, 4] = 1e5  # finite, under the absolute limit, far beyond every training value
    single = client.post(
        "/api/v1/explanations",
        content=json.dumps({"features": far.tolist()}).encode(),
        headers={"content-type": "application/json"},
    )
    assert single.status_code == 422 and "far outside" in single.json()["detail"]
    answers = post_cases(client, [{"features": case(2).tolist()}, {"features": far.tolist()}])
    assert answers.status_code == 200, answers.text
    first, second = answers.json()
    assert "id" in first
    assert second["status"] == 422 and second["detail"] == single.json()["detail"]
    npz = post_npz(client, {"ok": case(2), "far": far}).json()
    assert "id" in npz[0] and npz[1]["detail"] == single.json()["detail"]


def test_npz_members_are_the_cases_named_by_member(client):
    response = post_npz(client, {"n1": case(2), "n2": case(3, FEATURE_DIM + 1), "n3": case(4)})
    assert response.status_code == 200, response.text
    answers = response.json()
    assert [a["name"] for a in answers] == ["n1", "n2", "n3"]
    assert "id" in answers[0] and "id" in answers[2]
    assert answers[1]["status"] == 422


def test_malformed_or_oversized_batches_are_refused_whole(client):
    too_many = [{"features": [[0.0] * FEATURE_DIM]}] * (MAX_BATCH_CASES + 1)
    assert post_cases(client, too_many).status_code == 413
    assert post_cases(client, []).status_code == 422
    assert post_cases(client, [{"features": case(2).tolist()}], k=0).status_code == 422
    not_json = client.post(URL, content=b"{", headers={"content-type": "application/json"})
    assert not_json.status_code == 422
    assert post_npz(client, {"a": case(2)}, k="x").status_code == 422
    members = {f"m{i}": case(1) for i in range(MAX_BATCH_CASES + 1)}
    assert post_npz(client, members).status_code == 413
    over = [{"features": case(200).tolist()} for _ in range(8)]
    assert len(json.dumps({"cases": over})) > MAX_UPLOAD_BYTES
    assert post_cases(client, over).status_code == 413
    text = client.post(URL, content=b"x", headers={"content-type": "text/plain"})
    assert text.status_code == 415


def test_the_batch_endpoint_is_documented(client):
    spec = client.get("/openapi.json").json()
    body = spec["paths"][URL]["post"]["requestBody"]["content"]
    assert {"application/json", "multipart/form-data"} <= set(body)
    assert body["application/json"]["examples"]["features"]["value"]["cases"]
