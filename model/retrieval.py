"""From retrieved catalog texts to per-field predictions (shared by evaluation and inference)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def top1_fields(ids: np.ndarray, catalog_labels: np.ndarray) -> np.ndarray:
    """Per field, the value stated by the best-ranked retrieved text that states it.

    ids: (n, k) catalog rows by rank. Returns int64 (n, fields), -1 where no text states it.
    With every field known in the catalog this is exactly the thesis's top-1 text.
    """
    labels = catalog_labels[ids]  # (n, k, fields)
    known = labels >= 0
    first = known.argmax(axis=1)  # (n, fields)
    picked = np.take_along_axis(labels, first[:, None, :], axis=1)[:, 0]
    return np.where(known.any(axis=1), picked, -1)


def vote_fields(
    sims: np.ndarray, ids: np.ndarray, catalog_labels: np.ndarray, n_classes: Sequence[int]
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Similarity-weighted vote over the top-k texts, per field.

    Weights are the cosine similarities clipped at zero (texts pointing away do not vote).
    Returns (prediction (n, fields), share of the winner (n, fields), per-field tallies
    [(n, classes)] normalised to sum 1 where any text voted).
    """
    labels = catalog_labels[ids]  # (n, k, fields)
    weights = np.clip(sims, 0.0, None) + 1e-9  # (n, k)
    preds = np.full(labels.shape[::2], -1, np.int64)  # (n, fields)
    shares = np.zeros(preds.shape)
    tallies = []
    # Every value of every field in one pass. Each value's weights are summed over its k texts
    # as one contiguous row (order="C"), as numpy sums an (n, k) array: a strided row would be
    # summed in another order, and the tallies would lose their last bits.
    values = np.arange(max(n_classes, default=0))[:, None]  # (values, 1)
    stated = np.equal(labels.transpose(0, 2, 1)[:, :, None, :], values, order="C")
    votes = np.multiply(weights[:, None, None, :], stated, order="C")  # (n, fields, values, k)
    sums = votes.sum(3)  # (n, fields, values)
    for j, c in enumerate(n_classes):
        tally = sums[:, j, :c].astype(np.float64)
        total = tally.sum(1, keepdims=True)
        voted = total[:, 0] > 0
        tally = np.divide(tally, total, out=np.zeros_like(tally), where=total > 0)
        preds[voted, j] = tally[voted].argmax(1)
        shares[voted, j] = tally[voted].max(1)
        tallies.append(tally)
    return preds, shares, tallies


def zero_shot(image: np.ndarray, value_texts: np.ndarray, scale: float) -> np.ndarray:
    """Softmax over a field's values of -distance x scale: (n, d) x (v, d) -> (n, v)."""
    d2 = np.clip(2.0 - 2.0 * image @ value_texts.T, 0.0, None)  # unit vectors
    logits = -np.sqrt(d2) * scale
    logits -= logits.max(1, keepdims=True)
    p = np.exp(logits)
    return p / p.sum(1, keepdims=True)


def exact_vote(
    case_emb: np.ndarray,
    catalog_emb: np.ndarray,
    catalog_labels: np.ndarray,
    n_classes: Sequence[int],
    k: int,
) -> list[np.ndarray]:
    """Per field, the similarity-weighted vote shares [n, classes] over each case's k most
    similar catalog texts (an exact search over unit vectors: what the service's flat
    catalog index finds)."""
    sims = np.asarray(case_emb, np.float32) @ np.asarray(catalog_emb, np.float32).T
    k = min(k, sims.shape[1])
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    top = np.take_along_axis(sims, order, axis=1)
    return vote_fields(top, order, catalog_labels, n_classes)[2]
