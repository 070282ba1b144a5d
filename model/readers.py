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
