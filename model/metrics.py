"""Evaluation metrics as pure functions: arrays in, flat dicts (or small arrays) out.

Per-field classification metrics score the descriptors parsed from a retrieved text against the
truth (thesis, section 6.3); retrieval recall scores the ranking itself. Class codes are ints
with ``UNKNOWN`` (-1) for a missing value, as in a cohort's label matrix:

* a case whose TRUE value is unknown cannot be scored and is left out (counted in
  ``n_unknown``);
* a PREDICTED unknown ("not assessed") for a known truth is simply wrong.

Every ratio with an empty denominator is 0.0, so nothing here returns NaN or warns.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from model.schema import UNKNOWN


def classification_report(
    y_true: Sequence[int] | np.ndarray,
    y_pred: Sequence[int] | np.ndarray,
    n_classes: int,
    *,
    ordinal: bool,
) -> dict[str, float]:
    """Metrics of one descriptor field.

    Keys: ``accuracy``; ``macro_precision``, ``macro_recall``, ``macro_f1`` (means over the
    classes present in the scored truth); ``n`` (cases scored); ``n_unknown`` (cases left out
    for an unknown truth); ``precision/<k>``, ``recall/<k>``, ``f1/<k>``, ``support/<k>`` for
    every class index k. When `ordinal`: ``within1_accuracy`` (prediction at most one class
    away; a predicted unknown is never within one) and ``qwk`` (quadratic weighted kappa, in
    which a predicted unknown counts as the class farthest from the truth, the worst possible
    answer; 0.0 when kappa is undefined, e.g. a single class in truth and prediction).
    """
    t, p = _check_labels(y_true, y_pred, n_classes)
    known = t != UNKNOWN
    t, p = t[known], p[known]
    n = len(t)
    counts = confusion(t, p, n_classes)  # [n_classes, n_classes + 1]
    hits = np.diag(counts[:, :n_classes]).astype(float)
    support = counts.sum(axis=1).astype(float)  # true cases per class
    predicted = counts[:, :n_classes].sum(axis=0).astype(float)  # predictions per class
    precision = _ratio(hits, predicted)
    recall = _ratio(hits, support)
    f1 = _ratio(2 * precision * recall, precision + recall)
    present = support > 0

    out: dict[str, float] = {
        "accuracy": float(hits.sum() / n) if n else 0.0,
        "macro_precision": float(precision[present].mean()) if present.any() else 0.0,
        "macro_recall": float(recall[present].mean()) if present.any() else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "n": n,
        "n_unknown": int((~known).sum()),
    }
    for k in range(n_classes):
        out[f"precision/{k}"] = float(precision[k])
        out[f"recall/{k}"] = float(recall[k])
        out[f"f1/{k}"] = float(f1[k])
        out[f"support/{k}"] = int(support[k])
    if ordinal:
        within = (p != UNKNOWN) & (np.abs(p - t) <= 1)
        out["within1_accuracy"] = float(within.mean()) if n else 0.0
        out["qwk"] = _quadratic_kappa(t, p, n_classes)
    return out


def confusion(
    y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray, n_classes: int
) -> np.ndarray:
    """Counts int64 [n_classes, n_classes + 1]: rows true class, columns predicted class, the
    last column a predicted unknown. Cases with an unknown truth are left out."""
    t, p = _check_labels(y_true, y_pred, n_classes)
    known = t != UNKNOWN
    column = np.where(p[known] == UNKNOWN, n_classes, p[known])
    flat = t[known] * (n_classes + 1) + column
    counts = np.bincount(flat, minlength=n_classes * (n_classes + 1))
    return counts.reshape(n_classes, n_classes + 1).astype(np.int64)


def image_to_text_recall(
    similarity: np.ndarray, true_text: Sequence[int] | np.ndarray, ks: Sequence[int] = (1, 5)
) -> dict[str, float]:
    """Share of images whose true text is among their k best-scored texts: {"i2t_R@k": ...}.

    similarity: [n_images, n_texts]; true_text: [n_images], the index of each image's text in
    the catalog, -1 when the catalog lacks it (such an image always counts as a miss). Ties go
    against the image: its text is in the top k only if fewer than k other texts score at least
    as high, so a constant similarity scores no better than chance would.
    """
    sim, truth = _check_retrieval(similarity, true_text, ks)
    n_images, n_texts = sim.shape
    in_catalog = truth >= 0
    rows = np.flatnonzero(in_catalog)
    true_score = sim[rows, truth[rows]]  # (m,)
    rivals = (sim[rows] >= true_score[:, None]).sum(axis=1) - 1  # other texts at least as high
    return {f"i2t_R@{k}": float((rivals < k).sum() / n_images) if n_images else 0.0 for k in ks}


def text_to_image_recall(
    similarity: np.ndarray, true_text: Sequence[int] | np.ndarray, ks: Sequence[int] = (1, 5)
) -> dict[str, float]:
    """Share of texts (among those with at least one image) that find one of their images
    among their k best-scored images: {"t2i_R@k": ...}.

    Same inputs as :func:`image_to_text_recall`. Ties go against the text: a text's best image
    is in the top k only if fewer than k images of OTHER texts score at least as high.
    """
    sim, truth = _check_retrieval(similarity, true_text, ks)
    n_images, n_texts = sim.shape
    texts = np.unique(truth[truth >= 0])  # texts with at least one image
    if len(texts) == 0:
        return {f"t2i_R@{k}": 0.0 for k in ks}
    columns = sim[:, texts]  # (n_images, m)
    own = truth[:, None] == texts[None, :]  # (n_images, m): image belongs to the text
    best_own = np.where(own, columns, -np.inf).max(axis=0)  # (m,)
    rivals = ((columns >= best_own[None, :]) & ~own).sum(axis=0)  # (m,)
    return {f"t2i_R@{k}": float((rivals < k).mean()) for k in ks}


# --- helpers ------------------------------------------------------------------------------------
def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den elementwise, 0.0 where den is 0."""
    num, den = np.asarray(num, float), np.asarray(den, float)
    out = np.zeros(np.broadcast(num, den).shape)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _quadratic_kappa(t: np.ndarray, p: np.ndarray, n_classes: int) -> float:
    # A predicted unknown is scored as the class farthest from the truth: the worst answer.
    farthest = np.where(t >= (n_classes - 1) / 2, 0, n_classes - 1)
    p = np.where(p == UNKNOWN, farthest, p)
    if len(np.union1d(t, p)) < 2:
        return 0.0  # one class in truth and prediction: kappa is undefined (0/0)
    from sklearn.metrics import cohen_kappa_score  # not on the explaining path (model.served)

    kappa = cohen_kappa_score(t, p, labels=list(range(n_classes)), weights="quadratic")
    return float(kappa)


def _check_labels(
    y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray, n_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(y_true, dtype=np.int64).reshape(-1)
    p = np.asarray(y_pred, dtype=np.int64).reshape(-1)
    if len(t) != len(p):
        raise ValueError(f"y_true has {len(t)} entries but y_pred has {len(p)}")
    if n_classes < 1:
        raise ValueError(f"n_classes must be at least 1, got {n_classes}")
    for name, a in (("y_true", t), ("y_pred", p)):
        if len(a) and (a.min() < UNKNOWN or a.max() >= n_classes):
            raise ValueError(f"{name} holds codes outside -1..{n_classes - 1}")
    return t, p


def _check_retrieval(
    similarity: np.ndarray, true_text: Sequence[int] | np.ndarray, ks: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    sim = np.asarray(similarity)
    truth = np.asarray(true_text, dtype=np.int64).reshape(-1)
    if sim.ndim != 2:
        raise ValueError(f"similarity must be [n_images, n_texts], got shape {sim.shape}")
    if len(truth) != sim.shape[0]:
        raise ValueError(f"{len(truth)} true texts for {sim.shape[0]} images")
    if len(truth) and (truth.min() < -1 or truth.max() >= sim.shape[1]):
        raise ValueError(f"true_text holds indices outside -1..{sim.shape[1] - 1}")
    if any(k < 1 for k in ks):
        raise ValueError(f"every k must be at least 1, got {list(ks)}")
    if np.isnan(sim).any():
        raise ValueError("similarity contains NaN")
    return sim, truth


def calibration(
    y_true: np.ndarray,
    confidence: np.ndarray,
    pred: np.ndarray,
    dist: np.ndarray | None = None,
    bins: int = 15,
) -> dict[str, float]:
    """How far stated probabilities are from observed frequencies, over known labels.

    `pred` is the class a method answers and `confidence` the probability it states for it;
    `dist` [n, classes] the whole distribution when it has one. Returns "ece" (expected
    calibration error of the top class, `bins` equal-width bins), and with `dist` "brier"
    (multi-class, summed over classes) and "nll" (of the true class); NaN without known labels.
    """
    y_true = np.asarray(y_true)
    known = y_true >= 0
    out = {"ece": float("nan"), "brier": float("nan"), "nll": float("nan"), "n": int(known.sum())}
    if not known.any():
        return out
    t, c, p = y_true[known], np.asarray(confidence, float)[known], np.asarray(pred)[known]
    correct = (p == t).astype(float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(c, edges[1:-1], right=True), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        in_bin = which == b
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - c[in_bin].mean())
    out["ece"] = float(ece)
    if dist is not None:
        d = np.clip(np.asarray(dist, float)[known], 1e-12, 1.0)
        onehot = np.zeros_like(d)
        onehot[np.arange(len(t)), t] = 1.0
        out["brier"] = float(((d - onehot) ** 2).sum(1).mean())
        out["nll"] = float(-np.log(d[np.arange(len(t)), t]).mean())
    return out


def reliability_bins(
    y_true: np.ndarray, confidence: np.ndarray, pred: np.ndarray, bins: int = 15
) -> np.ndarray:
    """float64 [3, bins]: per equal-width confidence bin, the count of known cases, the sum of
    their stated probabilities and the number answered right (sums, so folds add up)."""
    y_true = np.asarray(y_true)
    known = y_true >= 0
    c = np.asarray(confidence, float)[known]
    correct = (np.asarray(pred)[known] == y_true[known]).astype(float)
    which = np.clip(np.digitize(c, np.linspace(0.0, 1.0, bins + 1)[1:-1], right=True), 0, bins - 1)
    return np.stack(
        [
            np.bincount(which, minlength=bins).astype(float),
            np.bincount(which, weights=c, minlength=bins),
            np.bincount(which, weights=correct, minlength=bins),
        ]
    )
