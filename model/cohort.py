"""A cohort on disk: a case table, per-slice features and a descriptor schema.

Layout of a cohort folder::

    cohort.json    name, source, simulated flag, feature names, counts, content hash
    schema.json    the descriptor schema (model.schema.Schema)
    cases.csv      one row per case: case_id, patient_id, [nodule_id], offset, n_slices,
                   one column per descriptor (empty cell = unknown), [raw ratings]
    features.npy   float32 [total slices, feature dim]; case i owns rows offset..offset+n_slices
    outlines.npz   optional: each case's contours in mm (model.outline.OutlineStore), for
                   cohorts imported from outlines (LIDC), so training cases can be drawn

Features are memory-mapped on load, so a large cohort is streamed, not copied.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from model.outline import OutlineStore
from model.schema import Schema

REQUIRED_COLUMNS = ("case_id", "patient_id", "offset", "n_slices")


class CohortError(ValueError):
    """A cohort folder that is missing, incomplete or inconsistent."""


@dataclass
class Cohort:
    name: str  # e.g. "lidc-idri"
    schema: Schema  # descriptor schema the labels are read with
    cases: pd.DataFrame  # the case table (see module doc)
    features: np.ndarray  # float32 [total slices, dim], usually a read-only memmap
    feature_names: list[str]  # one name per feature column
    simulated: bool = False  # True for generated cohorts: every output says so
    source: str = ""  # where the data came from, one line
    extra: dict = field(default_factory=dict)  # importer-specific metadata
    outlines: OutlineStore | None = None  # per case contours in mm, where the importer has them

    @property
    def feature_extractor(self) -> str | None:
        """ "name/version" of the code that computed the features (None: simulated, unknown)."""
        return self.extra.get("feature_extractor")

    def __post_init__(self) -> None:
        missing = [c for c in REQUIRED_COLUMNS if c not in self.cases.columns]
        if missing:
            raise CohortError(f"case table lacks column(s) {missing}")
        if self.features.ndim != 2:
            raise CohortError(
                f"features must be 2-D [slices, dim], got shape {self.features.shape}"
            )
        if len(self.feature_names) != self.features.shape[1]:
            raise CohortError(
                f"{len(self.feature_names)} feature names for "
                f"{self.features.shape[1]} feature columns"
            )
        ends = self.cases["offset"].to_numpy() + self.cases["n_slices"].to_numpy()
        if len(self.cases) and (
            ends.max() > len(self.features) or self.cases["n_slices"].min() < 1
        ):
            raise CohortError("case table offsets/n_slices do not fit the feature array")
        self.labels = self.schema.encode_table(self.cases.to_dict("records"))  # [n, fields]
        self._offsets = self.cases["offset"].to_numpy(np.int64)
        self._counts = self.cases["n_slices"].to_numpy(np.int64)

    # --- access ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.cases)

    @property
    def feature_dim(self) -> int:
        return int(self.features.shape[1])

    @property
    def patients(self) -> np.ndarray:
        return self.cases["patient_id"].astype(str).to_numpy()

    @property
    def nodules(self) -> np.ndarray:
        """Each case's nodule (its reads share one); a case is its own nodule without them."""
        column = "nodule_id" if "nodule_id" in self.cases.columns else "case_id"
        return self.cases[column].astype(str).to_numpy()

    @property
    def case_ids(self) -> list[str]:
        return self.cases["case_id"].astype(str).tolist()

    def slices(self, i: int) -> np.ndarray:
        """Per-slice features of case i: float32 [n_slices, dim]."""
        start, n = self._offsets[i], self._counts[i]
        return np.asarray(self.features[start : start + n], dtype=np.float32)

    def texts(self) -> list[str]:
        return [self.schema.text(row) for row in self.labels]

    def with_schema(self, schema: Schema) -> Cohort:
        """The same cases read with another schema (e.g. LIDC ratings instead of bins)."""
        return Cohort(
            self.name,
            schema,
            self.cases,
            self.features,
            self.feature_names,
            self.simulated,
            self.source,
            self.extra,
            self.outlines,
        )

    def subset(self, indices: Sequence[int] | np.ndarray) -> CohortView:
        return CohortView(self, np.asarray(indices, dtype=np.int64))

    def content_hash(self) -> str:
        """sha256 over the case table, the schema and the features (stable across saves)."""
        h = hashlib.sha256()
        h.update(self.cases.to_csv(index=False).encode())
        h.update(json.dumps(self.schema.to_dict(), sort_keys=True).encode())
        for start in range(0, len(self.features), 65536):
            h.update(np.ascontiguousarray(self.features[start : start + 65536]).tobytes())
        return h.hexdigest()

    def describe(self) -> dict:
        """Counts for reports: cases, patients, slices, and per field class/unknown counts."""
        fields = {}
        for j, f in enumerate(self.schema.fields):
            col = self.labels[:, j]
            counts = {f.values[k]: int((col == k).sum()) for k in range(len(f.values))}
            fields[f.name] = {"counts": counts, "unknown": int((col < 0).sum())}
        return {
            "name": self.name,
            "simulated": self.simulated,
            "cases": len(self),
            "patients": int(len(np.unique(self.patients))),
            "slices": int(self.cases["n_slices"].sum()),
            "feature_dim": self.feature_dim,
            "fields": fields,
        }

    # --- persistence ----------------------------------------------------------------------
    def save(self, directory: Path) -> Path:
        """Write atomically: into a temporary sibling folder, then rename into place."""
        directory = Path(directory)
        with atomic_directory(directory) as tmp:
            np.save(tmp / "features.npy", np.ascontiguousarray(self.features, dtype=np.float32))
            if self.outlines is not None:
                self.outlines.save(tmp / "outlines.npz")
            write_metadata(self, tmp)
        return directory

    @classmethod
    def load(cls, directory: Path, schema: Schema | None = None) -> Cohort:
        directory = Path(directory)
        for name in ("cohort.json", "schema.json", "cases.csv", "features.npy"):
            if not (directory / name).is_file():
                raise CohortError(
                    f"{directory} is not a cohort folder: {name} is missing "
                    "(create one with `clipmed data lidc` or `clipmed data simulate`)"
                )
        meta = json.loads((directory / "cohort.json").read_text())
        cases = pd.read_csv(
            directory / "cases.csv",
            dtype={"case_id": str, "patient_id": str},
            keep_default_na=False,
            na_values=[""],
        )
        features = np.load(directory / "features.npy", mmap_mode="r", allow_pickle=False)
        outlines_path = directory / "outlines.npz"
        outlines = OutlineStore.load(outlines_path) if outlines_path.is_file() else None
        return cls(
            name=meta["name"],
            schema=schema or Schema.load(directory / "schema.json"),
            cases=cases,
            features=features,
            feature_names=list(meta["feature_names"]),
            simulated=bool(meta.get("simulated", False)),
            source=meta.get("source", ""),
            extra=meta.get("extra", {}),
            outlines=outlines,
        )


@dataclass
class CohortView:
    """A subset of a cohort's cases (a fold), without copying features."""

    cohort: Cohort
    indices: np.ndarray  # int64 case indices into the parent cohort

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def schema(self) -> Schema:
        return self.cohort.schema

    @property
    def feature_names(self) -> list[str]:
        return self.cohort.feature_names

    @property
    def feature_extractor(self) -> str | None:
        return self.cohort.feature_extractor

    @property
    def outlines(self) -> OutlineStore | None:
        return self.cohort.outlines  # the whole cohort's; a checkpoint keeps its own cases'

    @property
    def case_ids(self) -> list[str]:
        ids = self.cohort.cases["case_id"].astype(str).to_numpy()
        return ids[self.indices].tolist()

    @property
    def labels(self) -> np.ndarray:
        return self.cohort.labels[self.indices]

    @property
    def patients(self) -> np.ndarray:
        return self.cohort.patients[self.indices]

    @property
    def nodules(self) -> np.ndarray:
        return self.cohort.nodules[self.indices]

    def slices(self, i: int) -> np.ndarray:
        return self.cohort.slices(int(self.indices[i]))

    def texts(self) -> list[str]:
        return [self.schema.text(row) for row in self.labels]


@contextmanager
def atomic_directory(directory: Path) -> Iterator[Path]:
    """A temporary sibling folder that replaces `directory` when the block ends without error.

    Readers never see a half-written cohort: the folder appears (or is replaced) by a rename.
    On error the temporary folder is removed and `directory` is left as it was.
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        yield tmp
    except BaseException:
        _rmtree(tmp)
        raise
    if directory.exists():
        old = directory.with_name(f".{directory.name}.old")
        _rmtree(old)  # left over from an interrupted replace
        os.replace(directory, old)
        os.replace(tmp, directory)
        _rmtree(old)
    else:
        os.replace(tmp, directory)


def write_metadata(cohort: Cohort, folder: Path) -> None:
    """Write cases.csv, schema.json and cohort.json of `cohort` into `folder`.

    features.npy must already hold the cohort's features (the content hash reads them).
    Shared by :meth:`Cohort.save` and importers that stream features straight to disk.
    """
    folder = Path(folder)
    cohort.cases.to_csv(folder / "cases.csv", index=False)
    cohort.schema.save(folder / "schema.json")
    meta = {
        "name": cohort.name,
        "simulated": cohort.simulated,
        "source": cohort.source,
        "feature_names": cohort.feature_names,
        "n_cases": len(cohort),
        "content_hash": cohort.content_hash(),
        **({"extra": cohort.extra} if cohort.extra else {}),
    }
    (folder / "cohort.json").write_text(json.dumps(meta, indent=2) + "\n")


def _rmtree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
