"""Per-field read-outs of retrieved texts: the similarity-weighted vote."""

import numpy as np
import pytest

from model.retrieval import vote_fields


def vote_one_value_at_a_time(sims, ids, catalog_labels, n_classes):
    """The vote as first written (one numpy sum per field and value): the reference."""
    labels = catalog_labels[ids]
    weights = np.clip(sims, 0.0, None) + 1e-9
    preds = np.full(labels.shape[::2], -1, np.int64)
    shares = np.zeros(preds.shape)
    tallies = []
    for j, c in enumerate(n_classes):
        tally = np.zeros((len(ids), c))
        for value in range(c):
            tally[:, value] = (weights * (labels[:, :, j] == value)).sum(1)
        total = tally.sum(1, keepdims=True)
        voted = total[:, 0] > 0
        tally = np.divide(tally, total, out=np.zeros_like(tally), where=total > 0)
        preds[voted, j] = tally[voted].argmax(1)
        shares[voted, j] = tally[voted].max(1)
        tallies.append(tally)
    return preds, shares, tallies


def test_a_hand_counted_vote():
    # two fields (3 and 2 values); four texts, the last one stating neither field
    catalog = np.array([[0, 1], [2, 1], [0, -1], [-1, -1]])
    sims = np.array([[0.5, 0.25, 0.125, 0.9]])
    preds, shares, tallies = vote_fields(sims, np.array([[0, 1, 2, 3]]), catalog, [3, 2])
    w = sims[0, :3] + 1e-9
    np.testing.assert_allclose(tallies[0][0], [(w[0] + w[2]) / w.sum(), 0, w[1] / w.sum()])
    np.testing.assert_allclose(tallies[1][0], [0, 1])
    assert preds.tolist() == [[0, 1]] and shares[0, 1] == 1.0


@pytest.mark.parametrize("k", [1, 5, 12])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_vote_equals_one_value_at_a_time_to_the_last_bit(k, dtype):
    rng = np.random.default_rng(k)
    n_classes = [3, 5, 2, 4, 1]
    catalog = np.stack([rng.integers(-1, c, size=300) for c in n_classes], axis=1)
    catalog[:20] = -1  # texts that state nothing
    ids = rng.integers(0, 300, size=(200, k))
    ids[:10] = rng.integers(0, 20, size=(10, k))  # cases whose texts state nothing: no vote
    sims = rng.uniform(-0.3, 1.0, size=(200, k)).astype(dtype)  # some point away: weight 0
    got = vote_fields(sims, ids, catalog, n_classes)
    want = vote_one_value_at_a_time(sims, ids, catalog, n_classes)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    for g, w in zip(got[2], want[2], strict=True):
        assert g.dtype == w.dtype
        np.testing.assert_array_equal(g, w)
    assert (got[0][:10] == -1).all()
