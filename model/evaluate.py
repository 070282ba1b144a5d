"""The thesis's evaluation protocol, made honest: patient-grouped k-fold CV with baselines.

Per fold a fresh model is trained on the training patients; the catalog is the distinct texts
of the training cases; each test case is predicted by the served read-out (model.served:
chosen and calibrated on the fold's training patients that its CLIP model held out for early
stopping, declared before any test fold is seen), by top-1 retrieval (the thesis's), by a
similarity-weighted vote over the top-k texts, and by the multi-task heads when trained. The
same folds give the baselines on the same inputs (pooled slice features): majority class,
logistic regression (plain, and class-balanced with C chosen on inner validation patients),
class-balanced gradient boosting; and the radiologists' own agreement on the same bins
(model.readers). Stated probabilities are scored for calibration (ECE, Brier, NLL).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from model import metrics
from model.cohort import Cohort
from model.config import ModelConfig, TrainConfig
from model.encoders import FrozenTextEncoder, TextTokenCache
from model.readers import nodule_scores, reader_pairs
from model.retrieval import exact_vote, top1_fields, vote_fields
from model.schema import Schema
from model.served import (
    LOGREG_ONLY,
    LOGREG_TOL,
    VOTE_K,
    fit_served,
    pooled_features,
    served_inputs,
)
from model.train import (
    Progress,
    Subset,
    embed_cases,
    embed_texts,
    resolve_device,
    split_by_patient,
    train,
    unseen_votes,
)
from model.trees import fit_balanced_trees

MODEL_METHODS = ("served", "top1", "vote", "head", "probe")
SERVED = "served"  # the one read-out the service, the report and the exports lead with
BASELINES = ("majority", "logreg", "logreg_bal", "histgb")
STRONG_BASELINES = ("logreg_bal", "histgb")
METHOD_NAMES = {
    "served": "served (calibrated)",
    "top1": "CLIP top-1 text",
    "vote": "CLIP top-k vote",
    "head": "CLIP multi-task head",
    "probe": "CLIP embedding + linear probe",
    "majority": "majority class",
    "logreg": "logistic regression",
    "logreg_bal": "logistic regression, balanced",
    "histgb": "gradient boosting, balanced",
    "reader_pair": "reader vs reader",
    "reader_loo": "reader vs other readers' majority",
}


@dataclass
class FoldProgress:
    fold: int  # 1-based
    folds: int
    train: Progress | None  # the training step's progress, None between trainings
    stage: str  # "train", "predict", "baselines"


@dataclass
class EvalResult:
    metrics: pd.DataFrame  # fold, field, method, accuracy, macro_f1, ...
    per_class: pd.DataFrame  # fold, field, method, class, precision, recall, f1, support
    retrieval: pd.DataFrame  # fold, split, i2t_R@1, i2t_R@5, t2i_R@1, t2i_R@5
    confusions: dict = field(default_factory=dict)  # (field, method) -> summed matrix
    histories: dict = field(default_factory=dict)  # "fold 1" -> {"train_loss": ...}
    timing: dict = field(default_factory=dict)
    calibration: pd.DataFrame = field(default_factory=pd.DataFrame)  # fold, field, method, ece


def patient_folds(
    patients: np.ndarray, folds: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train_idx, test_idx) per fold; every patient's cases land in exactly one test fold."""
    n_patients = len(np.unique(patients))
    if n_patients < folds:
        raise ValueError(
            f"{folds} folds need at least {folds} patients; the cohort has {n_patients}"
        )
    splitter = GroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(patients)), groups=patients))


def majority_predictions(train_y: np.ndarray, n_test: int) -> np.ndarray:
    """Each field's most frequent known training class, for every test case."""
    preds = np.full((n_test, train_y.shape[1]), -1, np.int64)
    for j in range(train_y.shape[1]):
        y = train_y[train_y[:, j] >= 0, j]
        if len(y):
            preds[:, j] = np.bincount(y).argmax()
    return preds


def logistic_predictions(train_x, train_y, test_x, seed: int) -> np.ndarray:
    """Standardised logistic regression per field, fit on known training labels only."""
    preds = majority_predictions(train_y, len(test_x))  # fields with one class keep it
    for j in range(train_y.shape[1]):
        known = train_y[:, j] >= 0
        if len(np.unique(train_y[known, j])) < 2:
            continue
        clf = make_pipeline(
            StandardScaler(), LogisticRegression(max_iter=2000, tol=LOGREG_TOL, random_state=seed)
        )
        with threadpool_limits(1):  # BLAS threads on a busy machine spin far more than they work
            clf.fit(train_x[known], train_y[known, j])
        preds[:, j] = clf.predict(test_x)
    return preds


def _summary_row(report: dict, n_classes: int) -> dict:
    supported = [k for k in range(n_classes) if report.get(f"support/{k}", 0) > 0]
    row = {
        "accuracy": report["accuracy"],
        "macro_f1": report["macro_f1"],
        "precision": float(np.mean([report[f"precision/{k}"] for k in supported]))
        if supported
        else 0.0,
        "recall": float(np.mean([report[f"recall/{k}"] for k in supported])) if supported else 0.0,
        "n": report["n"],
        "n_unknown": report["n_unknown"],
    }
    if "qwk" in report:
        row["within1_accuracy"] = report["within1_accuracy"]
        row["qwk"] = report["qwk"]
    return row


@dataclass
class FoldResult:
    """One fold's rows of the EvalResult tables; a fold can run in its own process (a job) and
    be saved and merged later. Saved as CSV, JSON and .npz: nothing pickled."""

    fold: int
    metrics: pd.DataFrame
    per_class: pd.DataFrame
    retrieval: pd.DataFrame
    confusions: dict  # (field, method) -> matrix
    history: dict
    train_seconds: float
    calibration: pd.DataFrame = field(default_factory=pd.DataFrame)  # fold, field, method, ece...

    def save(self, folder: Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.metrics.to_csv(folder / "metrics.csv", index=False)
        self.calibration.to_csv(folder / "calibration.csv", index=False)
        self.per_class.to_csv(folder / "per_class.csv", index=False)
        self.retrieval.to_csv(folder / "retrieval.csv", index=False)
        np.savez(
            folder / "confusions.npz", **{f"{f}|{m}": c for (f, m), c in self.confusions.items()}
        )
        meta = {"fold": self.fold, "history": self.history, "train_seconds": self.train_seconds}
        (folder / "fold.json").write_text(json.dumps(meta) + "\n")
        return folder

    @classmethod
    def load(cls, folder: Path) -> FoldResult:
        folder = Path(folder)
        meta = json.loads((folder / "fold.json").read_text())
        with np.load(folder / "confusions.npz", allow_pickle=False) as z:
            confusions = {tuple(k.split("|", 1)): z[k] for k in z.files}
        return cls(
            meta["fold"],
            pd.read_csv(folder / "metrics.csv"),
            pd.read_csv(folder / "per_class.csv", keep_default_na=False),
            pd.read_csv(folder / "retrieval.csv"),
            confusions,
            meta["history"],
            meta["train_seconds"],
            _read_optional_csv(folder / "calibration.csv"),
        )


def _read_optional_csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return pd.DataFrame()


# A method's stated probabilities: (answered class [n, fields], its probability [n, fields],
# per field the whole distribution [n, classes]).
Stated = tuple[np.ndarray, np.ndarray, list[np.ndarray]]


def cat_labels(schema: Schema, catalog_texts: list[str]) -> np.ndarray:
    """The catalog texts' field codes [t, fields] (-1: the text does not state it)."""
    return np.stack([schema.parse(t) for t in catalog_texts])


def model_readouts(
    model, schema, catalog_texts: list[str], catalog_emb, case_emb, vote_k: int
) -> tuple[dict[str, np.ndarray], dict[str, Stated]]:
    """Per prediction mode, (n_cases, fields) class codes (top-1 text, top-k vote, heads), and
    for the modes that state a probability (vote share, head softmax) what they state."""
    n_classes = [len(f.values) for f in schema.fields]
    labels = cat_labels(schema, catalog_texts)
    sims = case_emb @ catalog_emb.T  # (n, t) cosine similarities
    order = np.argsort(-sims, axis=1)
    top_sims = np.take_along_axis(sims, order, axis=1)
    vote, share, tallies = vote_fields(top_sims[:, :vote_k], order[:, :vote_k], labels, n_classes)
    predictions = {"top1": top1_fields(order, labels), "vote": vote}
    stated = {"vote": (vote, share, list(tallies))}
    if model.heads:
        with torch.no_grad():
            logits = model.classify(torch.from_numpy(case_emb).to(model.device))
        probs = [torch.softmax(lg, dim=-1).cpu().numpy() for lg in logits]
        predictions["head"] = np.stack([p.argmax(1) for p in probs], axis=1)
        stated["head"] = (predictions["head"], np.stack([p.max(1) for p in probs], 1), probs)
    return predictions, stated


def model_predictions(
    model, schema, catalog_texts: list[str], catalog_emb, case_emb, vote_k: int
) -> dict[str, np.ndarray]:
    """Per prediction mode, (n_cases, fields) class codes: top-1 text, top-k vote, heads."""
    return model_readouts(model, schema, catalog_texts, catalog_emb, case_emb, vote_k)[0]


def balanced_baselines(
    train_x: np.ndarray,
    train_y: np.ndarray,
    train_groups: np.ndarray,
    test_x: np.ndarray,
    n_classes: list[int],
    seed: int,
) -> dict[str, Stated]:
    """The strong baselines on the same inputs: class-balanced logistic regression (C chosen
    on inner validation patients) and class-balanced gradient boosting."""
    logreg = fit_served(train_x, train_y, train_groups, n_classes, seed, candidates=LOGREG_ONLY)
    z = (np.asarray(test_x, np.float64) - logreg.mean) / logreg.scale
    raw = [head.raw_proba(z) for head in logreg.fields]
    out = {
        "logreg_bal": (
            np.stack([p.argmax(1) for p in raw], 1),
            np.stack([p.max(1) for p in raw], 1),
            raw,
        )
    }
    probs = []
    for j, k in enumerate(n_classes):
        known = train_y[:, j] >= 0
        classes = np.unique(train_y[known, j])
        p = np.zeros((len(test_x), k))
        if len(classes) < 2:
            p[:, int(classes[0]) if len(classes) else 0] = 1.0
        else:
            trees, classes = fit_balanced_trees(train_x[known], train_y[known, j], seed)
            p[:, classes] = trees.predict_proba(test_x)
        probs.append(p)
    out["histgb"] = (
        np.stack([p.argmax(1) for p in probs], 1),
        np.stack([p.max(1) for p in probs], 1),
        probs,
    )
    return out


def validation_metrics(
    model, cases, tcfg: TrainConfig, cache: TextTokenCache, schema, vote_k: int = 5
) -> dict[str, float]:
    """Macro-F1 per field and mode on the patients `train` held out for early stopping, with a
    catalog of the other patients' texts. Flat keys: "val/<field>/<mode>_macro_f1".

    Those patients chose the stopping epoch, so this is a check on a new version, not the
    unbiased estimate a cross-validation report gives."""
    if tcfg.val_fraction <= 0:
        return {}
    fit_idx, val_idx = split_by_patient(cases.patients, tcfg.val_fraction, tcfg.seed)
    fit, val = Subset(cases, fit_idx), Subset(cases, val_idx)
    distinct = list(dict.fromkeys(fit.texts()))
    predictions = model_predictions(
        model,
        schema,
        distinct,
        embed_texts(model, cache, distinct),
        embed_cases(model, val),
        vote_k,
    )
    out: dict[str, float] = {"val/cases": float(len(val))}
    for method, pred in predictions.items():
        for j, fld in enumerate(schema.fields):
            rep = metrics.classification_report(
                val.labels[:, j], pred[:, j], len(fld.values), ordinal=fld.ordinal
            )
            out[f"val/{fld.name}/{method}_macro_f1"] = round(float(rep["macro_f1"]), 4)
    return out


def run_fold(
    cohort: Cohort,
    mcfg: ModelConfig,
    tcfg: TrainConfig,
    encoder: FrozenTextEncoder,
    fold: int,
    folds: int = 5,
    vote_k: int = 5,
    seed: int = 0,
    on_progress: Callable[[FoldProgress], None] | None = None,
    cache: TextTokenCache | None = None,
    pooled: np.ndarray | None = None,
) -> FoldResult:
    """Train on fold `fold`'s (1-based) training patients and score its test patients."""
    if not 1 <= fold <= folds:
        raise ValueError(f"fold {fold} is not one of 1..{folds}")
    train_idx, test_idx = patient_folds(cohort.patients, folds, seed)[fold - 1]
    schema = cohort.schema
    n_classes = schema.class_counts
    all_texts = cohort.texts()
    device = resolve_device(tcfg.device)
    if cache is None:
        cache = TextTokenCache(encoder, all_texts)  # frozen encoder: once per distinct text
    cache = cache.to(device)
    if pooled is None:
        pooled = pooled_features(cohort, mcfg.max_slices)

    def report(p: Progress | None, stage: str) -> None:
        if on_progress:
            on_progress(FoldProgress(fold, folds, p, stage))

    train_view, test_view = cohort.subset(train_idx), cohort.subset(test_idx)
    result = train(
        train_view,
        mcfg,
        tcfg.replace(seed=tcfg.seed + fold),
        encoder,
        cache,
        on_progress=lambda p: report(p, "train"),
        field_classes=n_classes,
    )
    model = result.model.to(device)  # the fold's own model: embed on the training device

    report(None, "predict")
    train_texts = [all_texts[i] for i in train_idx]
    test_texts = [all_texts[i] for i in test_idx]
    distinct = list(dict.fromkeys(train_texts))
    row_of = {t: r for r, t in enumerate(distinct)}
    cat_emb = embed_texts(model, cache, distinct)
    test_emb = embed_cases(model, test_view)
    train_emb = embed_cases(model, train_view)
    y_test = test_view.labels
    predictions, stated = model_readouts(model, schema, distinct, cat_emb, test_emb, vote_k)
    train_y = cohort.labels[train_idx]
    train_groups = cohort.patients[train_idx]
    # The served read-out: chosen and calibrated on this fold's training patients that the
    # fold's CLIP model never trained on (as build_checkpoint does for a deployed model).
    served = fit_served(
        served_inputs(pooled[train_idx], train_emb),
        train_y,
        train_groups,
        n_classes,
        seed,
        unseen=result.val_idx,
        slice_columns=pooled.shape[1],
        votes=unseen_votes(model, cache, schema, train_texts, train_emb, result.val_idx, VOTE_K),
    )
    test_votes = exact_vote(test_emb, cat_emb, cat_labels(schema, distinct), n_classes, VOTE_K)
    stated["served"] = served.predict(served_inputs(pooled[test_idx], test_emb), test_votes)
    predictions["served"] = stated["served"][0]

    report(None, "baselines")
    # A light head on the frozen image embedding (thesis 6.1.1), fit after training.
    predictions["probe"] = logistic_predictions(train_emb, train_y, test_emb, seed)
    predictions["majority"] = majority_predictions(train_y, len(test_idx))
    predictions["logreg"] = logistic_predictions(pooled[train_idx], train_y, pooled[test_idx], seed)
    strong = balanced_baselines(
        pooled[train_idx], train_y, train_groups, pooled[test_idx], n_classes, seed
    )
    stated |= strong
    predictions |= {name: s[0] for name, s in strong.items()}

    readouts = [head.readout for head in served.fields]
    nodules = None
    if "nodule_id" in cohort.cases.columns:
        nodules = cohort.cases["nodule_id"].astype(str).to_numpy()[test_idx]
    calibration_rows, reliability = _calibration_rows(
        fold, schema, y_test, stated, readouts, nodules
    )
    rows = _reader_rows(fold, cohort, test_idx, y_test)
    method_rows, class_rows, confusions = _method_rows(fold, schema, y_test, predictions)
    rows += method_rows
    confusions = reliability | confusions
    retrieval_rows = [
        _retrieval_row(fold, split, emb, texts, cat_emb, row_of)
        for split, emb, texts in (("train", train_emb, train_texts), ("test", test_emb, test_texts))
    ]
    return FoldResult(
        fold,
        pd.DataFrame(rows),
        pd.DataFrame(class_rows),
        pd.DataFrame(retrieval_rows),
        confusions,
        result.history,
        result.seconds,
        pd.DataFrame(calibration_rows),
    )


def _calibration_rows(
    fold: int,
    schema: Schema,
    y_test: np.ndarray,
    stated: dict[str, Stated],
    served_readouts: list[str],
    nodules: np.ndarray | None = None,
) -> tuple[list[dict], dict]:
    """Per read-out that states a probability and field: calibration figures (the served rows
    also name the read-out the inner folds chose), and the bins of its reliability diagram
    (keyed ("reliability:<field>", method)). With the test cases' `nodules`, each is also
    scored per nodule against its readers (model.readers.nodule_scores)."""
    rows, bins = [], {}
    for method, (pred, confidence, dists) in stated.items():
        for j, fld in enumerate(schema.fields):
            cal = metrics.calibration(y_test[:, j], confidence[:, j], pred[:, j], dists[j])
            if nodules is not None:
                cal |= nodule_scores(y_test[:, j], nodules, pred[:, j], dists[j])
            row = {"fold": fold, "field": fld.name, "method": method, **cal}
            if method == SERVED:
                row["readout"] = served_readouts[j]
            rows.append(row)
            bins[("reliability:" + fld.name, method)] = metrics.reliability_bins(
                y_test[:, j], confidence[:, j], pred[:, j]
            )
    return rows, bins


def _reader_rows(fold: int, cohort: Cohort, test_idx: np.ndarray, y_test: np.ndarray) -> list[dict]:
    """How well one radiologist's read predicts another's of the same nodule (cohorts with
    nodule ids only): the ceiling the model is measured against."""
    if "nodule_id" not in cohort.cases.columns:
        return []
    schema, rows = cohort.schema, []
    nodules = cohort.cases["nodule_id"].astype(str).to_numpy()[test_idx]
    for method, per_field in reader_pairs(y_test, nodules).items():
        for j, (truth, pred) in enumerate(per_field):
            if len(truth) == 0:
                continue
            fld = schema.fields[j]
            k = len(fld.values)
            rep = metrics.classification_report(truth, pred, k, ordinal=fld.ordinal)
            rows.append({"fold": fold, "field": fld.name, "method": method} | _summary_row(rep, k))
    return rows


def _method_rows(
    fold: int, schema: Schema, y_test: np.ndarray, predictions: dict[str, np.ndarray]
) -> tuple[list[dict], list[dict], dict]:
    """Per prediction method and field: the summary row, one row per class and the confusion
    matrix (keyed (field, method))."""
    rows, class_rows, confusions = [], [], {}
    for method, pred in predictions.items():
        for j, fld in enumerate(schema.fields):
            k = len(fld.values)
            rep = metrics.classification_report(y_test[:, j], pred[:, j], k, ordinal=fld.ordinal)
            rows.append({"fold": fold, "field": fld.name, "method": method, **_summary_row(rep, k)})
            for c in range(k):
                class_rows.append(
                    {
                        "fold": fold,
                        "field": fld.name,
                        "method": method,
                        "class": fld.values[c],
                        "precision": rep[f"precision/{c}"],
                        "recall": rep[f"recall/{c}"],
                        "f1": rep[f"f1/{c}"],
                        "support": rep[f"support/{c}"],
                    }
                )
            confusions[(fld.name, method)] = metrics.confusion(y_test[:, j], pred[:, j], k)
    return rows, class_rows, confusions


def _retrieval_row(
    fold: int,
    split: str,
    emb: np.ndarray,
    texts: list[str],
    cat_emb: np.ndarray,
    row_of: dict[str, int],
) -> dict:
    """Image-to-text and text-to-image recall of one split's cases against the catalog."""
    sim = emb @ cat_emb.T
    true = np.array([row_of.get(t, -1) for t in texts])
    return {
        "fold": fold,
        "split": split,
        "in_catalog": float((true >= 0).mean()),
        **metrics.image_to_text_recall(sim, true, ks=(1, 5)),
        **metrics.text_to_image_recall(sim, true, ks=(1, 5)),
    }


def merge_folds(results: list[FoldResult], timing: dict | None = None) -> EvalResult:
    """The EvalResult of folds run separately (in any order)."""
    results = sorted(results, key=lambda r: r.fold)
    confusions: dict = {}
    for r in results:
        for key, cm in r.confusions.items():
            confusions[key] = confusions.get(key, 0) + np.asarray(cm)
    timing = dict(timing or {})
    timing.setdefault("train_seconds", round(sum(r.train_seconds for r in results), 2))
    return EvalResult(
        pd.concat([r.metrics for r in results], ignore_index=True),
        pd.concat([r.per_class for r in results], ignore_index=True),
        pd.concat([r.retrieval for r in results], ignore_index=True),
        confusions,
        {f"fold {r.fold}": r.history for r in results},
        timing,
        pd.concat([r.calibration for r in results], ignore_index=True),
    )


def cross_validate(
    cohort: Cohort,
    mcfg: ModelConfig,
    tcfg: TrainConfig,
    encoder: FrozenTextEncoder,
    folds: int = 5,
    vote_k: int = 5,
    seed: int = 0,
    on_progress: Callable[[FoldProgress], None] | None = None,
) -> EvalResult:
    """All folds in this process (the jobs service runs `run_fold` per fold instead)."""
    t_start = time.perf_counter()
    patient_folds(cohort.patients, folds, seed)  # fails early on too few patients
    t0 = time.perf_counter()
    cache = TextTokenCache(encoder, cohort.texts())
    text_seconds = time.perf_counter() - t0
    cache = cache.to(resolve_device(tcfg.device))  # once for all folds
    pooled = pooled_features(cohort, mcfg.max_slices)
    results = [
        run_fold(cohort, mcfg, tcfg, encoder, f, folds, vote_k, seed, on_progress, cache, pooled)
        for f in range(1, folds + 1)
    ]
    timing = {
        "total_seconds": round(time.perf_counter() - t_start, 2),
        "train_seconds": round(sum(r.train_seconds for r in results), 2),
        "text_encoder_seconds": round(text_seconds, 2),
    }
    return merge_folds(results, timing)
