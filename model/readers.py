"""How much radiologists agree with each other, on the same bins the model is scored on.

LIDC-IDRI has up to four reads per nodule and they disagree; a model cannot be held to more
agreement with one read than another reader has. Two read-outs of that agreement, as
(truth, prediction) pairs that the usual metrics score:

- ``reader_pair``: every ordered pair of two reads of one nodule (one read "predicts" the other);
- ``reader_loo``: each read against the majority of the other reads of its nodule (ties go to
  the lower class code, e.g. the less suspicious value of an ordinal field).
Reads whose value is unknown take no part; nodules with a single known read give no pair.
"""

from __future__ import annotations

import numpy as np

READER_METHODS = ("reader_pair", "reader_loo")


def reader_pairs(labels: np.ndarray, nodules: np.ndarray) -> dict[str, list[tuple]]:
    """Per read-out, one (truth [m], prediction [m]) per field of `labels` [n, fields]."""
    labels = np.asarray(labels)
    nodules = np.asarray(nodules)
    groups = [np.flatnonzero(nodules == n) for n in np.unique(nodules)]
    out: dict[str, list[tuple]] = {m: [] for m in READER_METHODS}
    for j in range(labels.shape[1]):
        pair_t, pair_p, loo_t, loo_p = [], [], [], []
        for g in groups:
            values = labels[g, j]
            values = values[values >= 0]
            if len(values) < 2:
                continue
            for a in range(len(values)):
                others = np.delete(values, a)
                pair_t += [values[a]] * len(others)
                pair_p += list(others)
                loo_t.append(values[a])
                loo_p.append(int(np.bincount(others).argmax()))  # ties: lowest code
        out["reader_pair"].append((np.asarray(pair_t, np.int64), np.asarray(pair_p, np.int64)))
        out["reader_loo"].append((np.asarray(loo_t, np.int64), np.asarray(loo_p, np.int64)))
    return out


def reader_distributions(
    labels: np.ndarray, nodules: np.ndarray, n_classes: list[int]
) -> list[np.ndarray]:
    """Per field, float32 [n, classes]: each read's row is its nodule's distribution of known
    reader values (the read itself included); all zeros where no read of the nodule is known."""
    labels = np.asarray(labels)
    _, group = np.unique(np.asarray(nodules), return_inverse=True)
    out = []
    for j, k in enumerate(n_classes):
        known = labels[:, j] >= 0
        counts = np.zeros((group.max() + 1, k))
        np.add.at(counts, (group[known], labels[known, j]), 1.0)
        totals = counts.sum(1, keepdims=True)
        dist = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
        out.append(dist[group].astype(np.float32))
    return out


def nodule_scores(
    labels: np.ndarray, nodules: np.ndarray, pred: np.ndarray, dist: np.ndarray | None
) -> dict[str, float]:
    """One field scored per nodule against its readers, not per read.

    `labels` [n] the reads' values (-1 unknown), `pred` [n] a method's answer per read and
    `dist` [n, classes] its distribution (None if it states none). The nodule's answer is the
    mean of its reads' distributions (without one: the most frequent answer). Returns
    "nodule_agreement" (share of nodules whose answer is their readers' majority; ties go to
    the lower code as in ``reader_loo``), "reader_nll" (mean cross-entropy of the readers'
    distribution under the nodule's answer; NaN without `dist`) and "nodules".
    """
    labels, nodules, pred = np.asarray(labels), np.asarray(nodules), np.asarray(pred)
    agree, nll = [], []
    for n in np.unique(nodules):
        reads = np.flatnonzero(nodules == n)
        values = labels[reads][labels[reads] >= 0]
        if len(values) == 0:
            continue
        k = int(max(values.max(), pred[reads].max()) + 1)
        if dist is not None:
            k = np.asarray(dist).shape[1]
            answer = np.asarray(dist, float)[reads].mean(0)
            q = np.bincount(values, minlength=k) / len(values)
            nll.append(float(-(q * np.log(np.clip(answer, 1e-12, 1.0))).sum()))
            chosen = int(answer.argmax())
        else:
            chosen = int(np.bincount(pred[reads], minlength=k).argmax())
        agree.append(chosen == int(np.bincount(values, minlength=k).argmax()))
    return {
        "nodule_agreement": float(np.mean(agree)) if agree else float("nan"),
        "reader_nll": float(np.mean(nll)) if nll else float("nan"),
        "nodules": len(agree),
    }
