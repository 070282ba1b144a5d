"""model.evaluate: patient-grouped folds, a fold run apart equal to the whole run, baselines."""

import numpy as np
import pandas as pd
import pytest

from model.config import preset
from model.evaluate import (
    FoldResult,
    merge_folds,
    patient_folds,
    run_fold,
)


def test_no_patient_is_in_two_folds(lidc_small):
    patients = lidc_small.patients
    folds = patient_folds(patients, 5, seed=0)
    seen = np.concatenate([test for _, test in folds])
    assert sorted(seen) == list(range(len(patients)))  # every case tested exactly once
    for train, test in folds:
        assert set(patients[train]).isdisjoint(patients[test])


def test_too_few_patients_for_the_folds_is_an_error(lidc_small):
    with pytest.raises(ValueError, match="10 folds need at least 10 patients"):
        patient_folds(np.array(["a", "b", "c"]), 10, seed=0)


def test_folds_run_apart_saved_and_merged_equal_the_whole_run(
    cross_validated, lidc_small, text_encoder, tmp_path
):
    """What the evaluate job does: one fold per job, saved to disk, merged by another job."""
    result, _ = cross_validated
    mcfg, tcfg = preset("lidc", epochs=3, patience=0, val_fraction=0.0)
    saved = [
        run_fold(lidc_small, mcfg, tcfg, text_encoder, fold, folds=3).save(tmp_path / str(fold))
        for fold in (3, 1, 2)
    ]
    merged = merge_folds([FoldResult.load(folder) for folder in saved])
    pd.testing.assert_frame_equal(merged.metrics, result.metrics, check_dtype=False)
    pd.testing.assert_frame_equal(merged.per_class, result.per_class, check_dtype=False)
    assert merged.confusions.keys() == result.confusions.keys()
    for key, cm in result.confusions.items():
        np.testing.assert_array_equal(merged.confusions[key], cm)
    assert merged.histories == result.histories


def test_a_fold_outside_the_folds_is_refused(lidc_small, text_encoder):
    mcfg, tcfg = preset("lidc", epochs=1)
    with pytest.raises(ValueError, match="fold 4 is not one of 1..3"):
        run_fold(lidc_small, mcfg, tcfg, text_encoder, 4, folds=3)


def test_baselines_are_what_they_claim(cross_validated):
    result, _ = cross_validated
    m = result.metrics
    majority = m[m.method == "majority"]
    # A constant prediction's recall is 1 on one class and 0 on the rest.
    per_class = result.per_class[result.per_class.method == "majority"]
    for (_, fld), group in per_class.groupby(["fold", "field"]):
        supported = group[group.support > 0]
        assert (supported.recall == 1).sum() <= 1, fld
    assert (majority.accuracy > 0).all()
