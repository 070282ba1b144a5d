"""`clipmed explain` on many cases: a cohort folder or a folder of case files, explained in
batches through `Explainer.explain_batch`, one JSON line (or CSV row) per case."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import TextIO

import numpy as np
from tqdm import tqdm

from model.features_io import load_features_file
from model.inference import Explainer, InputError, validate_features

CASE_SUFFIXES = (".npy", ".npz", ".csv")
FORMATS = ("jsonl", "csv")


def case_source(
    folder: Path, columns: list[str] | None = None
) -> tuple[int, Iterator[tuple[str, np.ndarray | InputError]]]:
    """(number of cases, (name, features or the error reading them) per case): a cohort
    folder's cases by case_id, else the folder's feature files by name, sorted. A .csv header
    must name `columns` (the model's feature names)."""
    from model.cohort import Cohort

    if (folder / "cohort.json").is_file():
        cohort = Cohort.load(folder)
        names = cohort.cases["case_id"].tolist()
        return len(names), ((name, cohort.slices(i)) for i, name in enumerate(names))
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in CASE_SUFFIXES)
    if not files:
        raise InputError(
            f"{folder} holds no cohort (cohort.json) and no case files ({', '.join(CASE_SUFFIXES)})"
        )
    return len(files), ((p.name, _read(p, columns)) for p in files)


def _read(path: Path, columns: list[str] | None) -> np.ndarray | InputError:
    try:
        return load_features_file(path, columns)
    except InputError as e:
        return e


def explain_cases(
    explainer: Explainer,
    cases: Iterator[tuple[str, np.ndarray | InputError]],
    k: int,
    batch_size: int = 256,
) -> Iterator[tuple[str, dict | str]]:
    """(name, explanation or why the case was refused) per case, in order; the valid cases
    of each batch go through the model in one pass."""
    dim, bounds = explainer.checkpoint.config.feature_dim, explainer.bounds
    while batch := list(islice(cases, batch_size)):
        answers: list[dict | str | None] = []
        valid = []
        for _, read in batch:
            try:
                if isinstance(read, InputError):
                    raise read
                valid.append(validate_features(read, dim, bounds=bounds))
                answers.append(None)
            except InputError as e:
                answers.append(str(e))
        explained = iter(explainer.explain_batch(valid, k))
        for (name, _), answer in zip(batch, answers, strict=True):
            yield name, next(explained) if answer is None else answer


class Writer:
    """One JSON line per case, or a CSV row: case, each field's served value and probability."""

    def __init__(self, out: TextIO, fmt: str, field_names: list[str]) -> None:
        self.out, self.fmt = out, fmt
        if fmt == "csv":
            self.csv = csv.writer(out, lineterminator="\n")
            columns = [c for f in field_names for c in (f, f"{f}_probability")]
            self.blank = [""] * len(columns)
            self.csv.writerow(["case", *columns, "low_confidence", "error"])

    def write(self, name: str, answer: dict | str) -> None:
        if self.fmt == "jsonl":
            line = {"error": answer} if isinstance(answer, str) else answer
            self.out.write(json.dumps({"case": name, **line}) + "\n")
        elif isinstance(answer, str):
            self.csv.writerow([name, *self.blank, "", answer])
        else:
            values = [
                v
                for f in answer["fields"]
                for v in (f["served"]["value"], f["served"]["probability"])
            ]
            self.csv.writerow([name, *values, answer["low_confidence"], ""])


def explain_folder(
    explainer: Explainer,
    folder: Path,
    out: TextIO,
    *,
    k: int = 5,
    fmt: str = "jsonl",
    batch_size: int = 256,
    progress: bool = True,
) -> tuple[int, int]:
    """Writes every case of `folder` to `out`; returns (explained, refused)."""
    total, cases = case_source(folder, explainer.bounds.names)
    writer = Writer(out, fmt, explainer.checkpoint.schema.field_names)
    explained = refused = 0
    with tqdm(total=total, unit="case", desc="explain", disable=not progress) as bar:
        for name, answer in explain_cases(explainer, cases, k, batch_size):
            writer.write(name, answer)
            refused += isinstance(answer, str)
            explained += not isinstance(answer, str)
            bar.update()
    return explained, refused
