import numpy as np
import pytest
from scipy.stats.contingency import association, crosstab
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupShuffleSplit

from model.cohort import Cohort
from model.datasets.simulated import simulate_cohort
from model.schema import UNKNOWN


@pytest.fixture(scope="module")
def large():
    """Enough cases for proportions; tiny features keep it fast (labels do not depend on them)."""
    return simulate_cohort(5000, seed=3, feature_dim=4)


def _column(cohort, name):
    return cohort.labels[:, cohort.schema.field_names.index(name)]


def _cramers_v(cohort, a, b):
    x, y = _column(cohort, a), _column(cohort, b)
    known = (x != UNKNOWN) & (y != UNKNOWN)
    return association(crosstab(x[known], y[known]).count, method="cramer")


def _normalised_entropy(col, k):
    p = np.bincount(col[col != UNKNOWN], minlength=k) / (col != UNKNOWN).sum()
    p = p[p > 0]
    return float(-(p * np.log(p)).sum() / np.log(k))


def _mean_pooled(cohort):
    return np.stack([cohort.slices(i).mean(axis=0) for i in range(len(cohort))])


def test_same_seed_same_cohort_and_chunk_size_does_not_matter():
    a = simulate_cohort(700, seed=7, feature_dim=16, chunk=300)
    b = simulate_cohort(700, seed=7, feature_dim=16, chunk=5000)
    c = simulate_cohort(700, seed=8, feature_dim=16)
    assert a.cases.equals(b.cases)
    np.testing.assert_array_equal(a.features, b.features)
    assert a.content_hash() == b.content_hash()
    assert not np.array_equal(a.labels, c.labels)


def test_everything_is_labelled_simulated(tmp_path):
    cohort = simulate_cohort(20, tmp_path / "sim", feature_dim=8)
    for c in (cohort, Cohort.load(tmp_path / "sim"), simulate_cohort(20, feature_dim=8)):
        assert c.simulated is True
        assert c.name.startswith("simulated")
        assert c.source.startswith("SIMULATED")
        assert c.describe()["simulated"] is True


def test_class_proportions_and_imbalance_order(large):
    schema = large.schema
    entropy = {
        f.name: _normalised_entropy(_column(large, f.name), len(f.values)) for f in schema.fields
    }
    assert min(entropy, key=entropy.get) == "vinfiltration"
    assert max(entropy, key=entropy.get) == "shape"
    vinf = _column(large, "vinfiltration")
    present = (vinf == 1).sum() / (vinf != UNKNOWN).sum()
    assert 0.09 < present < 0.15  # about 88/12
    shape = np.bincount(_column(large, "shape")[_column(large, "shape") >= 0], minlength=4)
    assert shape.min() / shape.sum() > 0.17  # no rare shape
    for j, f in enumerate(schema.fields):  # every class occurs
        assert set(large.labels[:, j]) == {UNKNOWN, *range(len(f.values))}


def test_density_and_cdiff_are_associated_like_the_thesis(large):
    v_density = _cramers_v(large, "density", "cdiff")
    v_shape = _cramers_v(large, "shape", "cdiff")
    v_independent = _cramers_v(large, "vinfiltration", "necrosis")
    assert 0.24 < v_density < 0.36  # thesis: 0.30
    assert 0.08 < v_shape < v_density
    assert v_independent < 0.05


def test_each_field_is_missing_at_the_given_rate(large):
    rates = (large.labels == UNKNOWN).mean(axis=0)
    assert np.all(np.abs(rates - 0.05) < 0.015)
    assert simulate_cohort(200, feature_dim=4, missing_rate=0.0).labels.min() >= 0
    # a missing value is an empty cell in the case table
    assert large.cases["shape"].isna().sum() == (_column(large, "shape") == UNKNOWN).sum()


def test_slices_and_patients(large):
    n_slices = large.cases["n_slices"]
    assert n_slices.min() == 3 and n_slices.max() == 12
    assert 7.0 < n_slices.mean() < 8.0
    assert len(large.features) == n_slices.sum()
    cases_per_patient = len(large) / len(set(large.patients))
    assert 1.2 < cases_per_patient < 1.4
    assert large.cases["case_id"].is_unique


def test_signal_makes_shape_predictable():
    def shape_accuracy(signal):
        cohort = simulate_cohort(800, seed=11, signal=signal, feature_dim=64, missing_rate=0.0)
        x, y = _mean_pooled(cohort), _column(cohort, "shape")
        split = GroupShuffleSplit(n_splits=1, test_size=0.3, random_state=0)
        train, test = next(split.split(x, y, groups=cohort.patients))  # unseen patients
        clf = LogisticRegression(C=0.01, max_iter=1000).fit(x[train], y[train])
        return clf.score(x[test], y[test])

    without, with_signal = shape_accuracy(0.0), shape_accuracy(2.0)
    assert without < 0.36  # four classes, the largest ~30%: chance
    assert with_signal > 0.6  # the other four fields' directions act as noise for shape
    assert with_signal - without > 0.3


def test_saved_to_disk_and_loaded_back_equal(tmp_path):
    in_memory = simulate_cohort(300, seed=5, feature_dim=32, chunk=100)
    returned = simulate_cohort(300, tmp_path / "cohort", seed=5, feature_dim=32, chunk=100)
    loaded = Cohort.load(tmp_path / "cohort")
    assert isinstance(loaded.features, np.memmap)
    for c in (returned, loaded):
        np.testing.assert_array_equal(c.features, in_memory.features)
        np.testing.assert_array_equal(c.labels, in_memory.labels)
        assert c.cases.to_csv(index=False) == in_memory.cases.to_csv(index=False)
        assert c.content_hash() == in_memory.content_hash()
        assert c.name == in_memory.name and c.extra == in_memory.extra
        assert c.texts() == in_memory.texts()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cohort"]  # no temporary left


def test_saving_again_replaces_the_cohort(tmp_path):
    simulate_cohort(50, tmp_path / "c", seed=1, feature_dim=8)
    again = simulate_cohort(80, tmp_path / "c", seed=2, feature_dim=8)
    assert len(Cohort.load(tmp_path / "c")) == 80 == len(again)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]


def test_cohort_save_round_trip_still_works(tmp_path):
    cohort = simulate_cohort(40, feature_dim=8)
    cohort.save(tmp_path / "saved")
    loaded = Cohort.load(tmp_path / "saved")
    assert loaded.content_hash() == cohort.content_hash()
    assert loaded.simulated and loaded.extra == cohort.extra


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n": 0},
        {"missing_rate": 1.0},
        {"min_slices": 5, "max_slices": 4},
        {"patients_per_case": 1.3},
    ],
)
def test_bad_arguments_are_refused(kwargs):
    args = {"n": 10, "feature_dim": 4, **kwargs}
    with pytest.raises(ValueError):
        simulate_cohort(**args)
