"""model.report: the report folder of a cross-validation (tables, figures, summary)."""

import pandas as pd
import pytest

from model.config import preset
from model.evaluate import cross_validate
from model.report import write_report

pytestmark = pytest.mark.slow


def test_report_has_every_fold_field_and_method(cross_validated, lidc_small):
    _, out = cross_validated
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


def test_report_files_figures_and_summary(cross_validated):
    _, out = cross_validated
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
