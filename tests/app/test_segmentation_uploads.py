"""Bring your own nodule: contours JSON, mask volumes and NIfTI explained by the real service.

The model is lidc_checkpoint (real LIDC features, HELD_OUT_PATIENT left out of training); the
inputs are a held-out LIDC read exported as contours and masks built with numpy and nibabel.
"""

from __future__ import annotations

import gzip
import io
import json
import shutil

import httpx
import numpy as np
import pytest
from sqlalchemy import func, select
from support.http import bearer
from support.inputs import SPACING, ellipsoid, held_out_read, nifti_bytes

from app import registry
from app.tables import Explanation
from model.datasets.morphometry import FEATURE_EXTRACTOR


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def stored_count(service) -> int:
    with service.session() as session:
        return session.scalar(select(func.count()).select_from(Explanation))


@pytest.fixture
def api(lidc_service):
    with httpx.Client(
        base_url=lidc_service.url, timeout=60, headers=bearer(lidc_service.tokens["clinician"])
    ) as http:
        yield http


def comparable(body: dict) -> dict:
    explanation = body["explanation"]
    return {key: explanation[key] for key in ("texts", "fields", "similar_cases", "slices")}


def test_held_out_lidc_read_as_contours_explains_exactly_as_its_features(api, lidc_small):
    index, document = held_out_read(lidc_small)
    features = lidc_small.slices(index)
    by_features = api.post("/api/v1/explanations", json={"features": features.tolist(), "k": 5})
    assert by_features.status_code == 201, by_features.text
    by_json = api.post("/api/v1/explanations", json={**document, "k": 5})
    assert by_json.status_code == 201, by_json.text
    upload = ("read.json", json.dumps(document).encode(), "application/json")
    by_file = api.post("/api/v1/explanations", files={"file": upload}, data={"k": "5"})
    assert by_file.status_code == 201, by_file.text
    for body in (by_json.json(), by_file.json()):
        assert body["input_sha256"] == by_features.json()["input_sha256"]
        assert comparable(body) == comparable(by_features.json())
        assert body["input_kind"] == "contours"
        assert body["feature_extractor"] == FEATURE_EXTRACTOR
        assert len(body["outline"]["slices"]) == len(document["slices"])
    assert by_features.json()["input_kind"] == "features"
    assert by_features.json()["outline"] is None


def test_nifti_and_npy_masks_are_explained_and_their_outline_kept(api):
    mask = ellipsoid()
    nifti = api.post(
        "/api/v1/explanations",
        files={"file": ("nodule.nii.gz", nifti_bytes(mask), "application/gzip")},
        data={"k": "3", "study_instance_uid": "1.2.840.113619.2.55.3", "nodule_label": "RUL 1"},
    )
    assert nifti.status_code == 201, nifti.text
    body = nifti.json()
    assert body["input_kind"] == "nifti" and body["k"] == 3
    assert body["n_slices"] == int(mask.any(axis=(1, 2)).sum())
    assert body["identity"]["study_instance_uid"] == "1.2.840.113619.2.55.3"
    assert body["identity"]["nodule_label"] == "RUL 1"
    drawn = body["outline"]["slices"]
    assert len(drawn) == body["n_slices"] and all(len(s["contours"]) == 1 for s in drawn)
    # the widest slice's outline spans the ellipsoid's diameter in x (2 x 6 mm), within a voxel
    widest = max(drawn, key=lambda s: len(s["contours"][0]))
    xs = np.asarray(widest["contours"][0])[:, 0]
    assert abs((xs.max() - xs.min()) - 12.0) <= 2 * SPACING[2]

    as_npy = api.post(
        "/api/v1/explanations",
        files={"file": ("mask.npy", npy_bytes(mask), "application/octet-stream")},
        data={"spacing_mm": "2.5,0.7,0.7"},
    )
    assert as_npy.status_code == 201, as_npy.text
    assert as_npy.json()["input_kind"] == "mask"
    # the same voxels from NIfTI and from .npy: the same features
    assert as_npy.json()["input_sha256"] == body["input_sha256"]

    buffer = io.BytesIO()
    np.savez_compressed(buffer, mask=mask.astype(np.uint8), spacing_mm=np.array(SPACING))
    as_npz = api.post(
        "/api/v1/explanations",
        files={"file": ("mask.npz", buffer.getvalue(), "application/octet-stream")},
    )
    assert as_npz.status_code == 201, as_npz.text
    assert as_npz.json()["input_sha256"] == body["input_sha256"]


def square(x0, y0, side):
    return [[x0, y0], [x0 + side, y0], [x0 + side, y0 + side], [x0, y0 + side]]


def contours_doc(**changes):
    document = {
        "slice_thickness_mm": 2.5,
        "slices": [{"z_mm": 0.0, "contours": [square(0, 0, 8)]}],
    }
    document.update(changes)
    return document


def two_blobs() -> np.ndarray:
    mask = np.zeros((6, 40, 40), bool)
    mask[1:3, 5:12, 5:12] = True
    mask[3:5, 25:33, 25:33] = True
    return mask


def big_gzip_bomb() -> bytes:
    """A NIfTI whose header declares a small volume, followed by far more zeros."""
    header = nifti_bytes(np.ones((2, 8, 8), bool), compress=False)
    return gzip.compress(header + bytes(64 << 20))


BAD = {
    "two points": (
        lambda: contours_doc(slices=[{"z_mm": 0, "contours": [[[0, 0], [5, 5]]]}]),
        "at least 3",
    ),
    "self-intersecting": (
        lambda: contours_doc(
            slices=[{"z_mm": 0, "contours": [[[0, 0], [10, 10], [10, 0], [0, 10]]]}]
        ),
        "crosses itself",
    ),
    "zero area": (
        lambda: contours_doc(slices=[{"z_mm": 0, "contours": [[[0, 0], [5, 5], [10, 10]]]}]),
        "zero area",
    ),
    "missing thickness": (
        lambda: {"slices": [{"z_mm": 0.0, "contours": [square(0, 0, 8)]}]},
        "slice_thickness_mm' is missing",
    ),
    "zero thickness": (lambda: contours_doc(slice_thickness_mm=0), "slice_thickness_mm must be"),
    "negative spacing": (lambda: contours_doc(pixel_spacing_mm=-0.5), "pixel_spacing_mm must be"),
    "two slices at one z": (
        lambda: contours_doc(
            slices=[
                {"z_mm": 1.0, "contours": [square(0, 0, 8)]},
                {"z_mm": 1.0, "contours": [square(2, 2, 4)]},
            ]
        ),
        "two slices at z_mm=1",
    ),
    "hole outside": (
        lambda: contours_doc(
            slices=[{"z_mm": 0, "contours": [square(0, 0, 8)], "holes": [square(50, 50, 2)]}]
        ),
        "outside every contour",
    ),
    "not in mm": (
        lambda: contours_doc(slices=[{"z_mm": 0, "contours": [square(0, 0, 900)]}]),
        "at most 512 pixels",
    ),
}


@pytest.mark.parametrize("name", BAD)
def test_bad_contours_are_a_422_naming_the_problem_and_store_nothing(api, lidc_service, name):
    build, message = BAD[name]
    before = stored_count(lidc_service)
    response = api.post("/api/v1/explanations", json=build())
    assert response.status_code == 422, response.text
    assert message in response.json()["detail"]
    assert stored_count(lidc_service) == before


BAD_MASKS = {
    "empty": (lambda: ("m.npy", npy_bytes(np.zeros((4, 8, 8), np.uint8))), "empty"),
    "two parts": (lambda: ("m.npy", npy_bytes(two_blobs())), "2 separate parts"),
    "non-binary": (
        lambda: ("m.npy", npy_bytes(ellipsoid().astype(np.uint8) * 2)),
        "not binary",
    ),
    "no spacing": (lambda: ("m.npy", npy_bytes(ellipsoid())), "needs its voxel spacing"),
    "nifti zero spacing": (
        lambda: ("m.nii", nifti_bytes(ellipsoid(), spacing=(0.0, 0.7, 0.7), compress=False)),
        "spacing must be between",
    ),
    "over the voxel cap": (
        lambda: ("m.nii.gz", nifti_bytes(np.zeros((40, 512, 512), bool))),
        "voxels",
    ),
    "gzip bomb": (lambda: ("m.nii.gz", big_gzip_bomb()), "inflates past"),
    "not a nifti": (lambda: ("m.nii", b"\x00" * 400), "not a NIfTI file"),
}


@pytest.mark.parametrize("name", BAD_MASKS)
def test_bad_masks_are_a_422_naming_the_problem_and_store_nothing(api, lidc_service, name):
    build, message = BAD_MASKS[name]
    filename, data = build()
    spacing = {} if name in ("no spacing",) or filename.endswith((".nii", ".gz")) else None
    before = stored_count(lidc_service)
    response = api.post(
        "/api/v1/explanations",
        files={"file": (filename, data, "application/octet-stream")},
        data=spacing if spacing is not None else {"spacing_mm": "2.5,0.7,0.7"},
    )
    assert response.status_code == 422, response.text
    assert message in response.json()["detail"]
    assert stored_count(lidc_service) == before


def test_identity_is_validated(api, lidc_service):
    before = stored_count(lidc_service)
    response = api.post(
        "/api/v1/explanations", json={**contours_doc(), "study_instance_uid": "1.2.03.x"}
    )
    assert response.status_code == 422
    assert "study_instance_uid" in response.json()["detail"]
    assert stored_count(lidc_service) == before


def test_a_model_trained_on_other_features_answers_409_naming_both(service, client):
    """The simulated small checkpoint has no feature extractor: a segmentation is refused."""
    response = client.post("/api/v1/explanations", json=contours_doc())
    assert response.status_code == 409, response.text
    detail = response.json()["detail"]
    assert FEATURE_EXTRACTOR in detail and "no recorded extractor" in detail


def test_a_model_on_the_first_extractor_answers_409_naming_both(
    api, lidc_service, lidc_checkpoint, tmp_path
):
    """A checkpoint trained on clipmed-morphometry/1 features (before the 3-D shape) cannot
    explain segmentations measured by /2: 409 names both; it must be retrained on a re-import."""
    old = tmp_path / "v1-ckpt"
    shutil.copytree(lidc_checkpoint, old)
    meta = json.loads((old / "checkpoint.json").read_text())
    meta["feature_extractor"] = "clipmed-morphometry/1"
    meta["version"] += "-v1"
    (old / "checkpoint.json").write_text(json.dumps(meta))
    with lidc_service.session() as session:
        current = registry.get_active(session).version
        row = registry.register_checkpoint(session, old)
        lidc_service.activate(row.version)
    try:
        before = stored_count(lidc_service)
        response = api.post("/api/v1/explanations", json=contours_doc())
        assert response.status_code == 409, response.text
        detail = response.json()["detail"]
        assert "clipmed-morphometry/1" in detail and FEATURE_EXTRACTOR in detail
        assert FEATURE_EXTRACTOR == "clipmed-morphometry/2"
        assert stored_count(lidc_service) == before
    finally:
        lidc_service.activate(current)
    assert api.post("/api/v1/explanations", json=contours_doc()).status_code == 201
