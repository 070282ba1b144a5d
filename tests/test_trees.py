"""Gradient-boosted trees exported to node arrays predict exactly what scikit-learn does."""

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file
from sklearn.ensemble import HistGradientBoostingClassifier

from model.trees import TreeEnsemble, fit_balanced_trees, probabilities, quantile_bins


def _data(n_classes: int, seed: int = 0, missing: bool = False):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(600, 7))
    y = (x[:, 0] + 0.5 * x[:, 1] ** 2 + rng.normal(scale=0.5, size=600) > 0.3).astype(int)
    if n_classes > 2:
        y = np.digitize(x[:, 0] + x[:, 2] * x[:, 3], [-0.8, 0.0, 0.9][: n_classes - 1])
    if missing:
        x[rng.random(x.shape) < 0.1] = np.nan
    return x, y


@pytest.mark.parametrize("n_classes", [2, 3, 4])
@pytest.mark.parametrize("missing", [False, True])
def test_walk_equals_scikit_learn(n_classes, missing):
    x, y = _data(n_classes, missing=missing)
    clf = HistGradientBoostingClassifier(
        max_iter=25, max_leaf_nodes=15, class_weight="balanced", random_state=0
    ).fit(x[:400], y[:400])
    trees = TreeEnsemble.from_sklearn(clf)
    test = x[400:]
    np.testing.assert_allclose(trees.predict_proba(test), clf.predict_proba(test), atol=1e-12)
    np.testing.assert_allclose(trees.raw_predict(test), clf._raw_predict(test), atol=1e-12)
    # one case at a time, as the service predicts
    np.testing.assert_allclose(
        trees.predict_proba(test[:1]), clf.predict_proba(test[:1]), atol=1e-12
    )


def test_round_trip_through_safetensors(tmp_path):
    x, y = _data(3, seed=1)
    clf = HistGradientBoostingClassifier(max_iter=10, random_state=0).fit(x, y)
    trees = TreeEnsemble.from_sklearn(clf)
    save_file(trees.tensors("f0."), str(tmp_path / "t.safetensors"))
    back = TreeEnsemble.from_tensors(load_file(str(tmp_path / "t.safetensors")), "f0.")
    np.testing.assert_array_equal(back.predict_proba(x), trees.predict_proba(x))
    assert back.depth == trees.depth and back.left.dtype == np.int64


def test_balanced_trees_on_raw_values_split_as_on_their_bins():
    """Fitted on quantile-binned values, the exported trees read raw values: every raw value
    goes where its bin went, so the walk equals scikit-learn on the binned data."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2000, 5))
    x[:, 4] = rng.integers(0, 6, size=2000)  # few distinct values: left unbinned
    y = np.digitize(x[:, 0] + 0.3 * x[:, 4], [0.5, 1.8])  # classes of 60%, 30%, 10%
    binned, edges = quantile_bins(x)
    assert sorted(edges) == [0, 1, 2, 3] and all(len(np.unique(binned[:, f])) <= 255 for f in edges)
    np.testing.assert_array_equal(binned[:, 4], x[:, 4])

    trees, classes = fit_balanced_trees(x, y, seed=0)
    reference = HistGradientBoostingClassifier(
        max_iter=60, max_leaf_nodes=15, class_weight="balanced", early_stopping=True, random_state=0
    ).fit(binned, y)
    np.testing.assert_array_equal(classes, reference.classes_)
    np.testing.assert_allclose(trees.predict_proba(x), reference.predict_proba(binned), atol=1e-12)

    # class balance: the rarest class is found about as often as the commonest
    pred = classes[trees.predict_proba(x).argmax(1)]
    recall = [(pred[y == c] == c).mean() for c in classes]
    assert min(recall) > 0.6, recall


def test_no_split_sits_on_a_training_value():
    """A case equal to a training case but for float rounding (an embedding computed in a
    batch of another size) is walked to the same leaves: every split lies strictly between
    two training values of its feature, never on one."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(1500, 3)).astype(np.float32).astype(np.float64)  # float32 values
    y = (x[:, 0] + x[:, 1] > 0).astype(int)
    trees, _ = fit_balanced_trees(x, y, seed=0)
    split = ~trees.is_leaf
    for f in range(3):
        at = trees.threshold[split & (trees.feature == f)]
        assert len(at) and not np.isin(at, x[:, f]).any()
    for step in (4e-8, -4e-8):
        np.testing.assert_array_equal(trees.raw_predict(x * (1 + step)), trees.raw_predict(x))


def test_ensembles_walked_together_score_as_each_alone():
    parts = []
    for n_classes, seed in ((2, 0), (3, 1), (4, 2)):
        x, y = _data(n_classes, seed=seed)
        parts.append(fit_balanced_trees(x, y, seed=seed)[0])
    merged, columns = TreeEnsemble.concatenate(parts)
    assert [s.stop - s.start for s in columns] == [1, 3, 4]  # binary: one logit column
    x = _data(3, seed=9)[0]
    x[::7, 2] = np.nan  # missing values go where each part sends them
    raw = merged.raw_predict(x)
    for part, cols in zip(parts, columns, strict=True):
        np.testing.assert_allclose(raw[:, cols], part.raw_predict(x), atol=1e-12)
        np.testing.assert_allclose(probabilities(raw[:, cols]), part.predict_proba(x), atol=1e-12)
