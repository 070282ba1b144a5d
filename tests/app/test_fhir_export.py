"""Identity on the list and the recent page, and the FHIR R4 export of an explanation, against
the real service (lidc_checkpoint: real LIDC features, so segmentations can be explained)."""

from __future__ import annotations

import math
import uuid

import httpx
import pytest
from fhir.resources.R4B.bundle import Bundle
from support.http import bearer

from app.explanations.fhir import FHIR_SYSTEMS
from model.datasets import builtin_schema

STUDY = "1.2.840.113619.2.55.3.604688119"
SERIES = "1.2.840.113619.2.55.3.604688119.1"


def circle(radius: float, n: int = 24) -> list[list[float]]:
    return [
        [radius * math.cos(2 * math.pi * i / n), radius * math.sin(2 * math.pi * i / n)]
        for i in range(n)
    ]


def contours(**identity) -> dict:
    """A small round nodule over three slices, with k and the given identity fields."""
    slices = [{"z_mm": 2.5 * i, "contours": [circle(r)]} for i, r in enumerate((4.0, 6.0, 4.5))]
    return {"slice_thickness_mm": 2.5, "slices": slices, "k": 5, **identity}


@pytest.fixture
def client_as(lidc_service):
    clients = []

    def make(role: str) -> httpx.Client:
        http = httpx.Client(
            base_url=lidc_service.url, timeout=60, headers=bearer(lidc_service.tokens[role])
        )
        clients.append(http)
        return http

    yield make
    for http in clients:
        http.close()


def explain(http: httpx.Client, **identity) -> dict:
    response = http.post("/api/v1/explanations", json=contours(**identity))
    assert response.status_code == 201, response.text
    return response.json()


def resources(bundle: dict, kind: str) -> list[dict]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind]


def test_fhir_bundle_validates_and_carries_the_served_values(client_as):
    api = client_as("clinician")
    pseudonym = f"P-{uuid.uuid4().hex[:8]}"
    body = explain(
        api,
        study_instance_uid=STUDY,
        series_instance_uid=SERIES,
        nodule_label="RUL 1",
        patient_pseudonym=pseudonym,
    )
    response = api.get(f"/api/v1/explanations/{body['id']}/fhir")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    bundle = response.json()
    Bundle.model_validate(bundle)  # valid FHIR (R4B, the R4-compatible release)
    assert bundle["type"] == "collection"

    explanation = body["explanation"]
    observations = resources(bundle, "Observation")
    assert len(observations) == len(explanation["fields"])
    schema = builtin_schema("lidc")
    for observation, evidence in zip(observations, explanation["fields"], strict=True):
        answer = evidence["served"]
        assert observation["code"]["text"] == evidence["label"]
        assert observation["valueCodeableConcept"]["text"] == answer["label"]
        share = observation["component"][0]["valueQuantity"]
        assert share["unit"] == "%" and share["code"] == "%"
        assert share["value"] == pytest.approx(answer["probability"] * 100, abs=0.01)
        assert body["model_version"] in observation["method"]["text"]
        assert observation["bodySite"]["coding"][0]["code"] == "RID1301"
        assert "Research software" in observation["note"][0]["text"]
        expected = schema.field(evidence["field"]).code(answer["value"])
        codings = observation["valueCodeableConcept"].get("coding")
        assert codings == (
            [{"system": FHIR_SYSTEMS[expected[0]], "code": expected[1], "display": expected[2]}]
            if expected
            else None
        )
        if evidence["field"] == "density":  # every density value has a RadLex code
            assert codings[0]["system"] == "http://radlex.org"
            concept = schema.field("density").concept
            assert observation["code"]["coding"][0]["code"] == concept[1]

    (report,) = resources(bundle, "DiagnosticReport")
    assert report["code"]["coding"][0] == {
        "system": "http://loinc.org",
        "code": "18748-4",
        "display": "Diagnostic imaging study",
    }
    assert report["conclusion"] == explanation["texts"][0]["text"]
    urls = {e["resource"]["resourceType"]: e["fullUrl"] for e in bundle["entry"]}
    observation_urls = [
        e["fullUrl"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation"
    ]
    assert [r["reference"] for r in report["result"]] == observation_urls
    assert report["imagingStudy"] == [{"reference": urls["ImagingStudy"]}]
    assert report["subject"] == {"reference": urls["Patient"]}

    (study,) = resources(bundle, "ImagingStudy")
    assert study["identifier"][0]["value"] == f"urn:oid:{STUDY}"
    assert study["series"][0]["uid"] == SERIES
    (patient,) = resources(bundle, "Patient")
    assert patient["identifier"][0]["value"] == pseudonym
    assert set(patient) == {"resourceType", "identifier"}  # nothing but the pseudonym
    (device,) = resources(bundle, "Device")
    versions = {v["type"]["text"]: v["value"] for v in device["version"]}
    assert versions["model version"] == body["model_version"]
    assert versions["catalog version"] == body["catalog_version"]
    assert all(o["device"] == {"reference": urls["Device"]} for o in observations)

    again = api.get(f"/api/v1/explanations/{body['id']}/fhir").json()
    assert again == bundle  # stable ids: exporting twice gives the same Bundle


def test_fhir_without_identity_has_no_patient_or_study_and_still_validates(client_as):
    api = client_as("clinician")
    body = explain(api)
    bundle = api.get(f"/api/v1/explanations/{body['id']}/fhir").json()
    Bundle.model_validate(bundle)
    assert not resources(bundle, "Patient") and not resources(bundle, "ImagingStudy")
    assert all("subject" not in o for o in resources(bundle, "Observation"))


def test_another_users_explanation_is_not_found_as_fhir_either(client_as):
    mine = explain(client_as("admin"), patient_pseudonym="ADMIN-ONLY")
    clinician = client_as("clinician")
    for path in (f"/api/v1/explanations/{mine['id']}", f"/api/v1/explanations/{mine['id']}/fhir"):
        response = clinician.get(path)
        assert response.status_code == 404
        assert "no explanation with id" in response.json()["detail"]
    assert client_as("admin").get(f"/api/v1/explanations/{mine['id']}/fhir").status_code == 200
    assert clinician.get("/api/v1/explanations/nope/fhir").status_code == 404


def test_list_filters_by_identity_and_refuses_bad_filters(client_as):
    api = client_as("clinician")
    pseudonym = f"P-{uuid.uuid4().hex[:8]}"
    study = f"1.2.826.0.1.{uuid.uuid4().int % 10**9}"
    first = explain(api, patient_pseudonym=pseudonym, study_instance_uid=study, nodule_label="A")
    second = explain(api, patient_pseudonym=pseudonym, nodule_label="B")
    explain(api, patient_pseudonym=f"{pseudonym}x")

    def ids(**params) -> list[str]:
        response = api.get("/api/v1/explanations", params=params)
        assert response.status_code == 200, response.text
        return [s["id"] for s in response.json()]

    assert ids(patient_pseudonym=pseudonym) == [second["id"], first["id"]]
    assert ids(study_instance_uid=study) == [first["id"]]
    assert ids(patient_pseudonym=pseudonym, nodule_label="B") == [second["id"]]
    (summary,) = api.get("/api/v1/explanations", params={"study_instance_uid": study}).json()
    assert summary["input_kind"] == "contours"
    assert summary["identity"] == {
        "study_instance_uid": study,
        "series_instance_uid": None,
        "nodule_label": "A",
        "patient_pseudonym": pseudonym,
    }
    for name, bad in [
        ("study_instance_uid", "1.02.3"),
        ("study_instance_uid", "1.2.x"),
        ("patient_pseudonym", "has space"),
        ("nodule_label", "-starts-with-dash"),
        ("patient_pseudonym", "p" * 65),
    ]:
        response = api.get("/api/v1/explanations", params={name: bad})
        assert response.status_code == 422, (name, bad)
        assert name in response.text


def test_recent_page_shows_identity_and_filters_by_pseudonym(client_as):
    api = client_as("clinician")
    pseudonym = f"P-{uuid.uuid4().hex[:8]}"
    mine = explain(api, patient_pseudonym=pseudonym, study_instance_uid=STUDY, nodule_label="LLL 2")
    other = explain(api, patient_pseudonym=f"Q-{uuid.uuid4().hex[:8]}")

    page = api.get("/explanations")
    assert page.status_code == 200
    assert pseudonym in page.text and STUDY in page.text and 'name="patient_pseudonym"' in page.text

    filtered = api.get("/explanations", params={"patient_pseudonym": pseudonym})
    assert filtered.status_code == 200
    assert mine["id"] in filtered.text and other["id"] not in filtered.text
    fragment = api.get(
        "/explanations", params={"patient_pseudonym": pseudonym}, headers={"HX-Request": "true"}
    )
    assert "<html" not in fragment.text and mine["id"] in fragment.text
    assert f'value="{pseudonym}"' in fragment.text

    bad = api.get("/explanations", params={"patient_pseudonym": "no spaces please"})
    assert bad.status_code == 422 and "patient_pseudonym" in bad.text

    detail = api.get(f"/explanations/{mine['id']}")
    assert pseudonym in detail.text and STUDY in detail.text and "LLL 2" in detail.text
    assert f"/api/v1/explanations/{mine['id']}/fhir" in detail.text
