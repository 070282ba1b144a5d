"""A stored explanation as a FHIR R4 Bundle: pure functions from the row (and the schema that
codes its fields) to a JSON-ready dict; the route only serialises it.

The Bundle is a "collection" (not a "document": there is no Composition, nobody signs it):
- a DiagnosticReport (LOINC 18748-4, status preliminary: research output nobody has verified)
  whose conclusion is the best-ranked retrieved text and whose results are the Observations;
- one Observation per descriptor field: its code (coded where the schema has a concept, else
  text), the served value (the similarity-weighted vote; RadLex/SNOMED coding where the schema
  has one, text always) and the vote's share as a component in percent;
- a Device naming the model, catalog and feature-extractor versions (Observation.device), a
  Patient only as a pseudonymous identifier, an ImagingStudy only when the study UID was given.
Every resource says it is research software output. Valid against fhir.resources.R4B (tested).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from html import escape
from typing import Any

from app.db import as_utc
from app.explanations.service import served_answer
from app.tables import Explanation
from model.datasets import builtin_schema
from model.schema import Field, Schema, SchemaError

# A code as the schema keeps it: (DICOM coding scheme designator, code, display).
Code = tuple[str, str, str]
# Designator -> FHIR code system URI.
FHIR_SYSTEMS = {
    "RADLEX": "http://radlex.org",
    "SCT": "http://snomed.info/sct",
    "LN": "http://loinc.org",
    "NCIt": "http://ncicb.nci.nih.gov/xml/owl/EVS/Thesaurus.owl",
    "DCM": "http://dicom.nema.org/resources/ontology/DCM",
}

MEDIA_TYPE = "application/fhir+json"
RESEARCH_NOTE = (
    "Research software output (CLIPMedical): descriptors retrieved by a model, not a diagnosis; "
    "not for clinical use without review by a radiologist."
)
PSEUDONYM_SYSTEM = "urn:clipmedical:patient-pseudonym"
DICOM_UID_SYSTEM = "urn:dicom:uid"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
UCUM = "http://unitsofmeasure.org"
REPORT_CODE: Code = ("LN", "18748-4", "Diagnostic imaging study")
LUNG: Code = ("RADLEX", "RID1301", "lung")
RADIOLOGY_CATEGORY = {
    "coding": [
        {
            "system": "http://terminology.hl7.org/CodeSystem/v2-0074",
            "code": "RAD",
            "display": "Radiology",
        }
    ]
}
IMAGING_CATEGORY = {
    "coding": [
        {
            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
            "code": "imaging",
            "display": "Imaging",
        }
    ]
}
ABSENT = {
    "coding": [
        {"system": "http://terminology.hl7.org/CodeSystem/data-absent-reason", "code": "unknown"}
    ]
}
SHARE_TEXT = "Probability: share of the similarity-weighted vote of the retrieved texts"
PROBABILITY_TEXT = "Probability of the value, calibrated on validation patients"


def export_schema(name: str) -> Schema | None:
    """The schema whose codes the export uses: the built-in one of that name (the one place the
    code table lives), or None (every value exported as text)."""
    try:
        return builtin_schema(name)
    except SchemaError:
        return None


def coding(code: Code) -> dict[str, str]:
    scheme, value, display = code
    return {
        "system": FHIR_SYSTEMS.get(scheme, f"urn:clipmedical:{scheme}"),
        "code": value,
        "display": display,
    }


def concept(code: Code | None, text: str) -> dict[str, Any]:
    """A CodeableConcept: the coding when there is one, the text always."""
    return {"coding": [coding(code)], "text": text} if code else {"text": text}


def _uuid_url(row: Explanation, name: str) -> str:
    """Stable within one explanation, so exporting twice gives the same Bundle."""
    return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, f'clipmedical:{row.id}:{name}')}"


def _instant(row: Explanation) -> str:
    return as_utc(row.created_at).isoformat()


def _schema_field(schema: Schema | None, name: str) -> Field | None:
    if schema is None:
        return None
    try:
        return schema.field(name)
    except SchemaError:
        return None


def device_resource(row: Explanation) -> dict[str, Any]:
    versions = [("model version", row.model_version), ("catalog version", row.catalog_version)]
    if row.feature_extractor:
        versions.append(("feature extractor", row.feature_extractor))
    return {
        "resourceType": "Device",
        "status": "active",
        "deviceName": [{"name": "CLIPMedical", "type": "model-name"}],
        "type": {"text": "Research software: retrieval-based lung nodule descriptor model"},
        "version": [{"type": {"text": kind}, "value": value} for kind, value in versions],
        "note": [{"text": RESEARCH_NOTE}],
    }


def patient_resource(pseudonym: str) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "identifier": [
            {
                "use": "secondary",
                "system": PSEUDONYM_SYSTEM,
                "value": pseudonym,
                "type": {"text": "pseudonym"},
            }
        ],
    }


def imaging_study_resource(row: Explanation, subject: dict[str, Any]) -> dict[str, Any]:
    study: dict[str, Any] = {
        "resourceType": "ImagingStudy",
        "identifier": [{"system": DICOM_UID_SYSTEM, "value": f"urn:oid:{row.study_instance_uid}"}],
        "status": "unknown",  # the service never sees the study, only a segmentation of it
        "subject": subject,
    }
    if row.series_instance_uid:
        study["series"] = [
            {
                "uid": row.series_instance_uid,
                "modality": {"system": DCM, "code": "CT", "display": "Computed Tomography"},
            }
        ]
    return study


def observation_resource(
    row: Explanation,
    evidence: Mapping[str, Any],
    field: Field | None,
    subject: dict[str, Any] | None,
    device_url: str,
    study_url: str | None,
) -> dict[str, Any]:
    answer = served_answer(evidence)
    observation: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "preliminary",
        "category": [IMAGING_CATEGORY],
        "code": concept(field.concept if field else None, evidence["label"]),
        "effectiveDateTime": _instant(row),
        "issued": _instant(row),
        "bodySite": concept(LUNG, "lung"),
        "method": {
            "text": (
                (
                    "CLIPMedical served read-out, probability calibrated on validation patients"
                    if answer["calibrated"]
                    else f"CLIPMedical similarity-weighted vote of {row.k} retrieved texts"
                )
                + f" (model {row.model_version}, catalog {row.catalog_version})"
            )
        },
        "device": {"reference": device_url},
        "note": [{"text": RESEARCH_NOTE}],
    }
    if subject is not None:
        observation["subject"] = subject
    if study_url is not None:
        observation["derivedFrom"] = [{"reference": study_url}]
    if row.nodule_label:
        observation["note"].append({"text": f"Nodule: {row.nodule_label}"})
    if answer.get("value") is None:
        observation["dataAbsentReason"] = ABSENT
        return observation
    observation["valueCodeableConcept"] = concept(
        field.code(answer["value"]) if field else None, answer["label"] or answer["value"]
    )
    observation["component"] = [
        {
            "code": {"text": PROBABILITY_TEXT if answer["calibrated"] else SHARE_TEXT},
            "valueQuantity": {
                "value": round(float(answer["probability"]) * 100, 2),
                "unit": "%",
                "system": UCUM,
                "code": "%",
            },
        }
    ]
    return observation


def explanation_bundle(row: Explanation, schema: Schema | None) -> dict[str, Any]:
    """The FHIR R4 Bundle (a dict) of one stored explanation; `schema` supplies the codes."""
    result = row.result
    entries: list[tuple[str, dict[str, Any]]] = []
    device_url = _uuid_url(row, "device")
    entries.append((device_url, device_resource(row)))
    subject = None
    if row.patient_pseudonym:
        patient_url = _uuid_url(row, "patient")
        entries.append((patient_url, patient_resource(row.patient_pseudonym)))
        subject = {"reference": patient_url}
    study_url = None
    if row.study_instance_uid:
        study_url = _uuid_url(row, "imaging-study")
        study_subject = subject or {"display": "patient not identified (no pseudonym given)"}
        entries.append((study_url, imaging_study_resource(row, study_subject)))
    observation_urls = []
    for evidence in result.get("fields", []):
        url = _uuid_url(row, f"observation:{evidence['field']}")
        field = _schema_field(schema, evidence["field"])
        entries.append(
            (url, observation_resource(row, evidence, field, subject, device_url, study_url))
        )
        observation_urls.append(url)
    texts = result.get("texts") or []
    report: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "identifier": [{"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{row.id}"}],
        "status": "preliminary",
        "category": [RADIOLOGY_CATEGORY],
        "code": concept(REPORT_CODE, "Lung nodule descriptors (research software output)"),
        "effectiveDateTime": _instant(row),
        "issued": _instant(row),
        "result": [{"reference": url} for url in observation_urls],
        "text": {
            "status": "generated",
            "div": f'<div xmlns="http://www.w3.org/1999/xhtml"><p>{escape(RESEARCH_NOTE)}</p></div>',
        },
    }
    if subject is not None:
        report["subject"] = subject
    if study_url is not None:
        report["imagingStudy"] = [{"reference": study_url}]
    if texts:
        report["conclusion"] = texts[0]["text"]
    report_url = _uuid_url(row, "report")
    entries.insert(0, (report_url, report))
    return {
        "resourceType": "Bundle",
        "identifier": {"system": "urn:ietf:rfc:3986", "value": _uuid_url(row, "bundle")},
        "type": "collection",
        "timestamp": _instant(row),
        "entry": [{"fullUrl": url, "resource": resource} for url, resource in entries],
    }
