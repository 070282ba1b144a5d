"""A simulated hospital cohort with the thesis's five descriptors (for demos and scale tests).

Everything generated here is labelled simulated (cohort.simulated = True, name "simulated-...",
source "SIMULATED ..."). No patient data is involved.

How a case is made (thesis, section 5.1, gives the targets):

* Descriptors. Cell differentiation is drawn first; density and shape are drawn given it, the
  other two independently. Class proportions follow the thesis's imbalance (vascular infiltration
  the most imbalanced, about 88/12; shape the most balanced) and its associations (density-cdiff
  the strongest, Cramer's V about 0.3; shape-cdiff weaker, about 0.15; every other pair
  independent). Each recorded value is then missing independently with probability
  ``missing_rate``: an empty cell in cases.csv, ``UNKNOWN`` in the label matrix.
* Features. Each (field, class) owns a fixed random unit direction. A case's feature centre is
  ``signal`` times the sum of the directions of its five true classes, plus case-level noise;
  each slice adds its own noise. A missing value is a descriptor nobody recorded: the nodule
  still has that shape, so the image carries it (missing completely at random, not "no signal").
  ``signal=0`` means the features say nothing about the descriptors.
* Patients. ``patients_per_case`` patients per case (default 1/1.3: about 1.3 cases per
  patient), every patient at least one case, so patient-grouped splitting matters.

Generation is streamed: labels and slice counts (a few ints per case) are drawn up front, the
features 256 cases at a time; with ``out_dir`` they go straight into ``features.npy`` through a
memory map, so memory does not grow with the cohort. Random draws come from fixed blocks of
cases with their own seeds, so the output depends on the seed and the generation parameters,
never on ``chunk``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.lib.format import open_memmap

from model.cohort import Cohort, atomic_directory, write_metadata
from model.schema import UNKNOWN, Field, Schema

# Class proportions, in thesis_schema's class order. Conditional tables are rows = cdiff class.
CDIFF_P = np.array([0.30, 0.45, 0.25])  # well, moderate, poor
DENSITY_GIVEN_CDIFF = np.array(  # solid, part-solid, ground-glass; Cramer's V ~0.31
    [
        [0.36, 0.30, 0.34],  # well differentiated: often (part) ground-glass
        [0.70, 0.20, 0.10],
        [0.88, 0.09, 0.03],  # poorly differentiated: mostly solid
    ]
)
SHAPE_GIVEN_CDIFF = np.array(  # round, lobulated, spiculated, irregular; Cramer's V ~0.15
    [
        [0.40, 0.27, 0.15, 0.18],
        [0.29, 0.27, 0.23, 0.21],
        [0.18, 0.25, 0.30, 0.27],
    ]
)
VINFILTRATION_P = np.array([0.88, 0.12])  # absent, present: the most imbalanced field
NECROSIS_P = np.array([0.72, 0.28])  # absent, present

CASE_NOISE = 1.0  # std per feature of a case's deviation from its class centre
SLICE_NOISE = 1.0  # std per feature of a slice's deviation from its case
RNG_BLOCK = 256  # cases per independently seeded block of feature noise


def thesis_schema() -> Schema:
    """The thesis's five descriptors: nodule shape, nodule density, vascular infiltration,
    cell differentiation and necrosis."""
    fields = (
        Field(
            "shape",
            "Nodule shape",
            ("round", "lobulated", "spiculated", "irregular"),
            ("round", "lobulated", "spiculated", "irregular"),
            "{value} nodule",
        ),
        Field(
            "density",
            "Nodule density",
            ("solid", "part_solid", "ground_glass"),
            ("solid", "part-solid", "ground-glass"),
            "{value} density",
        ),
        Field(
            "vinfiltration",
            "Vascular infiltration",
            ("absent", "present"),
            ("absent", "present"),
            "vascular infiltration {value}",
        ),
        Field(
            "cdiff",
            "Cell differentiation",
            ("well", "moderate", "poor"),
            ("well differentiated", "moderately differentiated", "poorly differentiated"),
            "{value} cells",
            ordinal=True,
        ),
        Field(
            "necrosis", "Necrosis", ("absent", "present"), ("absent", "present"), "necrosis {value}"
        ),
    )
    template = "A {shape} of {density}; {vinfiltration}; {cdiff}; {necrosis}."
    return Schema(
        "thesis",
        fields,
        template,
        description="SIMULATED cohort with the thesis's five descriptors",
    )


def simulate_cohort(
    n: int,
    out_dir: Path | None = None,
    *,
    seed: int = 0,
    signal: float = 1.0,
    feature_dim: int = 1024,
    missing_rate: float = 0.05,
    min_slices: int = 3,
    max_slices: int = 12,
    patients_per_case: float = 1 / 1.3,
    chunk: int = 10_000,
    progress: bool = False,
) -> Cohort:
    """Generate a simulated cohort of `n` cases (see the module doc for the model).

    With `out_dir` the cohort is written there atomically and returned memory-mapped from disk;
    without, it is returned in memory (small cohorts, tests). `patients_per_case` is the ratio
    of patients to cases, in (0, 1]; 1 gives one case per patient. `chunk` is how many cases
    are generated between flushes to disk and progress updates (rounded up to a multiple of
    256); features are made 256 cases at a time, so memory stays small whatever `chunk` is,
    and the result does not depend on it.
    """
    _check_arguments(
        n, signal, feature_dim, missing_rate, min_slices, max_slices, patients_per_case, chunk
    )
    schema = thesis_schema()
    true_labels = _draw_labels(n, seed)  # [n, 5], every value known
    rng = np.random.default_rng([seed, 1])
    recorded = np.where(rng.random(true_labels.shape) < missing_rate, UNKNOWN, true_labels)
    n_slices = np.random.default_rng([seed, 2]).integers(min_slices, max_slices + 1, n)
    offsets = np.concatenate([[0], np.cumsum(n_slices)[:-1]]).astype(np.int64)
    patient = _draw_patients(n, patients_per_case, seed)
    cases = _case_table(schema, recorded, patient, offsets, n_slices)

    directions = _class_directions(schema, feature_dim, seed)  # [fields, max classes, dim]
    total = int(n_slices.sum())
    name = f"simulated-thesis-{n}"
    source = (
        f"SIMULATED: synthetic cohort from model.datasets.simulated (seed={seed}, "
        f"signal={signal}); not patient data"
    )
    extra = {
        "generator": "model.datasets.simulated.simulate_cohort",
        "seed": seed,
        "signal": signal,
        "missing_rate": missing_rate,
        "min_slices": min_slices,
        "max_slices": max_slices,
        "patients_per_case": patients_per_case,
        "case_noise": CASE_NOISE,
        "slice_noise": SLICE_NOISE,
    }
    feature_names = [f"sim_{i:04d}" for i in range(feature_dim)]
    blocks_per_chunk = max(1, math.ceil(chunk / RNG_BLOCK))
    n_blocks = math.ceil(n / RNG_BLOCK)

    def fill(features: np.ndarray) -> None:
        chunks = range(0, n_blocks, blocks_per_chunk)
        if progress:
            from tqdm import tqdm

            chunks = tqdm(chunks, desc=name, unit="chunk")
        for first in chunks:
            for block in range(first, min(first + blocks_per_chunk, n_blocks)):
                _write_block(
                    features, true_labels, directions, signal, offsets, n_slices, block, seed
                )
            if isinstance(features, np.memmap):
                features.flush()  # keep the unwritten pages to about one chunk

    if out_dir is None:
        features = np.empty((total, feature_dim), np.float32)
        fill(features)
        return Cohort(name, schema, cases, features, feature_names, True, source, extra)

    out_dir = Path(out_dir)
    with atomic_directory(out_dir) as tmp:
        features = open_memmap(
            tmp / "features.npy", mode="w+", dtype=np.float32, shape=(total, feature_dim)
        )
        fill(features)
        del features  # close the writable map; the hash below reads a read-only one
        on_disk = np.load(tmp / "features.npy", mmap_mode="r", allow_pickle=False)
        write_metadata(
            Cohort(name, schema, cases, on_disk, feature_names, True, source, extra), tmp
        )
        del on_disk
    return Cohort.load(out_dir)


# --- descriptors and patients -------------------------------------------------------------------
def _draw_labels(n: int, seed: int) -> np.ndarray:
    """True class of each descriptor, in thesis_schema's field order: int64 [n, 5]."""
    rng = np.random.default_rng([seed, 0])
    cdiff = _categorical(rng, np.broadcast_to(CDIFF_P, (n, 3)))
    density = _categorical(rng, DENSITY_GIVEN_CDIFF[cdiff])
    shape = _categorical(rng, SHAPE_GIVEN_CDIFF[cdiff])
    vinfiltration = _categorical(rng, np.broadcast_to(VINFILTRATION_P, (n, 2)))
    necrosis = _categorical(rng, np.broadcast_to(NECROSIS_P, (n, 2)))
    return np.stack([shape, density, vinfiltration, cdiff, necrosis], axis=1)


def _categorical(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One class per row of `probs` [n, k] (rows sum to 1): int64 [n]."""
    cumulative = np.cumsum(probs, axis=1)
    cumulative[:, -1] = 1.0  # rounding must never leave a draw past the last class
    u = rng.random(len(probs))
    return (u[:, None] >= cumulative).sum(axis=1).astype(np.int64)


def _draw_patients(n: int, patients_per_case: float, seed: int) -> np.ndarray:
    """Patient index of each case, cases of a patient adjacent: int64 [n]."""
    n_patients = min(n, max(1, round(n * patients_per_case)))
    rng = np.random.default_rng([seed, 3])
    extra = rng.integers(0, n_patients, n - n_patients)  # further cases of some patients
    return np.sort(np.concatenate([np.arange(n_patients), extra])).astype(np.int64)


def _case_table(
    schema: Schema,
    labels: np.ndarray,
    patient: np.ndarray,
    offsets: np.ndarray,
    n_slices: np.ndarray,
) -> pd.DataFrame:
    n = len(labels)
    width = len(str(max(n, 1)))
    table: dict[str, object] = {
        "case_id": [f"SIM-{i + 1:0{width}d}" for i in range(n)],
        "patient_id": [f"SIMP-{p + 1:0{width}d}" for p in patient],
        "offset": offsets.astype(np.int64),
        "n_slices": n_slices.astype(np.int64),
    }
    for j, f in enumerate(schema.fields):
        codes = np.array([*f.values, ""], dtype=object)[labels[:, j]]  # UNKNOWN (-1) -> ""
        table[f.source_column] = [c if c else None for c in codes]
    return pd.DataFrame(table)


# --- features -----------------------------------------------------------------------------------
def _class_directions(schema: Schema, dim: int, seed: int) -> np.ndarray:
    """A fixed random unit vector per (field, class): float32 [fields, max classes, dim]."""
    rng = np.random.default_rng([seed, 4])
    k = max(len(f.values) for f in schema.fields)
    d = rng.standard_normal((len(schema.fields), k, dim))
    return (d / np.linalg.norm(d, axis=2, keepdims=True)).astype(np.float32)


def _write_block(
    features: np.ndarray,
    labels: np.ndarray,
    directions: np.ndarray,
    signal: float,
    offsets: np.ndarray,
    n_slices: np.ndarray,
    block: int,
    seed: int,
) -> None:
    """Write the slices of RNG block `block` (cases block*RNG_BLOCK onwards) into `features`."""
    start = block * RNG_BLOCK
    stop = min(start + RNG_BLOCK, len(labels))
    rng = np.random.default_rng([seed, 5, block])
    lab = labels[start:stop]  # (c, fields), true classes
    case = directions[np.arange(lab.shape[1])[None, :], lab].sum(axis=1)  # (c, dim)
    case *= np.float32(signal)
    case += CASE_NOISE * rng.standard_normal(case.shape, dtype=np.float32)
    slices = np.repeat(case, n_slices[start:stop], axis=0)  # (s, dim)
    slices += SLICE_NOISE * rng.standard_normal(slices.shape, dtype=np.float32)
    lo = int(offsets[start])
    features[lo : lo + len(slices)] = slices


def _check_arguments(
    n: int,
    signal: float,
    feature_dim: int,
    missing_rate: float,
    min_slices: int,
    max_slices: int,
    patients_per_case: float,
    chunk: int,
) -> None:
    problems = []
    if n < 1:
        problems.append(f"n must be at least 1, got {n}")
    if signal < 0:
        problems.append(f"signal must be >= 0, got {signal}")
    if feature_dim < 1:
        problems.append(f"feature_dim must be at least 1, got {feature_dim}")
    if not 0 <= missing_rate < 1:
        problems.append(f"missing_rate must be in [0, 1), got {missing_rate}")
    if not 1 <= min_slices <= max_slices:
        problems.append(f"need 1 <= min_slices <= max_slices, got {min_slices}, {max_slices}")
    if not 0 < patients_per_case <= 1:
        problems.append(
            f"patients_per_case must be in (0, 1] (patients per case, e.g. 0.77 for about 1.3 "
            f"cases per patient), got {patients_per_case}"
        )
    if chunk < 1:
        problems.append(f"chunk must be at least 1, got {chunk}")
    if problems:
        raise ValueError("simulate_cohort: " + "; ".join(problems))
