"""A DICOM SEG explained by the real service, and the explanation back as a DICOM SR that
references the SEG and codes each descriptor's served value."""

from __future__ import annotations

import io

import httpx
import pydicom
import pytest
from dicom_support import ct_series, ellipsoid, seg_dataset, to_bytes
from support.http import bearer

from app.tables import Explanation
from model.datasets import builtin_schema

COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"


@pytest.fixture(scope="module")
def seg():
    mask = ellipsoid()
    source = ct_series(*mask.shape)
    return source, seg_dataset(mask, source)


@pytest.fixture
def as_role(lidc_service):
    clients = []

    def make(role):
        client = httpx.Client(
            base_url=lidc_service.url, timeout=60, headers=bearer(lidc_service.tokens[role])
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def upload(client, seg_dataset_, **data):
    files = {"file": ("seg.dcm", to_bytes(seg_dataset_), "application/dicom")}
    return client.post("/api/v1/explanations", files=files, data=data)


def coded_items(dataset):
    """(concept name, value) code triples of every CODE item in an SR content tree."""
    for item in dataset.get("ContentSequence", []):
        if item.ValueType == "CODE":
            name, value = item.ConceptNameCodeSequence[0], item.ConceptCodeSequence[0]
            yield (
                (name.CodingSchemeDesignator, name.CodeValue),
                (value.CodingSchemeDesignator, value.CodeValue, value.CodeMeaning),
            )
        yield from coded_items(item)


def uids_in(dataset) -> set[str]:
    found = set()
    for element in dataset.iterall():
        if element.VR == "UI" and isinstance(element.value, str):
            found.add(element.value)
    return found


def test_seg_upload_explains_and_fills_the_identity(as_role, seg):
    source, seg_ds = seg
    response = upload(as_role("clinician"), seg_ds, k="3")
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["input_kind"] == "dicom-seg"
    assert body["identity"]["study_instance_uid"] == source[0].StudyInstanceUID
    assert body["identity"]["series_instance_uid"] == source[0].SeriesInstanceUID
    given = upload(as_role("clinician"), seg_ds, study_instance_uid="1.2.3.4")
    assert given.json()["identity"]["study_instance_uid"] == "1.2.3.4"  # what was given wins


def test_sr_references_the_seg_and_codes_every_served_value(as_role, seg):
    source, seg_ds = seg
    client = as_role("clinician")
    body = upload(client, seg_ds).json()
    response = client.get(f"/api/v1/explanations/{body['id']}/sr")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/dicom"
    assert ".dcm" in response.headers["content-disposition"]
    sr = pydicom.dcmread(io.BytesIO(response.content))
    assert sr.SOPClassUID == COMPREHENSIVE_3D_SR and sr.Modality == "SR"
    assert sr.StudyInstanceUID == seg_ds.StudyInstanceUID
    assert sr.PatientID == seg_ds.PatientID
    assert seg_ds.SOPInstanceUID in uids_in(sr)
    assert source[0].SeriesInstanceUID in uids_in(sr)

    schema = builtin_schema("lidc")
    served = {f["field"]: f["served"]["value"] for f in body["explanation"]["fields"]}
    coded = [value for _, value in coded_items(sr)]
    for name, value in served.items():
        if value is None:
            continue
        expected = schema.field(name).code(value) or ("99CLIPMED", value, None)
        assert any(c[:2] == expected[:2] for c in coded), (name, value, coded)
    texts = " ".join(str(e.value) for e in sr.iterall() if isinstance(e.value, str))
    assert body["model_version"] in texts and body["catalog_version"] in texts


def test_sr_of_an_explanation_without_a_seg_is_404(as_role):
    client = as_role("clinician")
    contours = {
        "slice_thickness_mm": 2.5,
        "slices": [
            {"z_mm": 0.0, "contours": [[[0, 0], [8, 0], [8, 8], [0, 8]]]},
            {"z_mm": 2.5, "contours": [[[1, 1], [7, 1], [7, 7], [1, 7]]]},
        ],
    }
    made = client.post("/api/v1/explanations", json=contours)
    assert made.status_code == 201, made.text
    response = client.get(f"/api/v1/explanations/{made.json()['id']}/sr")
    assert response.status_code == 404
    assert "no DICOM SEG behind" in response.text


def test_a_clinician_cannot_fetch_another_users_sr(as_role, seg):
    _, seg_ds = seg
    theirs = upload(as_role("radiologist"), seg_ds).json()["id"]
    assert as_role("radiologist").get(f"/api/v1/explanations/{theirs}/sr").status_code == 200
    response = as_role("clinician").get(f"/api/v1/explanations/{theirs}/sr")
    assert response.status_code == 404
    assert "no explanation with id" in response.text
    assert as_role("admin").get(f"/api/v1/explanations/{theirs}/sr").status_code == 200


def test_a_service_told_not_to_keep_the_seg_patient_stores_and_exports_none(
    lidc_service, as_role, seg
):
    """CLIPMED_KEEP_SEG_PATIENT=false: the patient and study attributes are dropped on upload;
    the SR still sits in the SEG's study (by UID) and cites the SEG."""
    source, seg_ds = seg
    app = lidc_service.app
    kept = app.state.settings
    app.state.settings = kept.model_copy(update={"keep_seg_patient": False})
    try:
        client = as_role("clinician")
        body = upload(client, seg_ds).json()
    finally:
        app.state.settings = kept
    with app.state.sessions() as session:
        stored = session.get(Explanation, body["id"]).segmentation
    assert stored["patient_study"] == {} and stored["sop_instance_uid"] == seg_ds.SOPInstanceUID
    sr = pydicom.dcmread(io.BytesIO(client.get(f"/api/v1/explanations/{body['id']}/sr").content))
    assert seg_ds.PatientID and not sr.PatientID and not sr.PatientName
    assert sr.StudyInstanceUID == seg_ds.StudyInstanceUID
    assert seg_ds.SOPInstanceUID in uids_in(sr)
