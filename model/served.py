"""The served answer of each descriptor field: one read-out, declared before any evaluation.

Per field, a class-balanced multinomial logistic regression on the case's pooled slice features
(mean and max, what the baselines see) joined to its CLIP image embedding (what retrieval
sees), with its inverse regularisation C chosen on validation patients (never on test folds).
Its probability is calibrated on the same validation patients: an isotonic map from the
top class's raw probability to the chance that the top class is right, so "80%" is right
about 80% of the time. Retrieval stays the explanation: the texts and similar cases shown are
the evidence behind the answer, and the vote, zero-shot and head read-outs stay available.

Everything is plain arrays (saved with safetensors beside the weights): nothing is pickled.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from model import metrics
from model.clip import batch_slices
from model.encoders import mean_max_pool

C_GRID = (0.01, 0.1, 1.0, 10.0)  # inverse regularisation strengths tried on validation patients
VAL_FRACTION = 0.2  # share of the training patients that choose C and fit the calibration
MIN_VAL_PER_FIELD = 20  # fewer known validation labels than this: no calibration (identity)


def pooled_features(cases, max_slices: int) -> np.ndarray:
    """Mean and max over (sub-sampled) slices: one vector per case, float32 [n, 2 * dim]."""
    out = []
    for s in range(0, len(cases), 512):
        x, mask = batch_slices(
            [cases.slices(i) for i in range(s, min(s + 512, len(cases)))], max_slices
        )
        out.append(mean_max_pool(x, mask).numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def served_inputs(pooled: np.ndarray, embeddings: np.ndarray) -> np.ndarray:
    """What the served read-out sees: float64 [n, 2 * feature dim + embedding dim]."""
    return np.hstack([np.asarray(pooled, np.float64), np.asarray(embeddings, np.float64)])


@dataclass
class FieldHead:
    weights: np.ndarray  # float64 [classes, inputs]; a constant field has zero weights
    bias: np.ndarray  # float64 [classes]
    calib_x: np.ndarray  # isotonic map: raw top-class probability ...
    calib_y: np.ndarray  # ... -> calibrated probability (np.interp between the points)
    C: float  # the chosen inverse regularisation (0 for a constant field)

    def raw_proba(self, z: np.ndarray) -> np.ndarray:
        logits = z @ self.weights.T + self.bias
        logits -= logits.max(1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(1, keepdims=True)

    def calibrate(self, top: np.ndarray) -> np.ndarray:
        return np.interp(top, self.calib_x, self.calib_y)


@dataclass
class ServedHead:
    mean: np.ndarray  # float64 [inputs]: standardisation of served_inputs
    scale: np.ndarray  # float64 [inputs]
    fields: list[FieldHead]

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
        """(served class [n, fields], its calibrated probability [n, fields], per field the
        calibrated distribution [n, classes]: the served class gets its calibrated
        probability, the others share the rest in proportion to their raw probabilities)."""
        z = (np.asarray(x, np.float64) - self.mean) / self.scale
        classes, confidence, distributions = [], [], []
        for head in self.fields:
            p = head.raw_proba(z)
            top = p.argmax(1)
            p_top = p[np.arange(len(p)), top]
            cal = np.clip(head.calibrate(p_top), 1e-6, 1 - 1e-6)
            rest = np.clip(1.0 - p_top, 1e-12, None)
            dist = p * ((1.0 - cal) / rest)[:, None]
            dist[np.arange(len(p)), top] = cal
            classes.append(top)
            confidence.append(cal)
            distributions.append(dist)
        return np.stack(classes, 1), np.stack(confidence, 1), distributions

    # --- safetensors ------------------------------------------------------------------------
    def tensors(self) -> dict[str, np.ndarray]:
        out = {"mean": self.mean, "scale": self.scale}
        for j, h in enumerate(self.fields):
            out |= {
                f"{j}.weights": h.weights,
                f"{j}.bias": h.bias,
                f"{j}.calib_x": h.calib_x,
                f"{j}.calib_y": h.calib_y,
                f"{j}.C": np.array([h.C]),
            }
        return {k: np.ascontiguousarray(v, np.float64) for k, v in out.items()}

    @classmethod
    def from_tensors(cls, t: dict[str, np.ndarray], n_fields: int) -> ServedHead:
        fields = [
            FieldHead(
                t[f"{j}.weights"],
                t[f"{j}.bias"],
                t[f"{j}.calib_x"],
                t[f"{j}.calib_y"],
                float(t[f"{j}.C"][0]),
            )
            for j in range(n_fields)
        ]
        return cls(t["mean"], t["scale"], fields)


def fit_served(
    x: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    n_classes: list[int],
    seed: int = 0,
    val_fraction: float = VAL_FRACTION,
) -> ServedHead:
    """Fits the served read-out on training cases x [n, inputs], y [n, fields] (-1: unknown).

    The patients in `groups` are split once: C is chosen by validation macro-F1 and the
    calibration fitted on the validation patients' predictions; the served model is the one
    fitted on the other patients (refitting on all would change what was calibrated).
    """
    x = np.asarray(x, np.float64)
    # One thread: scikit-learn's OpenMP loss loops on a busy 2-core machine (a web server, a
    # worker) spin far longer than they compute: 0.2 s per fit with one thread, 10 s without.
    with threadpool_limits(1):
        return _fit_served(x, y, groups, n_classes, seed, val_fraction)


def _fit_served(x, y, groups, n_classes, seed, val_fraction) -> ServedHead:
    from model.train import split_by_patient  # train imports the model package widely

    fit_idx, val_idx = split_by_patient(np.asarray(groups), val_fraction, seed)
    scaler = StandardScaler().fit(x[fit_idx])
    scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
    z = (x - scaler.mean_) / scale
    heads = [
        _fit_field(z[fit_idx], y[fit_idx, j], z[val_idx], y[val_idx, j], k, seed)
        for j, k in enumerate(n_classes)
    ]
    return ServedHead(scaler.mean_.astype(np.float64), scale.astype(np.float64), heads)


def _fit_field(
    z_fit: np.ndarray, y_fit: np.ndarray, z_val: np.ndarray, y_val: np.ndarray, k: int, seed: int
) -> FieldHead:
    known = y_fit >= 0
    present = np.unique(y_fit[known])
    identity = (np.array([0.0, 1.0]), np.array([0.0, 1.0]))
    if len(present) < 2:  # nothing to learn: always the one class seen (or the first)
        bias = np.full(k, -30.0)
        bias[int(present[0]) if len(present) else 0] = 0.0
        return FieldHead(np.zeros((k, z_fit.shape[1])), bias, *identity, 0.0)
    val_known = y_val >= 0
    best = None
    for C in C_GRID:
        clf = LogisticRegression(C=C, class_weight="balanced", max_iter=2000, random_state=seed)
        clf.fit(z_fit[known], y_fit[known])
        weights, bias = _full_classes(clf, k, z_fit.shape[1])
        head = FieldHead(weights, bias, *identity, C)
        if val_known.sum() == 0:
            score = 0.0
        else:
            pred = head.raw_proba(z_val[val_known]).argmax(1)
            rep = metrics.classification_report(y_val[val_known], pred, k, ordinal=False)
            score = rep["macro_f1"]
        if best is None or score > best[0] + 1e-9:
            best = (score, head)
    head = best[1]
    if val_known.sum() >= MIN_VAL_PER_FIELD:
        p = head.raw_proba(z_val[val_known])
        top = p.argmax(1)
        correct = (top == y_val[val_known]).astype(np.float64)
        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
        iso.fit(p[np.arange(len(p)), top], correct)
        head.calib_x = np.asarray(iso.X_thresholds_, np.float64)
        head.calib_y = np.asarray(iso.y_thresholds_, np.float64)
    return head


def _full_classes(clf: LogisticRegression, k: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    """Weights and bias over all k classes (classes absent from training get -inf-ish bias)."""
    weights = np.zeros((k, d))
    bias = np.full(k, -30.0)
    coef, intercept = clf.coef_, clf.intercept_
    if len(clf.classes_) == 2:  # binary: one row of coefficients for the second class
        coef = np.vstack([-coef[0] / 2, coef[0] / 2])
        intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
    for row, c in enumerate(clf.classes_):
        weights[int(c)] = coef[row]
        bias[int(c)] = intercept[row]
    return weights, bias
