"""Case sets built in memory (corrected cases from the service) and joined to a cohort.

Training, checkpoints and catalogs read any object with `len`, `slices(i)`, `texts()`,
`labels` and `patients` (model.train.CaseSet); a cohort on disk is one, these are the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from model.schema import Schema


@dataclass
class CaseList:
    """Cases held in memory: one (slices, features) array, label vector and patient each."""

    schema: Schema
    arrays: list[np.ndarray]  # (n_slices, feature_dim) float32 each
    labels: np.ndarray  # int64 (n, fields), -1 = unknown
    patients: np.ndarray  # str (n,)
    case_ids: list[str]

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, np.int64)
        self.patients = np.asarray(self.patients, dtype=str)
        n = len(self.arrays)
        if not n == len(self.labels) == len(self.patients) == len(self.case_ids):
            raise ValueError("arrays, labels, patients and case ids must have one entry per case")
        if self.labels.shape != (n, len(self.schema.fields)):
            raise ValueError(f"labels must be (cases, {len(self.schema.fields)} fields)")

    def __len__(self) -> int:
        return len(self.arrays)

    def slices(self, i: int) -> np.ndarray:
        return self.arrays[i]

    def texts(self) -> list[str]:
        return [self.schema.text(row) for row in self.labels]


class Joined:
    """Several case sets read as one, in order, without copying features."""

    def __init__(self, parts: Sequence, case_ids: Sequence[Sequence[str]]) -> None:
        self.parts = [p for p in parts if len(p)]
        self.case_ids = [
            str(c) for ids, p in zip(case_ids, parts, strict=True) if len(p) for c in ids
        ]
        self.labels = np.concatenate([p.labels for p in self.parts])
        self.patients = np.concatenate([np.asarray(p.patients, dtype=str) for p in self.parts])
        self._starts = np.cumsum([0] + [len(p) for p in self.parts])

    def __len__(self) -> int:
        return int(self._starts[-1])

    def slices(self, i: int) -> np.ndarray:
        part = int(np.searchsorted(self._starts, i, side="right")) - 1
        return self.parts[part].slices(i - int(self._starts[part]))

    def texts(self) -> list[str]:
        return [t for p in self.parts for t in p.texts()]
