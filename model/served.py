"""The served answer of each descriptor field: one read-out, declared before any evaluation.

Per field, the served read-out sees the case's pooled slice features (mean and max, what the
baselines see) joined to its CLIP image embedding (what retrieval sees), or the slice
features alone. It is the mean of two class-balanced models' probabilities: gradient-boosted
trees and a multinomial logistic regression (its C from a grid). Which inputs and which C a
field serves is decided on held-out predictions of patients the candidate's inputs never saw
(fit_served says how; never on test folds), and the top-class probability is calibrated on
the same held-out predictions, so "80%" is right about 80% of the time. Where it does better
on the patients the CLIP model never saw, that mean is averaged with retrieval's own
similarity-weighted vote (over VOTE_K texts, whatever k a caller asks to see). Retrieval stays
the explanation: the texts and similar cases shown are the evidence behind the answer, and the
vote, zero-shot and head read-outs stay available.

Everything is plain arrays (saved with safetensors beside the weights; trees as node arrays,
model.trees): nothing is pickled. Predicting needs numpy alone: scikit-learn is imported by
the functions that fit, so loading a checkpoint to explain (the service, `clipmed explain`)
does not pay its import (about 1.3 s).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from model import metrics
from model.clip import batch_slices
from model.encoders import mean_max_pool
from model.trees import TreeEnsemble, fit_balanced_trees, probabilities

if TYPE_CHECKING:
    from sklearn.linear_model import LogisticRegression

C_GRID = (0.01, 0.1, 1.0, 10.0)  # inverse regularisation strengths tried on validation patients
# lbfgs stops when no gradient component exceeds this: on LIDC (5,000 cases, 110 pooled
# features) 7-10x fewer iterations than scikit-learn's 1e-4 along the warm-started C path.
LOGREG_TOL = 1e-3
FIT_THREADS = 2  # fields fitted side by side (the fits run single-threaded, mostly without the GIL)
INNER_FOLDS = 3  # patient-grouped folds of the training patients that choose and calibrate
MIN_UNSEEN_PATIENTS = 10  # fewer patients unseen by the embedding: inner folds instead
MIN_VAL_PER_FIELD = 20  # fewer held-out known labels than this: no calibration (identity)
ISOTONIC_FROM = 1000  # held-out predictions for an isotonic calibration map; fewer: Platt
CALIBRATION_GRID = 201  # points of a Platt map, tabulated for np.interp
TREE_ROUNDS = 60  # gradient boosting: at most this many rounds (early stopping with >= 500 cases)
TREE_LEAVES = 15  # ... of trees with at most this many leaves
VOTE_K = 5  # retrieval's vote, as a served candidate, always over this many texts


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
    weights: np.ndarray  # float64 [classes, inputs]; zeros for a constant field or trees
    bias: np.ndarray  # float64 [classes]
    calib_x: np.ndarray  # isotonic map: raw top-class probability ...
    calib_y: np.ndarray  # ... -> calibrated probability (np.interp between the points)
    C: float  # the chosen inverse regularisation (0 for a constant field or trees)
    trees: TreeEnsemble | None = None  # set when gradient-boosted trees won on validation
    tree_classes: np.ndarray | None = None  # int64: the classes the trees' columns stand for
    slices_only: bool = False  # reads the pooled slice features alone (embedding weights zero)
    # The retrieved texts' vote (model.retrieval.vote_fields over VOTE_K texts) in the answer:
    # 0 not at all, 0.5 averaged with the model above, 1 the vote alone.
    vote_weight: float = 0.0

    @property
    def readout(self) -> str:
        """Which read-out this field serves, in words (the checkpoint and reports name it)."""
        if self.vote_weight >= 1:
            return "retrieval's similarity-weighted vote"
        model = self._model_readout
        if self.vote_weight > 0:
            return f"{model}, averaged with retrieval's similarity-weighted vote"
        return model

    @property
    def _model_readout(self) -> str:
        if self.trees is not None and self.C > 0:
            words = f"logistic regression (C={self.C:g}) and gradient boosting averaged, balanced"
        elif self.trees is not None:
            words = "gradient boosting, balanced"
        elif self.C == 0:
            return "constant"
        else:
            words = f"logistic regression, balanced (C={self.C:g})"
        return f"{words}, slice features only" if self.slices_only else words

    def raw_proba(
        self,
        z: np.ndarray,
        trees_proba: np.ndarray | None = None,
        votes: np.ndarray | None = None,
    ) -> np.ndarray:
        """Class probabilities [n, classes]: the logistic regression's, the trees', or (both
        set: a blend) their mean; with a vote weight, mixed with `votes` (the retrieved
        texts' vote shares [n, classes], needed then). `trees_proba`: the trees' own, when
        already walked."""
        if self.vote_weight <= 0:
            return self._model_proba(z, trees_proba)
        if votes is None:
            raise ValueError("this field's served answer needs the retrieved texts' vote")
        votes = vote_distribution(votes)
        if self.vote_weight >= 1:
            return votes
        w = self.vote_weight
        return (1 - w) * self._model_proba(z, trees_proba) + w * votes

    def _model_proba(self, z: np.ndarray, trees_proba: np.ndarray | None) -> np.ndarray:
        if self.trees is None or self.C > 0:
            logits = z @ self.weights.T + self.bias
            logits -= logits.max(1, keepdims=True)
            linear = np.exp(logits)
            linear /= linear.sum(1, keepdims=True)
            if self.trees is None:
                return linear
        assert self.tree_classes is not None
        if trees_proba is None:
            trees_proba = self.trees.predict_proba(z)
        p = np.zeros((len(z), len(self.bias)))
        p[:, self.tree_classes] = trees_proba
        return p if self.C == 0 else (p + linear) / 2

    def calibrate(self, top: np.ndarray) -> np.ndarray:
        return np.interp(top, self.calib_x, self.calib_y)


def vote_distribution(tallies: np.ndarray) -> np.ndarray:
    """Vote shares [n, classes] as a distribution: a case no retrieved text voted on (all
    zero) gets the uniform one."""
    tallies = np.asarray(tallies, np.float64)
    total = tallies.sum(1, keepdims=True)
    uniform = np.full_like(tallies, 1.0 / max(tallies.shape[1], 1))
    return np.where(total > 0, tallies / np.where(total > 0, total, 1.0), uniform)


@dataclass
class ServedHead:
    mean: np.ndarray  # float64 [inputs]: standardisation of served_inputs
    scale: np.ndarray  # float64 [inputs]
    fields: list[FieldHead]
    vote_k: int = VOTE_K  # the texts retrieval's vote reads, where a field serves it
    # Every field's trees as one ensemble, and each field's columns in it (None: no trees),
    # built once: a ServedHead's fields are complete when it is made.
    _forest: tuple[TreeEnsemble, list[slice]] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        present = [h.trees for h in self.fields if h.trees is not None]
        self._forest = TreeEnsemble.concatenate(present) if present else None

    @property
    def reads_votes(self) -> bool:
        """Whether predict needs the retrieved texts' vote (over `vote_k` texts)."""
        return any(h.vote_weight > 0 for h in self.fields)

    def predict(
        self, x: np.ndarray, votes: list[np.ndarray] | None = None
    ) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
        """(served class [n, fields], its calibrated probability [n, fields], per field the
        calibrated distribution [n, classes]: the served class gets its calibrated
        probability, the others share the rest in proportion to their raw probabilities).
        `votes`: per field, the vote shares [n, classes] over `vote_k` retrieved texts
        (model.retrieval.vote_fields), needed when `reads_votes`."""
        z = (np.asarray(x, np.float64) - self.mean) / self.scale
        per_field = votes if votes is not None else [None] * len(self.fields)
        classes, confidence, distributions = [], [], []
        for head, trees_proba, voted in zip(
            self.fields, self._trees_proba(z), per_field, strict=True
        ):
            p = head.raw_proba(z, trees_proba, voted)
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

    def _trees_proba(self, z: np.ndarray) -> list[np.ndarray | None]:
        """Per field, its trees' probabilities (None: no trees), every field's trees walked
        in one pass (TreeEnsemble.concatenate)."""
        if self._forest is None:
            return [None] * len(self.fields)
        merged, columns = self._forest
        raw, parts = merged.raw_predict(z), iter(columns)
        return [
            None if h.trees is None else probabilities(raw[:, next(parts)]) for h in self.fields
        ]

    # --- safetensors ------------------------------------------------------------------------
    def tensors(self) -> dict[str, np.ndarray]:
        out = {"mean": self.mean, "scale": self.scale}
        if self.reads_votes:
            out["vote_k"] = np.array([self.vote_k])
        for j, h in enumerate(self.fields):
            out |= {
                f"{j}.weights": h.weights,
                f"{j}.bias": h.bias,
                f"{j}.calib_x": h.calib_x,
                f"{j}.calib_y": h.calib_y,
                f"{j}.C": np.array([h.C]),
            }
            if h.slices_only:
                out[f"{j}.slices_only"] = np.array([1.0])
            if h.vote_weight > 0:
                out[f"{j}.vote_weight"] = np.array([h.vote_weight])
            if h.trees is not None:
                assert h.tree_classes is not None
                out |= h.trees.tensors(f"{j}.trees.")
                out[f"{j}.tree_classes"] = h.tree_classes
        return {k: np.ascontiguousarray(v, np.float64) for k, v in out.items()}

    @classmethod
    def from_tensors(cls, t: dict[str, np.ndarray], n_fields: int) -> ServedHead:
        fields = []
        for j in range(n_fields):
            head = FieldHead(
                t[f"{j}.weights"],
                t[f"{j}.bias"],
                t[f"{j}.calib_x"],
                t[f"{j}.calib_y"],
                float(t[f"{j}.C"][0]),
                slices_only=f"{j}.slices_only" in t,
                vote_weight=float(t[f"{j}.vote_weight"][0]) if f"{j}.vote_weight" in t else 0.0,
            )
            if f"{j}.tree_classes" in t:  # older checkpoints hold linear heads only
                head.trees = TreeEnsemble.from_tensors(t, f"{j}.trees.")
                head.tree_classes = t[f"{j}.tree_classes"].astype(np.int64)
            fields.append(head)
        vote_k = int(t["vote_k"][0]) if "vote_k" in t else VOTE_K
        return cls(t["mean"], t["scale"], fields, vote_k)


# A candidate read-out for one field: ("logreg", C), ("trees", 0.0) or ("blend", C): the
# mean of that logistic regression's and the trees' probabilities; on which inputs.
@dataclass(frozen=True, order=True)
class Candidate:
    kind: str  # "blend", "logreg" or "trees"
    C: float = 0.0  # logistic regression's inverse regularisation
    slices_only: bool = False  # the first `slice_columns` inputs alone


LOGREG_ONLY = "logreg"  # the strong logistic baseline
LOGREG_OR_TREES = "logreg+trees"  # each kind alone (the served set until 2026-12-07)
BLENDS = "blends"  # the served set: the mean of logistic regression's and the trees'


def fit_served(
    x: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    n_classes: list[int],
    seed: int = 0,
    candidates: str = BLENDS,
    unseen: np.ndarray | None = None,
    slice_columns: int = 0,
    votes: list[np.ndarray] | None = None,
) -> ServedHead:
    """Fits the served read-out on training cases x [n, inputs], y [n, fields] (-1: unknown).

    Per field, the candidates are (BLENDS) the mean of class-balanced gradient-boosted trees'
    and class-balanced logistic regression's probabilities, for each C of the grid; or
    (LOGREG_ONLY) that logistic regression alone; or (LOGREG_OR_TREES) the logistic
    regressions and the trees, each alone. With `slice_columns`, each both on all the inputs
    and on the first `slice_columns` (the pooled slice features) alone.
    `unseen` names the training cases whose patients the embedding in x never trained on.
    With at least MIN_UNSEEN_PATIENTS of them and slice-only candidates, the best slice-only
    candidate is chosen on INNER_FOLDS patient-grouped folds of all the training patients (so
    every training case gets a prediction from a model that never saw its patient), the best
    all-input candidate on the unseen patients (fitted on the others), and the two compared
    on the unseen patients. With `votes` too (per field, retrieval's vote shares [n, classes]
    over VOTE_K texts of a catalog of the other training patients' texts, for the unseen
    cases; NaN elsewhere), the winner is averaged with the vote when that mean does better on
    the unseen patients. Without unseen patients, every candidate is chosen on the inner
    folds (or, without slice-only candidates, on the unseen patients), and the vote is not
    offered. Choosing is by macro-F1 on
    held-out predictions; the winner is refitted on all the training cases, and its top-class
    probability calibrated (calibration_map) on its held-out predictions. Test patients are
    never seen.
    """
    from threadpoolctl import threadpool_limits

    x = np.asarray(x, np.float64)
    # One thread: scikit-learn's OpenMP loss loops on a busy 2-core machine (a web server, a
    # worker) spin far longer than they compute: 0.2 s per fit with one thread, 10 s without.
    with threadpool_limits(1):
        return _fit_served(
            x,
            np.asarray(y),
            np.asarray(groups),
            unseen,
            n_classes,
            seed,
            candidates,
            slice_columns,
            votes,
        )


def unseen_split(
    groups: np.ndarray, unseen: np.ndarray | None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """[(the other cases, the cases of patients the embedding never saw)] when there are at
    least MIN_UNSEEN_PATIENTS of those patients; else []."""
    if unseen is None or len(np.unique(groups[unseen])) < MIN_UNSEEN_PATIENTS:
        return []
    held = np.zeros(len(groups), bool)
    held[unseen] = True
    if set(groups[held]) & set(groups[~held]):
        raise ValueError("a patient is on both sides of the unseen split")
    return [(np.flatnonzero(~held), np.flatnonzero(held))]


def _fit_served(
    x, y, groups, unseen, n_classes, seed, candidates, slice_columns, votes
) -> ServedHead:
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x)
    scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
    z = (x - scaler.mean_) / scale
    inputs = [False, True] if 0 < slice_columns < x.shape[1] else [False]
    kind = "blend" if candidates == BLENDS else "logreg"
    tried = [Candidate(kind, C, only) for only in inputs for C in C_GRID]
    if candidates == LOGREG_OR_TREES:
        tried += [Candidate("trees", 0.0, only) for only in inputs]

    inner, split = inner_folds(groups, seed), unseen_split(groups, unseen)

    def field(j: int) -> FieldHead:
        voted = None if votes is None else np.asarray(votes[j], np.float64)
        return _fit_field(z, y[:, j], inner, split, n_classes[j], tried, seed, slice_columns, voted)

    with ThreadPoolExecutor(max_workers=FIT_THREADS) as pool:
        heads = list(pool.map(field, range(len(n_classes))))
    return ServedHead(scaler.mean_.astype(np.float64), scale.astype(np.float64), heads)


def inner_folds(groups: np.ndarray, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """INNER_FOLDS (fit, held-out) index pairs, split by patient; none with too few patients."""
    from sklearn.model_selection import GroupKFold

    if len(np.unique(groups)) < INNER_FOLDS:
        return []
    splitter = GroupKFold(n_splits=INNER_FOLDS, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(groups)), groups=groups))


def _fit_field(
    z: np.ndarray,
    y: np.ndarray,
    inner: list[tuple[np.ndarray, np.ndarray]],
    unseen_split: list[tuple[np.ndarray, np.ndarray]],
    k: int,
    tried: list[Candidate],
    seed: int,
    slice_columns: int,
    votes: np.ndarray | None = None,
) -> FieldHead:
    known = y >= 0
    present = np.unique(y[known])
    identity = (np.array([0.0, 1.0]), np.array([0.0, 1.0]))
    if len(present) < 2:  # nothing to learn: always the one class seen (or the first)
        bias = np.full(k, -30.0)
        bias[int(present[0]) if len(present) else 0] = 0.0
        return FieldHead(np.zeros((k, z.shape[1])), bias, *identity, 0.0)

    vote_weight = 0.0
    if unseen_split and any(c.slices_only for c in tried):
        # Each family chosen where its scores are honest: the slice-features-only candidates
        # on inner folds of all the training patients (their inputs do not depend on the
        # embedding), the others on the patients the embedding never saw; then the two
        # finalists compared on those patients alone (one comparison: little luck in it).
        alone = [c for c in tried if c.slices_only]
        joined = [c for c in tried if not c.slices_only]
        s_best, s_held = _best(alone, z, y, known, inner, k, seed, slice_columns)
        j_best, j_held = _best(joined, z, y, known, unseen_split, k, seed, slice_columns)
        s_unseen = _held_out([s_best], z, y, known, unseen_split, k, seed, slice_columns)[0]
        finalists = [(s_best, s_unseen, s_held), (j_best, j_held, j_held)]
        scores = [_score(unseen_p, y, k) for _, unseen_p, _ in finalists]
        chosen, unseen_p, held = finalists[int(np.argmax(scores))]  # ties: the slice-only one
        if votes is not None:
            # Retrieval's vote averaged in where that mean does better on the same patients
            # (chosen on the second draw of folds over offering the vote alone, or the mean
            # of each finalist: docs/benchmarks.md).
            voted = np.full(votes.shape, np.nan)  # on the unseen patients' known cases only
            voted[unseen_split[0][1]] = vote_distribution(votes[unseen_split[0][1]])
            voted[~known] = np.nan
            mixed = (unseen_p + voted) / 2
            if _score(mixed, y, k) > max(scores):
                vote_weight, held = 0.5, mixed
    else:
        chosen, held = _best(tried, z, y, known, unseen_split or inner, k, seed, slice_columns)
    head = _fit_candidates([chosen], z[known], y[known], k, seed, slice_columns)[0]
    head.vote_weight = vote_weight
    scored = np.isfinite(held[:, 0])
    if scored.sum() >= MIN_VAL_PER_FIELD:
        p = held[scored]
        top = p.argmax(1)
        correct = (top == y[scored]).astype(np.float64)
        head.calib_x, head.calib_y = calibration_map(p[np.arange(len(p)), top], correct, seed)
    return head


def calibration_map(
    top: np.ndarray, correct: np.ndarray, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Points (raw top-class probability -> probability of being right) for np.interp.

    From ISOTONIC_FROM held-out predictions on, a centred isotonic map: it follows any
    monotone shape. Below, two parameters (Platt: a logistic regression on the logit of the
    raw probability), tabulated on a grid: an isotonic map fitted to a few hundred predictions
    follows their noise (measured: an embedding read-out calibrated on its ~550 early-stopping
    reads had ECE 0.052-0.055 on new patients)."""
    from sklearn.isotonic import IsotonicRegression
    from sklearn.linear_model import LogisticRegression

    if len(top) < ISOTONIC_FROM and 0 < correct.sum() < len(correct):
        logit = _logit(top)[:, None]
        platt = LogisticRegression(C=1e4, random_state=seed).fit(logit, correct)
        if platt.coef_[0, 0] > 0:  # a map that rises with the raw probability
            grid = np.linspace(0.0, 1.0, CALIBRATION_GRID)
            return grid, platt.predict_proba(_logit(grid)[:, None])[:, 1]
    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
    iso.fit(top, correct)
    return centred(iso.X_thresholds_, iso.y_thresholds_)


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, np.float64), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def _held_out(tried, z, y, known, folds, k, seed, slice_columns) -> np.ndarray:
    """Held-out probabilities [candidates, cases, classes] of every candidate, for the known
    cases of each fold that could be fitted (NaN elsewhere)."""
    held = np.full((len(tried), len(y), k), np.nan)
    for fit_idx, out_idx in folds:
        fit_idx, out_idx = fit_idx[known[fit_idx]], out_idx[known[out_idx]]
        if len(out_idx) == 0 or len(np.unique(y[fit_idx])) < 2:
            continue
        fitted = _fit_candidates(tried, z[fit_idx], y[fit_idx], k, seed, slice_columns)
        for c, head in enumerate(fitted):
            held[c, out_idx] = head.raw_proba(z[out_idx])
    return held


def _score(p: np.ndarray, y: np.ndarray, k: int) -> float:
    """Macro-F1 of held-out probabilities where there are any (-1 where there are none)."""
    scored = np.isfinite(p[:, 0])
    if not scored.any():
        return -1.0
    report = metrics.classification_report(y[scored], p[scored].argmax(1), k, ordinal=False)
    return float(report["macro_f1"])


def _best(tried, z, y, known, folds, k, seed, slice_columns) -> tuple[Candidate, np.ndarray]:
    """The candidate with the best held-out macro-F1 over `folds` (ties: the earlier, simpler
    one; with no held-out predictions at all, the first), and its held-out probabilities."""
    held = _held_out(tried, z, y, known, folds, k, seed, slice_columns)
    best = int(np.argmax([_score(p, y, k) for p in held]))
    return tried[best], held[best]


def centred(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """An isotonic fit's points (each constant block's first and last x) -> one point per
    block at its centre (centred isotonic regression, Oron & Flournoy 2017).

    Interpolating between block ends jumps wherever two blocks meet at nearly the same x:
    there a change of 1e-7 in the raw probability (a case padded in a batch) can move the
    stated probability by tenths. Between block centres the map still rises, with slopes
    bounded by how far apart the blocks are, and is flat beyond the outer centres."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    starts = np.r_[True, np.diff(y) != 0]
    block = np.cumsum(starts) - 1
    return np.bincount(block, x) / np.bincount(block), y[starts]


def _fit_candidates(
    tried: list[Candidate], z: np.ndarray, y: np.ndarray, k: int, seed: int, slice_columns: int
) -> list[FieldHead]:
    """The candidates fitted on standardised inputs z and known labels y (two classes or
    more), in their order. The logistic ones go along C in ascending order, each starting
    from the last one's solution (a stronger-regularised fit is a good first guess); a blend
    reuses the fits of its two parts. A slice-features-only candidate gets zero weights on
    the other inputs (trees: never split on them), so every head reads the same inputs."""
    from sklearn.linear_model import LogisticRegression

    identity = (np.array([0.0, 1.0]), np.array([0.0, 1.0]))
    parts = {Candidate("logreg", c.C, c.slices_only) for c in tried if c.kind == "blend"}
    parts |= {Candidate("trees", 0.0, c.slices_only) for c in tried if c.kind == "blend"}
    needed = set(tried) | parts
    heads: dict[Candidate, FieldHead] = {}
    for only in sorted({c.slices_only for c in needed}):
        columns = slice_columns if only else z.shape[1]
        zc = z[:, :columns]
        clf = LogisticRegression(
            class_weight="balanced",
            max_iter=2000,
            tol=LOGREG_TOL,
            warm_start=True,
            random_state=seed,
        )
        for c in sorted(c for c in needed if c.kind == "logreg" and c.slices_only == only):
            clf.set_params(C=c.C).fit(zc, y)
            weights, bias = _full_classes(clf, k, z.shape[1])
            heads[c] = FieldHead(weights, bias, *identity, c.C, slices_only=only)
        tree = Candidate("trees", 0.0, only)
        if tree in needed:
            head = FieldHead(np.zeros((k, z.shape[1])), np.zeros(k), *identity, 0.0)
            head.trees, head.tree_classes = fit_balanced_trees(
                zc, y, seed, TREE_ROUNDS, TREE_LEAVES
            )
            head.slices_only = only
            heads[tree] = head
        for c in (c for c in needed if c.kind == "blend" and c.slices_only == only):
            linear, trees = heads[Candidate("logreg", c.C, only)], heads[tree]
            heads[c] = FieldHead(
                linear.weights,
                linear.bias,
                *identity,
                c.C,
                trees=trees.trees,
                tree_classes=trees.tree_classes,
                slices_only=only,
            )
    return [heads[c] for c in tried]


def _full_classes(clf: LogisticRegression, k: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    """Weights and bias over all k classes (classes absent from training get -inf-ish bias)."""
    weights = np.zeros((k, d))  # inputs past the ones fitted on (slice features only): zero
    bias = np.full(k, -30.0)
    coef, intercept = clf.coef_, clf.intercept_
    if len(clf.classes_) == 2:  # binary: one row of coefficients for the second class
        coef = np.vstack([-coef[0] / 2, coef[0] / 2])
        intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
    for row, c in enumerate(clf.classes_):
        weights[int(c), : coef.shape[1]] = coef[row]
        bias[int(c)] = intercept[row]
    return weights, bias
