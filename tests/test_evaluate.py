import numpy as np
import pandas as pd
import pytest

from model.config import preset
from model.evaluate import (
    FoldResult,
    cross_validate,
    merge_folds,
    patient_folds,
    run_fold,
    write_report,
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


@pytest.fixture(scope="module")
def report(lidc_small, text_encoder, tmp_path_factory):
    mcfg, tcfg = preset("lidc", epochs=3, patience=0, val_fraction=0.0)
    result = cross_validate(lidc_small, mcfg, tcfg, text_encoder, folds=3)
    out = tmp_path_factory.mktemp("report")
    write_report(result, lidc_small, mcfg, tcfg, out, "lidc")
    return result, out


def test_folds_run_apart_saved_and_merged_equal_the_whole_run(
    report, lidc_small, text_encoder, tmp_path
):
    """What the evaluate job does: one fold per job, saved to disk, merged by another job."""
    result, _ = report
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


def test_report_has_every_fold_field_and_method(report, lidc_small):
    _, out = report
    table = pd.read_csv(out / "metrics.csv")
    assert {"fold", "field", "method", "macro_f1", "accuracy"} <= set(table.columns)
    assert set(table.fold) == {1, 2, 3}
    assert set(table.field) == set(lidc_small.schema.field_names)
    scored = {"served", "top1", "vote", "head", "probe", "majority", "logreg", "logreg_bal"}
    scored |= {"histgb"}
    assert set(table.method) == scored | {"reader_pair", "reader_loo"}
    assert len(table[table.method.isin(scored)]) == 3 * len(lidc_small.schema.fields) * 9
    # reader agreement: the test patients' nodules with two or more reads, per fold and field
    readers = table[table.method.str.startswith("reader")]
    assert readers.n.gt(0).all() and len(readers) <= 3 * len(lidc_small.schema.fields) * 2
    calibration = pd.read_csv(out / "calibration.csv")
    served = calibration[calibration.method == "served"]
    assert len(served) == 3 * len(lidc_small.schema.fields)
    assert served.ece.between(0, 1).all() and (served.nll > 0).all()
    assert {"vote", "logreg_bal", "histgb"} <= set(calibration.method)
    # per nodule against its readers: agreement with their majority, NLL of their distribution
    assert served.nodule_agreement.between(0, 1).all() and (served.reader_nll > 0).all()
    assert (served.nodules > 0).all() and (served.nodules <= served.n).all()
    assert "Per nodule, against its readers" in (out / "summary.md").read_text()
    assert (out / "figures" / "reliability_shape.png").is_file()
    assert "Where the served answer loses" in (out / "summary.md").read_text()
    assert table.macro_f1.between(0, 1).all() and table.accuracy.between(0, 1).all()
    ordinal = table[table.field == "malignancy"]
    assert ordinal.qwk.notna().all() and (ordinal.within1_accuracy >= ordinal.accuracy).all()


def test_baselines_are_what_they_claim(report, lidc_small):
    result, _ = report
    m = result.metrics
    majority = m[m.method == "majority"]
    # A constant prediction's recall is 1 on one class and 0 on the rest.
    per_class = result.per_class[result.per_class.method == "majority"]
    for (_, fld), group in per_class.groupby(["fold", "field"]):
        supported = group[group.support > 0]
        assert (supported.recall == 1).sum() <= 1, fld
    assert (majority.accuracy > 0).all()


def test_report_files_figures_and_summary(report):
    result, out = report
    summary = (out / "summary.md").read_text()
    assert "| field |" in summary and "logistic regression" in summary
    assert "Cross-modal retrieval" in summary
    figures = sorted(p.name for p in (out / "figures").iterdir())
    assert "boxplots.png" in figures and "loss_curves.png" in figures
    assert any(name.startswith("confusion_density_") for name in figures)
    retrieval = pd.read_csv(out / "retrieval.csv")
    assert set(retrieval.split) == {"train", "test"}
    assert retrieval[["i2t_R@1", "i2t_R@5"]].stack().between(0, 1).all()
    assert (retrieval["i2t_R@5"] >= retrieval["i2t_R@1"]).all()


def test_summary_says_simulated_for_a_simulated_cohort(text_encoder, tmp_path):
    from model.datasets.simulated import simulate_cohort

    cohort = simulate_cohort(150, seed=1, feature_dim=16, signal=2.0)
    mcfg, tcfg = preset("lidc", epochs=1, patience=0, val_fraction=0.0)
    result = cross_validate(cohort, mcfg, tcfg, text_encoder, folds=2)
    write_report(result, cohort, mcfg, tcfg, tmp_path, "lidc")
    assert "SIMULATED" in (tmp_path / "summary.md").read_text().splitlines()[0]
    # unknown values are excluded and counted
    assert result.metrics.n_unknown.sum() > 0
