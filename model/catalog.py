"""FAISS indexes: the catalog of distinct training texts, and the training cases themselves.

Both hold L2-normalised embeddings in an inner-product index, so scores are cosine similarities.
Saved as FAISS's own binary index format plus JSON/CSV metadata; nothing is pickled.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

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


@dataclass
class CaseIndex:
    """Training cases' image embeddings, for "most similar training cases"."""

    cases: pd.DataFrame  # case_id, patient_id, one column per schema field (codes)
    index: faiss.Index

    @classmethod
    def build(cls, cases: pd.DataFrame, embeddings: np.ndarray) -> CaseIndex:
        return cls(cases.reset_index(drop=True), _flat_index(embeddings))

    def search(self, queries: np.ndarray, k: int):
        return _search(self.index, queries, k)

    def save(self, folder: Path) -> None:
        faiss.write_index(self.index, str(folder / "cases.faiss"))
        self.cases.to_csv(folder / "cases.csv", index=False)

    @classmethod
    def load(cls, folder: Path) -> CaseIndex:
        cases = pd.read_csv(folder / "cases.csv", dtype=str, keep_default_na=False)
        index = faiss.read_index(str(folder / "cases.faiss"))
        if index.ntotal != len(cases):
            raise ValueError(
                f"case index in {folder}: {index.ntotal} vectors for {len(cases)} cases"
            )
        return cls(cases, index)
