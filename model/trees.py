"""Gradient-boosted trees as plain arrays: exported from scikit-learn, walked with numpy.

A fitted `HistGradientBoostingClassifier` is a pickle-only object; the served read-out keeps
its trees as node arrays instead (saved with safetensors, like every other weight), and
`TreeEnsemble.raw_predict` walks all trees of a field at once, one tree level per step, so a
single case costs a few dozen vector operations rather than one Python loop per tree.

`fit_balanced_trees` is the one class-balanced gradient boosting of the project (the served
read-out's candidate and the report's baseline). scikit-learn bins each feature at weighted
quantiles when a fit has sample weights, and class balancing is sample weights: one Python
call per bin edge and feature, twenty times the cost of the trees themselves (15 s against
0.7 s for 5,000 cases x 238 features on one core). So the features are binned here first at
their unweighted quantiles, the trees are fitted on the binned values, and every split
threshold is moved to just above a bin edge (halfway to the next training value), where the
raw training values split exactly as the binned ones did.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from sklearn.ensemble import HistGradientBoostingClassifier


@dataclass
class TreeEnsemble:
    """All trees of one classifier, their nodes concatenated.

    Node arrays are [nodes]; `roots` and `column` are [trees]: where each tree starts and which
    raw-score column (class, or the one logit of a binary classifier) it adds to.
    """

    feature: np.ndarray  # int64: the feature a split node tests
    threshold: np.ndarray  # float64: go left when x <= threshold
    missing_left: np.ndarray  # bool: where a NaN goes
    left: np.ndarray  # int64: child indices, absolute (into the concatenated arrays)
    right: np.ndarray
    is_leaf: np.ndarray  # bool
    value: np.ndarray  # float64: a leaf's contribution (learning rate applied)
    roots: np.ndarray  # int64 [trees]
    column: np.ndarray  # int64 [trees]
    baseline: np.ndarray  # float64 [columns]: the raw score before any tree
    depth: int  # the deepest leaf's depth: the number of steps a walk needs
    # For the walk, built from the arrays above: [2, nodes], where a node goes on a comparison
    # of False (row 0) or True (row 1); a leaf goes to itself either way, so a walk needs no
    # test of which nodes are leaves (half the numpy calls per level, for one case).
    _next: np.ndarray = field(init=False, repr=False, compare=False)
    _roots: np.ndarray = field(init=False, repr=False, compare=False)
    _starts: np.ndarray = field(init=False, repr=False, compare=False)
    _sums_to: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        itself = np.arange(len(self.left), dtype=np.int64)
        self._next = np.stack(
            [
                np.where(self.is_leaf, itself, self.right),
                np.where(self.is_leaf, itself, self.left),
            ]
        )
        # The walk starts from the roots ordered by the column their tree adds to, so a walk's
        # leaf values sum into raw scores with one np.add.reduceat (in a fixed order, on one
        # thread: a BLAS matrix product spun up threads for batches and cost twice the CPU).
        order = np.argsort(self.column, kind="stable")
        self._roots = self.roots[order]
        ordered = self.column[order]
        self._starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
        self._sums_to = ordered[self._starts]  # the column of each run of trees

    @classmethod
    def concatenate(cls, parts: list[TreeEnsemble]) -> tuple[TreeEnsemble, list[slice]]:
        """One ensemble walking all of `parts` at once (their columns side by side), and the
        columns of each part's raw scores in it: a few numpy calls per tree level for every
        part together, not for each."""
        nodes = np.cumsum([0] + [len(p.left) for p in parts])
        columns = np.cumsum([0] + [len(p.baseline) for p in parts])

        def joined(name: str, offsets: np.ndarray | None = None) -> np.ndarray:
            arrays = [getattr(p, name) for p in parts]
            if offsets is not None:
                arrays = [a + off for a, off in zip(arrays, offsets, strict=False)]
            return np.concatenate(arrays)

        merged = cls(
            feature=joined("feature"),
            threshold=joined("threshold"),
            missing_left=joined("missing_left"),
            left=joined("left", nodes),
            right=joined("right", nodes),
            is_leaf=joined("is_leaf"),
            value=joined("value"),
            roots=joined("roots", nodes),
            column=joined("column", columns),
            baseline=joined("baseline"),
            depth=max(p.depth for p in parts),
        )
        return merged, [slice(a, b) for a, b in zip(columns[:-1], columns[1:], strict=True)]

    @classmethod
    def from_sklearn(cls, clf: HistGradientBoostingClassifier) -> TreeEnsemble:
        parts, roots, columns, offset = [], [], [], 0
        for iteration in clf._predictors:
            for col, predictor in enumerate(iteration):
                nodes = predictor.nodes
                if (nodes["is_categorical"] != 0).any():
                    raise ValueError("categorical splits are not supported")
                parts.append(nodes)
                roots.append(offset)
                columns.append(col)
                offset += len(nodes)
        nodes = np.concatenate(parts)
        # Child indices are per tree: make them absolute.
        base = np.repeat(np.array(roots, np.int64), [len(p) for p in parts])
        return cls(
            feature=nodes["feature_idx"].astype(np.int64),
            threshold=nodes["num_threshold"].astype(np.float64),
            missing_left=nodes["missing_go_to_left"].astype(bool),
            left=nodes["left"].astype(np.int64) + base,
            right=nodes["right"].astype(np.int64) + base,
            is_leaf=nodes["is_leaf"].astype(bool),
            value=nodes["value"].astype(np.float64),
            roots=np.array(roots, np.int64),
            column=np.array(columns, np.int64),
            baseline=np.asarray(clf._baseline_prediction, np.float64).reshape(-1),
            depth=int(nodes["depth"].max()),
        )

    def snap_thresholds(self, edges: dict[int, np.ndarray], splits: dict[int, np.ndarray]) -> None:
        """Moves each split on a binned feature f onto the largest of `edges[f]` under it, then
        to that edge's `splits[f]`: a point between the edge and the next training value above
        it, so the training values split as their bins did."""
        for f, values in edges.items():
            split = ~self.is_leaf & (self.feature == f)
            below = np.searchsorted(values, self.threshold[split], side="right") - 1
            self.threshold[split] = splits[f][np.clip(below, 0, len(values) - 1)]

    def raw_predict(self, x: np.ndarray) -> np.ndarray:
        """Raw scores [n, columns]: baseline + the leaf value of every tree."""
        x = np.asarray(x, np.float64)
        n = len(x)
        node = np.broadcast_to(self._roots, (n, len(self._roots)))  # (n, trees)
        rows = np.arange(n)[:, None]
        missing = bool(np.isnan(x).any())
        for _ in range(self.depth):
            value = x[rows, self.feature[node]]  # (n, trees); a leaf's is never used
            go_left = value <= self.threshold[node]
            if missing:
                go_left = np.where(np.isnan(value), self.missing_left[node], go_left)
            node = self._next[go_left.view(np.int8), node]
        out = np.tile(self.baseline, (n, 1))
        if len(node.T):
            out[:, self._sums_to] += np.add.reduceat(self.value[node], self._starts, axis=1)
        return out

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Probabilities over the classifier's own classes, as scikit-learn computes them."""
        return probabilities(self.raw_predict(x))

    # --- safetensors (everything float64, as the rest of the served read-out) ----------------
    FIELDS = ("feature", "threshold", "missing_left", "left", "right", "is_leaf", "value")

    def tensors(self, prefix: str) -> dict[str, np.ndarray]:
        out = {f"{prefix}{name}": getattr(self, name) for name in self.FIELDS}
        out |= {
            f"{prefix}roots": self.roots,
            f"{prefix}column": self.column,
            f"{prefix}baseline": self.baseline,
            f"{prefix}depth": np.array([self.depth]),
        }
        return {k: np.ascontiguousarray(v, np.float64) for k, v in out.items()}

    @classmethod
    def from_tensors(cls, t: dict[str, np.ndarray], prefix: str) -> TreeEnsemble:
        def ints(name: str) -> np.ndarray:
            return t[f"{prefix}{name}"].astype(np.int64)

        def flags(name: str) -> np.ndarray:
            return t[f"{prefix}{name}"] != 0

        return cls(
            feature=ints("feature"),
            threshold=t[f"{prefix}threshold"].astype(np.float64),
            missing_left=flags("missing_left"),
            left=ints("left"),
            right=ints("right"),
            is_leaf=flags("is_leaf"),
            value=t[f"{prefix}value"].astype(np.float64),
            roots=ints("roots"),
            column=ints("column"),
            baseline=t[f"{prefix}baseline"].astype(np.float64),
            depth=int(t[f"{prefix}depth"][0]),
        )


def probabilities(raw: np.ndarray) -> np.ndarray:
    """A classifier's raw scores [n, columns] -> probabilities over its classes, as
    scikit-learn computes them (a binary classifier has one column: the second class's
    logit)."""
    if raw.shape[1] == 1:
        p1 = 1.0 / (1.0 + np.exp(-raw[:, 0]))
        return np.stack([1.0 - p1, p1], 1)
    raw = raw - raw.max(1, keepdims=True)
    p = np.exp(raw)
    return p / p.sum(1, keepdims=True)


MAX_BINS = 255  # scikit-learn's own limit of bins per feature (one more is kept for NaN)


def quantile_bins(
    x: np.ndarray, max_bins: int = MAX_BINS
) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """x with each feature of more than `max_bins` distinct values replaced by the upper edge
    of its unweighted quantile bin, and those features' edges (ascending, the top bin's value
    last): a value v is binned to the least edge >= v, so "binned <= edge" iff "v <= edge"."""
    x = np.array(x, np.float64)
    q = np.linspace(0, 100, max_bins + 1)[1:-1]
    edges: dict[int, np.ndarray] = {}
    for f in range(x.shape[1]):
        col = x[:, f]
        seen = col[~np.isnan(col)]
        if len(np.unique(seen)) <= max_bins:
            continue  # scikit-learn splits these between distinct values already
        upper = np.unique(np.percentile(seen, q, method="averaged_inverted_cdf"))
        values = np.append(upper, seen.max())
        known = ~np.isnan(col)
        col[known] = values[np.searchsorted(upper, col[known], side="left")]
        edges[f] = values
    return x, edges


def split_points(x: np.ndarray, edges: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
    """Per binned feature, for each edge the midpoint between it and the next training value
    above it (the top edge: itself). A split there sends every training value where its bin
    went, as a split on the edge does, but no training value sits on it: an edge is often a
    training value itself, and a case equal to one moved by float rounding (an embedding
    computed in a batch of another size: 4e-8) would flip the split. scikit-learn splits
    features of few distinct values between them likewise."""
    splits = {}
    for f, values in edges.items():
        seen = np.unique(x[:, f][~np.isnan(x[:, f])])
        above = np.searchsorted(seen, values, side="right")
        inside = above < len(seen)
        splits[f] = values.copy()
        splits[f][inside] = (values[inside] + seen[above[inside]]) / 2
    return splits


def fit_balanced_trees(
    x: np.ndarray, y: np.ndarray, seed: int, rounds: int = 60, leaves: int = 15
) -> tuple[TreeEnsemble, np.ndarray]:
    """Class-balanced gradient boosting on x [n, features], y [n] (two classes or more): the
    trees as node arrays that read raw x, and the classes their columns stand for."""
    from sklearn.ensemble import HistGradientBoostingClassifier  # fitting only (model.served)
    from threadpoolctl import threadpool_limits

    binned, edges = quantile_bins(x)
    clf = HistGradientBoostingClassifier(
        max_iter=rounds,
        max_leaf_nodes=leaves,
        class_weight="balanced",
        # its inner split is stratified: too few cases leave a class out of it
        early_stopping=bool(len(y) >= 500),
        random_state=seed,
    )
    with threadpool_limits(1):  # OpenMP threads on a busy 2-core machine spin more than work
        clf.fit(binned, y)
    trees = TreeEnsemble.from_sklearn(clf)
    trees.snap_thresholds(edges, split_points(np.asarray(x, np.float64), edges))
    return trees, np.asarray(clf.classes_, np.int64)
