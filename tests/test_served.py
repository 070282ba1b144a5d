"""The served read-out: chosen on patients its inputs never saw, calibrated, never pickled."""

from dataclasses import replace

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from model.served import (
    CALIBRATION_GRID,
    ISOTONIC_FROM,
    LOGREG_ONLY,
    LOGREG_OR_TREES,
    ServedHead,
    calibration_map,
    centred,
    fit_served,
    inner_folds,
    unseen_split,
    vote_distribution,
)


def _cohort(n: int = 900, seed: int = 0):
    """Field 0 is linear in x, field 1 an XOR of two signs (no linear model can read it),
    field 2 has a single class, field 3 is mostly unknown (-1); 3 cases per patient."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6))
    linear = (x[:, 0] + 0.3 * rng.normal(size=n) > 0).astype(int)
    xor = ((x[:, 1] > 0) ^ (x[:, 2] > 0)).astype(int)
    constant = np.full(n, 2)
    sparse = np.where(rng.random(n) < 0.9, -1, (x[:, 3] > 0).astype(int))
    y = np.stack([linear, xor, constant, sparse], 1)
    groups = np.repeat(np.arange(n // 3), 3)
    return x, y, groups


def test_each_field_serves_the_blend_of_a_linear_and_a_tree_read_out():
    x, y, groups = _cohort()
    served = fit_served(x[:600], y[:600], groups[:600], [2, 2, 3, 2], seed=0)
    readouts = [f.readout for f in served.fields]
    assert all("gradient boosting averaged" in r for r in readouts[:2])
    assert readouts[2] == "constant"
    pred, confidence, dists = served.predict(x[600:])
    assert (pred[:, 1] == y[600:, 1]).mean() > 0.85  # the trees' half reads the XOR
    assert (pred[:, 0] == y[600:, 0]).mean() > 0.85
    assert (pred[:, 2] == 2).all()
    assert np.all((confidence > 0) & (confidence < 1))
    for j, d in enumerate(dists):
        np.testing.assert_allclose(d.sum(1), 1.0, atol=1e-5)
        np.testing.assert_allclose(d[np.arange(len(d)), pred[:, j]], confidence[:, j])
    # The blend is the mean of its two parts' probabilities.
    head = served.fields[1]
    z = (x[600:] - served.mean) / served.scale
    linear = replace(head, trees=None, tree_classes=None)
    trees = replace(head, C=0.0)
    assert linear.readout.startswith("logistic regression") and "boosting" in trees.readout
    np.testing.assert_allclose(head.raw_proba(z), (linear.raw_proba(z) + trees.raw_proba(z)) / 2)


def test_each_kind_alone_serves_the_one_that_wins_on_held_out_patients():
    x, y, groups = _cohort()
    served = fit_served(x[:600], y[:600], groups[:600], [2, 2, 3, 2], candidates=LOGREG_OR_TREES)
    readouts = [f.readout for f in served.fields]
    assert readouts[1] == "gradient boosting, balanced"  # the XOR field
    assert readouts[0].startswith("logistic regression, balanced")
    assert (served.predict(x[600:])[0][:, 1] == y[600:, 1]).mean() > 0.85


def test_logistic_only_never_serves_trees():
    x, y, groups = _cohort()
    served = fit_served(x, y, groups, [2, 2, 3, 2], candidates=LOGREG_ONLY)
    assert all("gradient boosting" not in f.readout for f in served.fields)


def test_the_probability_is_calibrated_on_held_out_predictions():
    x, y, groups = _cohort(n=1500, seed=1)
    served = fit_served(x[:1200], y[:1200], groups[:1200], [2, 2, 3, 2], seed=1)
    head = served.fields[0]
    assert len(head.calib_x) > 2  # an isotonic map, not the identity
    assert np.all(np.diff(head.calib_y) >= 0)
    pred, confidence, _ = served.predict(x[1200:])
    correct = pred[:, 0] == y[1200:, 0]
    # stated confidence matches the observed accuracy on unseen patients
    assert abs(confidence[:, 0].mean() - correct.mean()) < 0.06


def test_the_calibration_map_has_no_jumps():
    """Blocks meeting at nearly the same raw probability are joined at their centres, so a
    raw probability moved by rounding moves the stated one by about as little."""
    x = np.array([0.50, 0.60, 0.6000001, 0.70, 0.90])  # an isotonic fit's block ends ...
    y = np.array([0.40, 0.40, 0.80, 0.80, 0.95])  # ... two blocks meet at 0.6
    cx, cy = centred(x, y)
    np.testing.assert_allclose(cx, [0.55, 0.65000005, 0.90])
    np.testing.assert_allclose(cy, [0.40, 0.80, 0.95])
    before, after = np.interp([0.6, 0.6000001], x, y), np.interp([0.6, 0.6000001], cx, cy)
    assert before[1] - before[0] > 0.3 and after[1] - after[0] < 1e-5

    data, labels, groups = _cohort(n=1500, seed=1)
    head = fit_served(data, labels, groups, [2, 2, 3, 2], seed=1).fields[0]
    assert np.all(np.diff(head.calib_x) > 0) and np.all(np.diff(head.calib_y) > 0)
    grid = np.linspace(0, 1, 100_001)
    steps = np.abs(np.diff(head.calibrate(grid)))
    assert steps.max() < 0.01  # a raw move of 1e-5 never moves the stated probability 1%


def test_round_trip_through_safetensors_keeps_every_prediction(tmp_path):
    x, y, groups = _cohort()
    served = fit_served(x, y, groups, [2, 2, 3, 2])
    save_file(served.tensors(), str(tmp_path / "served.safetensors"))
    back = ServedHead.from_tensors(load_file(str(tmp_path / "served.safetensors")), 4)
    assert [f.readout for f in back.fields] == [f.readout for f in served.fields]
    (pred_a, conf_a, dist_a), (pred_b, conf_b, dist_b) = served.predict(x), back.predict(x)
    np.testing.assert_array_equal(pred_a, pred_b)
    np.testing.assert_allclose(conf_a, conf_b, atol=1e-12)
    for a, b in zip(dist_a, dist_b, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-12)


def test_too_few_patients_for_inner_folds_still_fits_uncalibrated():
    x, y, groups = _cohort(n=60)
    groups = np.where(groups < 10, 0, 1)  # two patients
    assert inner_folds(groups, 0) == []
    served = fit_served(x, y, groups, [2, 2, 3, 2])
    assert served.fields[0].readout.startswith("logistic regression")
    np.testing.assert_array_equal(served.fields[0].calib_x, [0.0, 1.0])


def test_inner_folds_never_split_a_patient():
    groups = np.repeat(np.arange(40), 4)
    folds = inner_folds(groups, seed=3)
    assert len(folds) == 3
    for fit, held in folds:
        assert not set(groups[fit]) & set(groups[held])
    assert sorted(np.concatenate([h for _, h in folds])) == list(range(len(groups)))


def _leaky_embedding(seed: int = 0):
    """Slice features (2 columns) that carry field 0 with noise, and an 'embedding' column
    that equals the label on the patients it was trained on and is noise on everyone else:
    an overfit embedding, as the CLIP model's is on its own training patients."""
    rng = np.random.default_rng(seed)
    n = 1500
    groups = np.repeat(np.arange(n // 3), 3)
    slices = rng.normal(size=(n, 2))
    y = (slices[:, 0] + 0.5 * rng.normal(size=n) > 0).astype(int)
    trained_on = groups < 300  # the embedding's training patients
    embedding = np.where(trained_on, y + 0.05 * rng.normal(size=n), rng.normal(size=n))
    x = np.column_stack([slices, embedding])
    labels = np.column_stack([y, y])
    unseen = np.flatnonzero((groups >= 300) & (groups < 400))  # its early-stopping patients
    train = np.flatnonzero(groups < 400)
    test = np.flatnonzero(groups >= 400)
    return x, labels, groups, train, unseen, test


def test_patients_the_embedding_never_saw_choose_the_read_out():
    x, y, groups, train, unseen, test = _leaky_embedding()
    # Inner folds of the embedding's own patients believe it: the leaky column wins.
    fooled = fit_served(x[train], y[train], groups[train], [2, 2], slice_columns=2)
    assert not fooled.fields[0].slices_only
    # The unseen patients see through it: a slice-features-only read-out serves.
    served = fit_served(x[train], y[train], groups[train], [2, 2], unseen=unseen, slice_columns=2)
    head = served.fields[0]
    assert head.slices_only and head.readout.endswith("slice features only")
    assert np.all(head.weights[:, 2] == 0) or head.trees is not None
    right = (served.predict(x[test])[0][:, 0] == y[test, 0]).mean()
    wrong = (fooled.predict(x[test])[0][:, 0] == y[test, 0]).mean()
    assert right > 0.8 and right > wrong + 0.04  # (0.85 against 0.78)
    # ... and its calibration comes from those patients too: stated matches observed.
    confidence = served.predict(x[test])[1][:, 0]
    assert abs(confidence.mean() - right) < 0.06


def test_the_unseen_split_never_splits_a_patient():
    groups = np.repeat(np.arange(40), 4)
    ((fit, held),) = unseen_split(groups, np.flatnonzero(groups >= 28))
    assert set(groups[held]) == set(range(28, 40)) and set(groups[fit]) == set(range(28))
    with np.testing.assert_raises(ValueError):
        unseen_split(groups, np.flatnonzero(groups >= 28)[1:])  # patient 28 on both sides
    assert unseen_split(groups, np.flatnonzero(groups >= 35)) == []  # 5 patients: too few


def test_slice_only_read_outs_round_trip_through_safetensors(tmp_path):
    x, y, groups, train, unseen, _ = _leaky_embedding()
    served = fit_served(x[train], y[train], groups[train], [2, 2], unseen=unseen, slice_columns=2)
    save_file(served.tensors(), str(tmp_path / "served.safetensors"))
    back = ServedHead.from_tensors(load_file(str(tmp_path / "served.safetensors")), 2)
    assert [f.readout for f in back.fields] == [f.readout for f in served.fields]
    assert back.fields[0].slices_only


def test_few_held_out_predictions_get_a_two_parameter_map():
    """A few hundred held-out predictions: a Platt map (smooth, rising, close to the truth);
    from ISOTONIC_FROM on: the isotonic one."""
    rng = np.random.default_rng(4)
    raw = rng.uniform(0.34, 1.0, 5000)
    truth = 1 / (1 + np.exp(-(2.0 * np.log(raw / (1 - raw + 1e-9)) - 0.5)))  # overconfident
    correct = (rng.random(5000) < truth).astype(float)

    x, y = calibration_map(raw[:400], correct[:400], seed=0)
    assert len(x) == CALIBRATION_GRID and np.all(np.diff(y) > 0)
    grid = np.linspace(0.4, 0.95, 12)
    expected = np.interp(grid, np.sort(raw), truth[np.argsort(raw)])
    assert np.abs(np.interp(grid, x, y) - expected).max() < 0.08
    assert np.abs(np.diff(np.interp(np.linspace(0, 1, 100_001), x, y))).max() < 0.01

    x_iso, _ = calibration_map(raw[:ISOTONIC_FROM], correct[:ISOTONIC_FROM], seed=0)
    assert len(x_iso) != CALIBRATION_GRID  # one point per isotonic block


def _vote_knows_field_1(seed: int = 0):
    """Slice features carry field 0; nothing in x carries field 1, but retrieval's vote
    names it right 9 times in 10 (and is noise for field 0)."""
    rng = np.random.default_rng(seed)
    n = 1500
    groups = np.repeat(np.arange(n // 3), 3)
    x = rng.normal(size=(n, 3))
    y0 = (x[:, 0] + 0.5 * rng.normal(size=n) > 0).astype(int)
    y1 = rng.integers(0, 3, n)
    named = np.where(rng.random(n) < 0.9, y1, rng.integers(0, 3, n))
    votes = [np.eye(2)[rng.integers(0, 2, n)], np.eye(3)[named] * 0.8 + 0.2 / 3]
    y = np.column_stack([y0, y1])
    train, test = np.flatnonzero(groups < 400), np.flatnonzero(groups >= 400)
    unseen = np.flatnonzero((groups >= 300) & (groups < 400))
    return x, y, groups, votes, train, unseen, test


def test_retrievals_vote_serves_where_it_wins_on_unseen_patients(tmp_path):
    x, y, groups, votes, train, unseen, test = _vote_knows_field_1()
    # Only the unseen patients' votes may count: the others' are poisoned (always class 0);
    # fit_served must not read them.
    given = [v[train].copy() for v in votes]
    given[1][~np.isin(train, unseen)] = np.eye(3)[0]
    position = np.flatnonzero(np.isin(train, unseen))
    served = fit_served(
        x[train], y[train], groups[train], [2, 3], unseen=position, slice_columns=2, votes=given
    )
    noise, knows = served.fields
    assert noise.vote_weight == 0 and knows.vote_weight > 0 and served.reads_votes
    assert "vote" in knows.readout and "vote" not in noise.readout
    with pytest.raises(ValueError, match="needs the retrieved texts' vote"):
        served.predict(x[test])
    pred, confidence, _ = served.predict(x[test], [v[test] for v in votes])
    assert (pred[:, 1] == y[test, 1]).mean() > 0.85  # what the vote knows, and x does not
    assert (pred[:, 0] == y[test, 0]).mean() > 0.75
    # Calibrated on the unseen patients: stated about matches observed.
    assert abs(confidence[:, 1].mean() - (pred[:, 1] == y[test, 1]).mean()) < 0.06
    save_file(served.tensors(), str(tmp_path / "served.safetensors"))
    back = ServedHead.from_tensors(load_file(str(tmp_path / "served.safetensors")), 2)
    assert [f.vote_weight for f in back.fields] == [f.vote_weight for f in served.fields]
    assert back.vote_k == served.vote_k
    np.testing.assert_array_equal(back.predict(x[test], [v[test] for v in votes])[0], pred)


def test_without_unseen_patients_the_vote_is_not_offered():
    x, y, groups, votes, train, _, _ = _vote_knows_field_1()
    served = fit_served(
        x[train], y[train], groups[train], [2, 3], slice_columns=2, votes=[v[train] for v in votes]
    )
    assert not served.reads_votes
    served.predict(x[:5])  # needs no vote


def test_a_case_no_text_voted_on_gets_the_uniform_distribution():
    shares = vote_distribution(np.array([[0.0, 0.0, 0.0], [2.0, 1.0, 1.0]]))
    np.testing.assert_allclose(shares, [[1 / 3, 1 / 3, 1 / 3], [0.5, 0.25, 0.25]])
