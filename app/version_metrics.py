"""The model versions' validation metrics laid side by side (the admin models page): fields x
versions, one table per prediction mode."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from app.tables import ModelVersion
from model.evaluate import MODEL_METHODS

# train's validation metrics: "val/<field>/<mode>_macro_f1" (model.evaluate.validation_metrics)
FIELD_METRIC = re.compile(r"^val/(?P<field>[^/]+)/(?P<mode>[^/]+)_macro_f1$")
COUNT_METRICS = {"cases"}  # numbers of things ("val/cases"), not scores


@dataclass(frozen=True)
class MetricRow:
    name: str
    values: list[float | None]  # one per version, in the comparison's order

    @property
    def is_count(self) -> bool:
        """A number of things, shown as a whole number rather than a score."""
        return self.name.rsplit("/", 1)[-1] in COUNT_METRICS

    @property
    def best(self) -> float | None:
        present = [v for v in self.values if v is not None]
        return max(present) if len(present) > 1 else None


@dataclass
class MetricsComparison:
    versions: list[str]
    by_mode: dict[str, list[MetricRow]] = field(default_factory=dict)  # mode -> field rows
    other: list[MetricRow] = field(default_factory=list)  # any other key, e.g. val/cases

    @property
    def empty(self) -> bool:
        return not self.by_mode and not self.other


def compare_metrics(versions: list[ModelVersion]) -> MetricsComparison:
    """Fields x versions, one table per prediction mode, from each version's flat metrics."""
    names = [v.version for v in versions]
    per_mode: dict[str, dict[str, list[float | None]]] = {}
    other: dict[str, list[float | None]] = {}
    for column, version in enumerate(versions):
        for key, value in (version.metrics or {}).items():
            if not isinstance(value, int | float) or isinstance(value, bool):
                continue
            match = FIELD_METRIC.match(key)
            if match:
                mode = per_mode.setdefault(match["mode"], {})
                row = mode.setdefault(match["field"], [None] * len(versions))
            else:
                row = other.setdefault(key, [None] * len(versions))
            row[column] = float(value)
    order = [m for m in MODEL_METHODS if m in per_mode] + sorted(set(per_mode) - {*MODEL_METHODS})
    return MetricsComparison(
        names,
        {
            mode: [MetricRow(f, values) for f, values in sorted(per_mode[mode].items())]
            for mode in order
        },
        [MetricRow(key, values) for key, values in sorted(other.items())],
    )
