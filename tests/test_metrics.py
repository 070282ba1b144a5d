import numpy as np
import pytest
from pytest import approx

from model.metrics import (
    classification_report,
    confusion,
    image_to_text_recall,
    text_to_image_recall,
)

# Three classes; the sixth case has an unknown truth, the fourth an unknown prediction.
Y_TRUE = [0, 0, 1, 1, 2, -1, 2]
Y_PRED = [0, 1, 1, -1, 2, 0, 0]


def test_confusion_leaves_out_unknown_truths_and_counts_unknown_predictions():
    expected = [
        [1, 1, 0, 0],
        [0, 1, 0, 1],  # the last column: predicted unknown
        [1, 0, 1, 0],
    ]
    assert confusion(Y_TRUE, Y_PRED, 3).tolist() == expected
    assert confusion([], [], 2).shape == (2, 3)


def test_classification_report_by_hand():
    r = classification_report(Y_TRUE, Y_PRED, 3, ordinal=False)
    assert r["n"] == 6 and r["n_unknown"] == 1
    assert r["accuracy"] == approx(3 / 6)
    assert [r[f"precision/{k}"] for k in range(3)] == approx([1 / 2, 1 / 2, 1])
    assert [r[f"recall/{k}"] for k in range(3)] == approx([1 / 2, 1 / 2, 1 / 2])
    assert [r[f"f1/{k}"] for k in range(3)] == approx([1 / 2, 1 / 2, 2 / 3])
    assert [r[f"support/{k}"] for k in range(3)] == [2, 2, 2]
    assert r["macro_f1"] == approx((1 / 2 + 1 / 2 + 2 / 3) / 3)
    assert r["macro_precision"] == approx(2 / 3)
    assert r["macro_recall"] == approx(1 / 2)
    assert "qwk" not in r and "within1_accuracy" not in r


def test_macro_f1_averages_only_classes_present_in_the_truth():
    r = classification_report([0, 0, 1], [0, 2, 1], 3, ordinal=False)
    # class 2 is predicted once but never true: precision 0, no support, not averaged
    assert r["precision/2"] == 0.0 and r["recall/2"] == 0.0 and r["f1/2"] == 0.0
    assert r["support/2"] == 0
    assert r["macro_f1"] == approx((2 / 3 + 1) / 2)


def test_ordinal_metrics_by_hand():
    # truth 2 predicted unknown counts as class 0, the farthest: predictions become [1, 1, 0, 0]
    r = classification_report([0, 1, 2, 2], [1, 1, 0, -1], 3, ordinal=True)
    assert r["within1_accuracy"] == approx(2 / 4)
    # quadratic weights (i-j)^2: sum w*O = 1 + 8 = 9, sum w*E = 0.5 + 0.5 + 4 + 1 = 6
    assert r["qwk"] == approx(1 - 9 / 6)
    assert classification_report([0, 1, 2], [0, 1, 2], 3, ordinal=True)["qwk"] == approx(1.0)


def test_predicted_unknown_is_never_within_one():
    r = classification_report([0, 1], [-1, -1], 3, ordinal=True)
    assert r["within1_accuracy"] == 0.0  # |-1 - 0| is 1 but "not assessed" is no answer
    assert r["accuracy"] == 0.0
    assert r["qwk"] <= 0.0


def test_degenerate_inputs_give_zeros_not_nan():
    everything_unknown = classification_report([-1, -1], [0, 1], 2, ordinal=True)
    assert everything_unknown["n"] == 0 and everything_unknown["n_unknown"] == 2
    single_class = classification_report([1, 1, 1], [1, 1, 1], 3, ordinal=True)
    assert single_class["accuracy"] == 1.0 and single_class["macro_f1"] == 1.0
    assert single_class["qwk"] == 0.0  # kappa is undefined with one class
    empty = classification_report([], [], 2, ordinal=True)
    for r in (everything_unknown, single_class, empty):
        assert all(np.isfinite(v) for v in r.values())


def test_bad_labels_are_refused():
    with pytest.raises(ValueError):
        classification_report([0, 3], [0, 1], 3, ordinal=False)
    with pytest.raises(ValueError):
        confusion([0, 1], [0], 2)


# Five images, four texts. Image 2's scores all tie, image 3's text is not in the catalog,
# text 0 has two images (0 and 4), text 2 has none.
SIMILARITY = np.array(
    [
        [0.9, 0.1, 0.5, 0.3],
        [0.2, 0.8, 0.9, 0.1],
        [0.5, 0.5, 0.5, 0.5],
        [0.1, 0.2, 0.3, 0.6],
        [0.0, 0.3, 0.2, 0.1],
    ]
)
TRUE_TEXT = [0, 1, 3, -1, 0]


def test_image_to_text_recall_by_hand():
    r = image_to_text_recall(SIMILARITY, TRUE_TEXT, ks=(1, 2, 4))
    # texts scoring at least as high as the true one: 0, 1, 3 (ties), miss, 3
    assert r == approx({"i2t_R@1": 1 / 5, "i2t_R@2": 2 / 5, "i2t_R@4": 4 / 5})


def test_text_to_image_recall_by_hand():
    r = text_to_image_recall(SIMILARITY, TRUE_TEXT, ks=(1, 2))
    # text 0: image 0 first; text 1: image 1 first; text 3: image 3 (not its own) beats image 2
    assert r == approx({"t2i_R@1": 2 / 3, "t2i_R@2": 1.0})


def test_recall_of_a_perfect_and_of_a_constant_similarity():
    truth = np.arange(4)
    assert image_to_text_recall(np.eye(4), truth, ks=(1,)) == {"i2t_R@1": 1.0}
    assert text_to_image_recall(np.eye(4), truth, ks=(1,)) == {"t2i_R@1": 1.0}
    assert image_to_text_recall(np.ones((4, 4)), truth, ks=(1, 4)) == {
        "i2t_R@1": 0.0,
        "i2t_R@4": 1.0,
    }
    assert text_to_image_recall(np.ones((4, 4)), truth, ks=(1,)) == {"t2i_R@1": 0.0}


def test_recall_without_any_catalogued_text_is_zero():
    sim = np.zeros((2, 3))
    assert image_to_text_recall(sim, [-1, -1]) == {"i2t_R@1": 0.0, "i2t_R@5": 0.0}
    assert text_to_image_recall(sim, [-1, -1]) == {"t2i_R@1": 0.0, "t2i_R@5": 0.0}
    assert image_to_text_recall(np.zeros((0, 3)), []) == {"i2t_R@1": 0.0, "i2t_R@5": 0.0}


def test_agrees_with_sklearn_when_nothing_is_unknown():
    from sklearn.metrics import cohen_kappa_score, precision_recall_fscore_support

    rng = np.random.default_rng(0)
    t, p = rng.integers(0, 4, 200), rng.integers(0, 4, 200)
    r = classification_report(t, p, 4, ordinal=True)
    precision, recall, f1, support = precision_recall_fscore_support(
        t, p, labels=range(4), zero_division=0.0
    )
    assert [r[f"precision/{k}"] for k in range(4)] == approx(precision)
    assert [r[f"recall/{k}"] for k in range(4)] == approx(recall)
    assert [r[f"f1/{k}"] for k in range(4)] == approx(f1)
    assert r["macro_f1"] == approx(f1.mean())
    assert r["qwk"] == approx(cohen_kappa_score(t, p, weights="quadratic"))
