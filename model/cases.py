"""Case sets: what training, checkpoints and catalogs read, and the in-memory kinds of them.

A case set is a cohort on disk (model.cohort.Cohort), a fold of one (CohortView), cases built
in memory (corrected cases from the service, CaseList), several joined (Joined) or a subset
(model.train.Subset). Each carries what a checkpoint records of its cases: the schema their
labels are read with, their ids, and the feature extractor, feature names and outlines where
the cases have them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd

from model.outline import OutlineStore
from model.schema import Schema


class CaseSet(Protocol):
    """Cases with per-slice features, descriptor labels and what a checkpoint records of them."""

    @property
    def labels(self) -> np.ndarray: ...  # int64 (n, fields), -1 = unknown
    @property
    def patients(self) -> np.ndarray: ...  # str (n,)
    @property
    def schema(self) -> Schema: ...  # the schema the labels are read with
    @property
    def case_ids(self) -> list[str]: ...  # one id per case
    @property
    def feature_names(self) -> list[str] | None: ...  # one per feature column, where known
    @property
    def feature_extractor(self) -> str | None: ...  # "name/version" of the features' code
    @property
    def outlines(self) -> OutlineStore | None: ...  # contours of (some of) the cases

    def __len__(self) -> int: ...
    def slices(self, i: int) -> np.ndarray: ...  # float32 (n_slices, feature_dim)
    def texts(self) -> list[str]: ...  # one descriptor text per case


def case_table(cases: CaseSet) -> pd.DataFrame:
    """The similar-case table: id, patient and one column of stored codes per field."""
    table = pd.DataFrame({"case_id": list(cases.case_ids), "patient_id": cases.patients})
    for name, column in cases.schema.value_columns(cases.labels).items():
        table[name] = column
    return table


@dataclass
class CaseList:
    """Cases held in memory: one (slices, features) array, label vector and patient each."""

    schema: Schema
    arrays: list[np.ndarray]  # (n_slices, feature_dim) float32 each
    labels: np.ndarray  # int64 (n, fields), -1 = unknown
    patients: np.ndarray  # str (n,)
    case_ids: list[str]
    feature_names: list[str] | None = None  # in-memory cases name no feature columns
    feature_extractor: str | None = None
    outlines: OutlineStore | None = None

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, np.int64)
        self.patients = np.asarray(self.patients, dtype=str)
        n = len(self.arrays)
        if not n == len(self.labels) == len(self.patients) == len(self.case_ids):
            raise ValueError("arrays, labels, patients and case ids must have one entry per case")
        if self.labels.shape != (n, len(self.schema.fields)):
            raise ValueError(f"labels must be (cases, {len(self.schema.fields)} fields)")

    @classmethod
    def empty(cls, schema: Schema) -> CaseList:
        return cls(schema, [], np.zeros((0, len(schema.fields))), np.zeros(0, str), [])

    def __len__(self) -> int:
        return len(self.arrays)

    def slices(self, i: int) -> np.ndarray:
        return self.arrays[i]

    def texts(self) -> list[str]:
        return [self.schema.text(row) for row in self.labels]


class Joined:
    """Several case sets read as one, in order, without copying features.

    The first set (a cohort, say) gives the schema, feature names, extractor and outlines."""

    def __init__(self, parts: Sequence[CaseSet]) -> None:
        first = parts[0]
        self.schema = first.schema
        self.feature_names = first.feature_names
        self.feature_extractor = first.feature_extractor
        self.outlines = first.outlines
        self.parts = [p for p in parts if len(p)]
        self.case_ids = [str(c) for p in self.parts for c in p.case_ids]
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
