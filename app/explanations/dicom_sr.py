"""An explanation of a DICOM SEG as a DICOM SR: a TID 1500 Measurement Report in the SEG's study.

One volumetric ROI group references the SEG's segment (and the CT series it was drawn on) and
holds one qualitative evaluation per descriptor field, valued with its served answer. Codes come
from the descriptor schema (Field.concept, Field.code); what has no standard code there goes
out under the private scheme PRIVATE_SCHEME, with the field or value name as its code. The
model and catalog versions are the algorithm identification of the group and of the observer
device.
"""

from __future__ import annotations

import contextlib
import io

import highdicom as hd
from pydicom import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from app.explanations.service import served_answer
from app.serving import Serving
from app.tables import Explanation
from model.datasets import builtin_schema
from model.dicom_seg import PATIENT_STUDY
from model.schema import Schema, SchemaError

PRIVATE_SCHEME = "99CLIPMED"  # values and concepts without a confident standard code
MANUFACTURER = "CLIPMedical"
SR_SERIES_NUMBER = 990  # a series of its own, after the acquisition's


class NoDicomSeg(LookupError):
    """The explanation was not made from a DICOM SEG: there is nothing for an SR to cite."""


def code_schemas(row: Explanation, serving: Serving) -> list[Schema]:
    """Where the codes of `row`'s fields are looked up: the served model's schema when it is
    the one the row was explained with, then the built-in schema of that name (which has the
    codes even when an older checkpoint's saved schema does not)."""
    name = row.result.get("schema")
    found = [serving.checkpoint.schema] if serving.checkpoint.schema.name == name else []
    with contextlib.suppress(SchemaError):  # a schema of its own: the served one only
        found.append(builtin_schema(str(name)))
    return found


def coded(code: tuple[str, str, str]) -> hd.sr.CodedConcept:
    scheme, value, meaning = code
    return hd.sr.CodedConcept(value=value, scheme_designator=scheme, meaning=meaning)


def private(value: str, meaning: str) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(value=value, scheme_designator=PRIVATE_SCHEME, meaning=meaning)


def explanation_sr(row: Explanation, schemas: list[Schema]) -> bytes:
    """The SR of `row` as a DICOM file; codes from the first of `schemas` that has them."""
    reference = row.segmentation
    if row.input_kind != "dicom-seg" or not reference:
        raise NoDicomSeg(
            f"no DICOM SEG behind explanation {row.id!r} (its input was {row.input_kind}); "
            "a DICOM SR can only be made for an explanation of a DICOM SEG"
        )
    algorithm = hd.sr.AlgorithmIdentification(
        name=MANUFACTURER,
        version=row.model_version,
        parameters=[f"catalog {row.catalog_version}", f"k {row.k}", f"explanation {row.id}"],
    )
    evaluations = [_evaluation(evidence, schemas) for evidence in row.result.get("fields", [])]
    group = hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=generate_uid(),
            identifier=str(reference.get("segment_label") or "nodule")[:64],
        ),
        referenced_segment=_referenced_segment(reference),
        finding_type=hd.sr.CodedConcept("27925004", "SCT", "Nodule"),
        algorithm_id=algorithm,
        qualitative_evaluations=[e for e in evaluations if e is not None] or None,
    )
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=generate_uid(),
        name=MANUFACTURER,
        manufacturer_name=MANUFACTURER,
        model_name=f"{row.model_version} / catalog {row.catalog_version}"[:64],
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(
            observer_device_context=hd.sr.ObserverContext(
                observer_type=codes.DCM.Device,
                observer_identifying_attributes=device,
            )
        ),
        procedure_reported=codes.LN.CTUnspecifiedBodyRegion,
        imaging_measurements=[group],
    )
    sr = hd.sr.Comprehensive3DSR(
        evidence=[_seg_stub(reference)],
        content=report,
        series_instance_uid=generate_uid(),
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        series_description="CLIPMedical descriptors",
        is_complete=True,
        is_final=False,  # a model's reading, for a radiologist to verify
    )
    buffer = io.BytesIO()
    sr.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _evaluation(evidence: dict, schemas: list[Schema]) -> hd.sr.QualitativeEvaluation | None:
    """One field's served value as a coded evaluation (None when there is no value)."""
    name, answer = evidence.get("field"), served_answer(evidence)
    value = answer.get("value")
    if not name or value is None:
        return None
    concept, code = None, None
    for schema in schemas:
        fields = {f.name: f for f in schema.fields}
        if name in fields and value in fields[name].values:
            concept = concept or fields[name].concept
            code = code or fields[name].code(value)
    label = evidence.get("label") or name
    return hd.sr.QualitativeEvaluation(
        name=coded(concept) if concept else private(name[:16], label),
        value=coded(code) if code else private(value[:16], answer.get("label") or value),
    )


def _referenced_segment(reference: dict) -> hd.sr.ReferencedSegment:
    sources = reference.get("source_series") or []
    series = sources[0].get("series_instance_uid") if sources else None
    return hd.sr.ReferencedSegment(
        sop_class_uid=reference["sop_class_uid"],
        sop_instance_uid=reference["sop_instance_uid"],
        segment_number=int(reference.get("segment_number") or 1),
        source_series=hd.sr.SourceSeriesForSegmentation(series) if series else None,
    )


def _seg_stub(reference: dict) -> Dataset:
    """The SEG as evidence: its UIDs and the patient and study modules it was read with."""
    stub = Dataset()
    stub.SOPClassUID = reference["sop_class_uid"]
    stub.SOPInstanceUID = reference["sop_instance_uid"]
    stub.StudyInstanceUID = reference["study_instance_uid"]
    stub.SeriesInstanceUID = reference["series_instance_uid"]
    given = reference.get("patient_study") or {}
    for keyword in PATIENT_STUDY:
        setattr(stub, keyword, given.get(keyword) or None)  # empty where the SEG had none
    return stub
