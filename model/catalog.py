"""FAISS indexes: the catalog of distinct training texts, and the training cases themselves.

Both hold L2-normalised embeddings in an inner-product index, so scores are cosine similarities.
Saved as FAISS's own binary index format plus JSON/CSV metadata; nothing is pickled.

The catalog (a few hundred texts) is always searched exactly. The case index grows with the
archive, so it is exact ("flat") while small and approximate ("hnsw" or "ivf") beyond
`EXACT_BELOW` cases; bench/index_scale.py measured the choice and its parameters
(docs/benchmarks.md, "Similar-case index at scale").
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pandas as pd


def _flat_index(embeddings: np.ndarray) -> faiss.Index:
    index = faiss.IndexFlatIP(embeddings.shape[1])
    index.add(np.ascontiguousarray(embeddings, dtype=np.float32))
    return index


def _search(index: faiss.Index, queries: np.ndarray, k: int):
    k = min(k, index.ntotal)
    scores, ids = index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    return scores, ids  # (n, k) cosine similarities, row ids (-1 where fewer than k exist)


@dataclass
class Catalog:
    """Distinct descriptor texts of the training cases with their embeddings."""

    texts: list[str]  # distinct texts, catalog row order
    labels: np.ndarray  # int64 (t, fields), -1 = unknown
    counts: np.ndarray  # training cases per text
    index: faiss.Index  # inner-product index over the text embeddings

    @classmethod
    def build(
        cls, texts: list[str], labels: np.ndarray, counts: np.ndarray, embeddings: np.ndarray
    ) -> Catalog:
        return cls(
            list(texts),
            np.asarray(labels, np.int64),
            np.asarray(counts, np.int64),
            _flat_index(embeddings),
        )

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def embeddings(self) -> np.ndarray:
        return self.index.reconstruct_n(0, self.index.ntotal)

    @cached_property
    def version(self) -> str:
        h = hashlib.sha256("\n".join(self.texts).encode())
        h.update(np.ascontiguousarray(self.embeddings).tobytes())
        return h.hexdigest()[:12]

    def search(self, queries: np.ndarray, k: int):
        return _search(self.index, queries, k)

    def save(self, folder: Path) -> None:
        faiss.write_index(self.index, str(folder / "catalog.faiss"))
        meta = {
            "texts": self.texts,
            "labels": self.labels.tolist(),
            "counts": self.counts.tolist(),
            "version": self.version,
        }
        (folder / "catalog.json").write_text(json.dumps(meta) + "\n")

    @classmethod
    def load(cls, folder: Path) -> Catalog:
        meta = json.loads((folder / "catalog.json").read_text())
        index = faiss.read_index(str(folder / "catalog.faiss"))
        if index.ntotal != len(meta["texts"]):
            raise ValueError(
                f"catalog in {folder}: {index.ntotal} vectors for {len(meta['texts'])} texts"
            )
        return cls(
            meta["texts"],
            np.asarray(meta["labels"], np.int64).reshape(len(meta["texts"]), -1),
            np.asarray(meta["counts"], np.int64),
            index,
        )


CASE_INDEX_KINDS = ("flat", "hnsw", "ivf")
# "auto" searches exactly below this many cases: one flat 128-d query took 0.2 ms at 10k cases
# on one core, 2-6 ms at 100k and 40-106 ms at 1M; HNSW stays under 1.5 ms at 1M.
EXACT_BELOW = 50_000
# "auto" from EXACT_BELOW up: at 1M cases HNSW reached recall@10 0.99 at ~1.2 ms p50, where IVF
# needed ~6 ms p50 for 0.97 (bench/index_scale.py).
APPROXIMATE = "hnsw"


def choose_case_index(n_cases: int, setting: str = "auto", exact_below: int = EXACT_BELOW) -> str:
    """The index kind for `n_cases` cases: `setting` itself, or by size when it is "auto"."""
    if setting == "auto":
        return "flat" if n_cases < exact_below else APPROXIMATE
    if setting not in CASE_INDEX_KINDS:
        raise ValueError(
            f"unknown case index {setting!r}; choose auto or one of {', '.join(CASE_INDEX_KINDS)}"
        )
    return setting


@dataclass(frozen=True)
class CaseIndexSpec:
    """Kind and parameters of a case index; saved as cases.json beside cases.faiss."""

    kind: str = "flat"  # "flat" (exact), "hnsw" (graph) or "ivf" (inverted lists)
    hnsw_m: int = 32  # hnsw: graph neighbours per vector (memory: 2 * m * 4 bytes per case)
    hnsw_ef_construction: int = 40  # hnsw: candidates kept while inserting (build time)
    hnsw_ef_search: int = 256  # hnsw: candidates per query; 128 gave recall@10 0.96 at 1M
    ivf_nlist: int = 0  # ivf: inverted lists; 0 = 4 * sqrt(cases), set at build time
    ivf_nprobe: int = 128  # ivf: lists scanned per query; 64 gave recall@10 0.91 at 1M
    ivf_train_per_list: int = 40  # ivf: k-means training sample, vectors per list

    def __post_init__(self) -> None:
        if self.kind not in CASE_INDEX_KINDS:
            raise ValueError(f"unknown case index kind {self.kind!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> CaseIndexSpec:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def build_case_faiss(embeddings: np.ndarray, spec: CaseIndexSpec, seed: int = 0):
    """(index, spec with every build-time choice filled in) over L2-normalised embeddings."""
    x = np.ascontiguousarray(embeddings, dtype=np.float32)  # (n, d)
    n, d = x.shape
    if spec.kind == "flat":
        return _flat_index(x), spec
    index: faiss.Index
    if spec.kind == "hnsw":
        hnsw = faiss.IndexHNSWFlat(d, spec.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = spec.hnsw_ef_construction
        hnsw.add(x)
        index = hnsw
    else:
        if n == 0:
            raise ValueError("an IVF index needs cases to train its lists on")
        nlist = spec.ivf_nlist or max(1, min(n, round(4 * math.sqrt(n))))
        spec = dataclasses.replace(spec, ivf_nlist=nlist)
        ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        ivf.cp.seed = seed
        sample = min(n, nlist * spec.ivf_train_per_list)
        rows = np.sort(np.random.default_rng(seed).choice(n, sample, replace=False))
        ivf.train(x[rows])
        ivf.add(x)
        index = ivf
    set_search_parameters(index, spec)
    return index, spec


def set_search_parameters(index: faiss.Index, spec: CaseIndexSpec) -> None:
    """Apply the query-time parameters of `spec`; FAISS files do not promise to carry them."""
    if spec.kind == "hnsw":
        hnsw: Any = faiss.downcast_index(index)  # the stubs type it as the base Index
        hnsw.hnsw.efSearch = spec.hnsw_ef_search
    elif spec.kind == "ivf":
        faiss.extract_index_ivf(index).nprobe = spec.ivf_nprobe


_INDEX_CLASS = {"flat": faiss.IndexFlatIP, "hnsw": faiss.IndexHNSWFlat, "ivf": faiss.IndexIVFFlat}


@dataclass
class CaseIndex:
    """Training cases' image embeddings, for "most similar training cases"."""

    cases: pd.DataFrame  # case_id, patient_id, one column per schema field (codes)
    index: faiss.Index
    spec: CaseIndexSpec = CaseIndexSpec()  # kind and parameters of `index`

    @classmethod
    def build(
        cls, cases: pd.DataFrame, embeddings: np.ndarray, spec: CaseIndexSpec | None = None
    ) -> CaseIndex:
        index, spec = build_case_faiss(embeddings, spec or CaseIndexSpec())
        return cls(cases.reset_index(drop=True), index, spec)

    def search(self, queries: np.ndarray, k: int):
        return _search(self.index, queries, k)

    def save(self, folder: Path) -> None:
        faiss.write_index(self.index, str(folder / "cases.faiss"))
        self.cases.to_csv(folder / "cases.csv", index=False)
        meta = {**self.spec.to_dict(), "cases": int(self.index.ntotal)}
        (folder / "cases.json").write_text(json.dumps(meta, indent=2) + "\n")

    @classmethod
    def load(cls, folder: Path) -> CaseIndex:
        cases = pd.read_csv(folder / "cases.csv", dtype=str, keep_default_na=False)
        index = faiss.read_index(str(folder / "cases.faiss"))
        # Checkpoints from before cases.json hold an exact index.
        meta_file = folder / "cases.json"
        spec = CaseIndexSpec()
        if meta_file.is_file():
            spec = CaseIndexSpec.from_dict(json.loads(meta_file.read_text()))
        if not isinstance(index, _INDEX_CLASS[spec.kind]):
            raise ValueError(
                f"case index in {folder}: cases.json says {spec.kind!r}, "
                f"cases.faiss holds {type(index).__name__}"
            )
        if index.ntotal != len(cases):
            raise ValueError(
                f"case index in {folder}: {index.ntotal} vectors for {len(cases)} cases"
            )
        set_search_parameters(index, spec)
        return cls(cases, index, spec)
