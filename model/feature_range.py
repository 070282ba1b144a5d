"""How far outside its training data a case's features may lie before the case is refused.

A checkpoint stores, per feature, the minimum, maximum, mean and standard deviation over every
training slice (`training_feature_ranges`, in its metadata under "feature_ranges"). A value is
accepted within SPAN_MULTIPLE spans of the training range on either side::

    min - 10 * span  <=  x  <=  max + 10 * span,    span = max(max - min, SPAN_FLOOR)

which is generous for real measurements (an LIDC nodule 10x larger than the largest seen still
passes) yet refuses what no morphometry produces (1e30, -3e38), the values that overflowed the
model into NaN similarities. Checkpoints written before the ranges were stored fall back to
|x| <= ABSOLUTE_LIMIT, far beyond every LIDC feature (the largest, area, is under 1e3 mm2).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from model.validation import InputError

SPAN_MULTIPLE = 10.0
SPAN_FLOOR = 1.0  # a feature constant in training (span 0) still takes values within +-10 of it
ABSOLUTE_LIMIT = 1e6  # checkpoints without stored ranges


def training_feature_ranges(cases, feature_names: Sequence[str] | None = None) -> dict:
    """Per-feature min, max, mean and std over every slice of `cases` (a model.train.CaseSet),
    JSON-ready for a checkpoint's metadata; streamed case by case, in float64."""
    if not len(cases):
        raise ValueError("no training cases to take feature ranges from")
    first = np.asarray(cases.slices(0), dtype=np.float64)  # (s, f)
    low, high = first.min(0), first.max(0)
    total, squares = first.sum(0), (first**2).sum(0)
    slices = len(first)
    for i in range(1, len(cases)):
        x = np.asarray(cases.slices(i), dtype=np.float64)
        low, high = np.minimum(low, x.min(0)), np.maximum(high, x.max(0))
        total, squares = total + x.sum(0), squares + (x**2).sum(0)
        slices += len(x)
    mean = total / slices
    std = np.sqrt(np.maximum(squares / slices - mean**2, 0.0))
    return {
        "slices": slices,
        "names": list(feature_names) if feature_names is not None else None,
        "min": low.tolist(),
        "max": high.tolist(),
        "mean": mean.tolist(),
        "std": std.tolist(),
    }


@dataclass(frozen=True)
class FeatureBounds:
    """The accepted value range of each feature column."""

    low: np.ndarray  # (f,) float64
    high: np.ndarray  # (f,) float64
    names: list[str] | None = None  # column names, where the training cohort had them
    trained: tuple[np.ndarray, np.ndarray] | None = None  # the training (min, max), if known

    @classmethod
    def absolute(cls, feature_dim: int, limit: float = ABSOLUTE_LIMIT) -> FeatureBounds:
        return cls(np.full(feature_dim, -limit), np.full(feature_dim, limit))

    @classmethod
    def from_ranges(cls, ranges: dict) -> FeatureBounds:
        low = np.asarray(ranges["min"], np.float64)
        high = np.asarray(ranges["max"], np.float64)
        span = np.maximum(high - low, SPAN_FLOOR)
        names = ranges.get("names")
        return cls(
            low - SPAN_MULTIPLE * span,
            high + SPAN_MULTIPLE * span,
            list(names) if names else None,
            (low, high),
        )

    @classmethod
    def for_checkpoint(cls, meta: dict, feature_dim: int) -> FeatureBounds:
        """From a checkpoint's stored ranges; the absolute bound for one without them."""
        ranges = meta.get("feature_ranges")
        if not ranges or len(ranges.get("min", ())) != feature_dim:
            return cls.absolute(feature_dim)
        return cls.from_ranges(ranges)

    def check(self, array: np.ndarray) -> None:
        """InputError naming the first value outside its range: feature, slice and range."""
        outside = (array < self.low) | (array > self.high)  # (s, f); NaN compares False
        if not outside.any():
            return
        where = np.argwhere(outside)
        i, j = (int(v) for v in where[0])
        feature = f"feature {j}" if self.names is None else f"feature {self.names[j]!r} ({j})"
        accepted = f"accepted: {self.low[j]:.6g} to {self.high[j]:.6g}"
        if self.trained is not None:
            low, high = self.trained
            accepted = f"training range {low[j]:.6g} to {high[j]:.6g}; {accepted}"
        more = f" ({len(where) - 1} more value(s) out of range)" if len(where) > 1 else ""
        raise InputError(
            f"{feature} of slice {i} is {float(array[i, j]):.6g}, far outside what the model "
            f"takes ({accepted}){more}"
        )
