"""Explaining one case with a checkpoint: retrieved texts, per-field votes, zero-shot, evidence."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NotRequired, TypedDict

import numpy as np
import torch

from model.checkpoint import Checkpoint
from model.clip import batch_slices, select_slices
from model.feature_range import FeatureBounds
from model.retrieval import top1_fields, vote_fields, zero_shot
from model.schema import Field
from model.served import pooled_features, served_inputs
from model.validation import K_RANGE, MAX_SLICES_PER_CASE, InputError, check_slice_count

LOW_SIMILARITY = 0.5  # fallback threshold for checkpoints that do not carry their own
SPLIT_VOTE = 0.6  # without a served read-out: a winning vote share under this -> low confidence
LOW_PROBABILITY = 0.5  # a served answer whose calibrated probability is under this -> low
# Why an answer deserves doubt, with %(name)s placeholders (the service's pages read the
# values back out and show the reason in the reader's language: app.explanations.views).
LOW_SIMILARITY_REASON = (
    "best similarity %(best)s is under %(threshold)s, which 90%% of the training cases reach"
)
LOW_PROBABILITY_REASON = "probability under %(probability)s for %(fields)s"
SPLIT_VOTE_REASON = "split vote on %(fields)s"


def validate_features(
    features: np.ndarray,
    feature_dim: int,
    max_slices: int = MAX_SLICES_PER_CASE,
    bounds: FeatureBounds | None = None,
) -> np.ndarray:
    """Checks shape, dimension and values; returns float32 [slices, dim].

    Values must be finite and within `bounds` (a checkpoint's, from its training ranges: see
    model.feature_range); without them, within +-ABSOLUTE_LIMIT."""
    array = np.asarray(features)
    if array.dtype.kind not in "biuf":  # complex would lose its imaginary part in the cast
        raise InputError(f"features must be numbers, got dtype {array.dtype}")
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2:
        raise InputError(
            f"features must be a 2-D array [slices, {feature_dim}], got {array.ndim} dimensions"
        )
    if array.shape[0] == 0:
        raise InputError("features have no slices; at least 1 is needed")
    check_slice_count(array.shape[0], max_slices)
    if array.shape[1] != feature_dim:
        raise InputError(f"expected {feature_dim} features per slice, got {array.shape[1]}")
    with np.errstate(over="ignore"):  # beyond float32's range becomes inf, refused next
        array = array.astype(np.float32)
    bad = ~np.isfinite(array)
    if bad.any():
        rows = sorted(set(np.argwhere(bad)[:, 0].tolist()))
        raise InputError(
            f"features must be finite; NaN or infinite values in slice(s) "
            f"{', '.join(map(str, rows[:5]))}{'...' if len(rows) > 5 else ''}"
        )
    (bounds or FeatureBounds.absolute(feature_dim)).check(array)
    return array


@dataclass(frozen=True)
class _Arrays:
    """Validated cases in the shape model.served.pooled_features reads."""

    arrays: Sequence[np.ndarray]

    def __len__(self) -> int:
        return len(self.arrays)

    def slices(self, i: int) -> np.ndarray:
        return self.arrays[i]


DIGITS = 4  # decimals of the scores in an explanation


def _rounded(values: np.ndarray) -> list[float]:
    """Scores as JSON numbers of DIGITS decimals. Whole arrays of a batch are rounded once
    with np.round instead (a Python round per value was a quarter of `clipmed explain`'s
    time); both give the float nearest the rounded decimal, bar ties at the last digit."""
    return np.round(values, DIGITS).tolist()


class ServedAnswer(TypedDict):
    value: str | None  # the stored code
    label: str | None  # its human label
    probability: float  # calibrated probability, or the vote share when uncalibrated
    calibrated: bool  # False for checkpoints from before the served read-out
    distribution: dict[str, float] | None  # probability per code (served read-out only)


class VoteAnswer(TypedDict):
    value: str | None
    label: str | None
    share: float  # the winning share of the similarity-weighted vote
    tally: dict[str, float]  # vote share per code


class Top1Answer(TypedDict):
    value: str | None
    label: str | None


class FieldAnswer(TypedDict):
    field: str
    label: str
    served: ServedAnswer
    vote: VoteAnswer
    top1: Top1Answer
    zero_shot: dict[str, float]  # softmax over the field's value texts
    head: NotRequired[dict[str, float]]  # the classification head's softmax, where trained


class RetrievedText(TypedDict):
    rank: int
    text: str
    similarity: float
    training_cases: int
    descriptors: dict[str, str | None]


class SlicesUsed(TypedDict):
    received: int
    used: int
    subsampled: bool


class SliceWeight(TypedDict):
    slice: int
    weight: float


class SliceSimilarity(TypedDict):
    slice: int
    similarity: float


class TrainingCase(TypedDict):
    case_id: str
    patient_id: str
    descriptors: dict[str, str | None]  # value labels


class SimilarCase(TrainingCase):
    similarity: float


class CaseExplanation(TypedDict):
    """One case's explanation, as the API returns it (key order is the JSON's)."""

    model_version: str
    catalog_version: str
    schema: str  # the schema's name
    simulated: bool
    k: int
    slices: SlicesUsed
    texts: list[RetrievedText]
    fields: list[FieldAnswer]
    slice_attention: list[SliceWeight] | None
    slice_evidence: list[SliceSimilarity]
    similar_cases: list[SimilarCase]
    low_confidence: bool
    low_confidence_reasons: list[str]


@dataclass
class _Forward:
    """What one model pass over a batch gives the per-case answers: (b, ...) arrays."""

    used: list[np.ndarray]  # per case, the slice indices the model read
    weights: torch.Tensor | None  # (b, s) attention over slices (attn model only)
    heads: list[np.ndarray]  # per field, (b, classes) head softmax; empty without heads
    served: tuple[np.ndarray, np.ndarray, list[np.ndarray]] | None  # codes, probability, dists
    sims: np.ndarray  # (b, k) similarity of each retrieved text
    ids: np.ndarray  # (b, k) catalog rows
    vote: np.ndarray  # (b, fields) voted codes
    share: np.ndarray  # (b, fields) winning vote shares
    tallies: list[np.ndarray]  # per field, (b, classes) vote shares
    top1: np.ndarray  # (b, fields) codes of the best text
    zero_shots: list[np.ndarray]  # per field, (b, classes)
    case_sims: np.ndarray  # (b, n_similar)
    case_ids: np.ndarray  # (b, n_similar) rows of the case index, -1 = none
    evidence: list[list[SliceSimilarity]]
    catalog_texts: dict[int, tuple[str, int, dict]]  # row -> (text, training cases, labels)


def _value(f: Field, index: int) -> str | None:
    return None if index < 0 else f.values[index]


def _label(f: Field, index: int) -> str | None:
    return None if index < 0 else f.value_labels[index]


@dataclass
class Explainer:
    checkpoint: Checkpoint

    def __post_init__(self) -> None:
        self.bounds = FeatureBounds.for_checkpoint(
            self.checkpoint.meta, self.checkpoint.config.feature_dim
        )
        # The training cases as the explanation shows them, built once rather than per request.
        schema = self.checkpoint.schema
        self._text_cache: dict[int, tuple[str, int, dict]] = {}  # filled by _catalog_texts
        self._training_cases: list[TrainingCase] = [
            {
                "case_id": row["case_id"],
                "patient_id": row["patient_id"],
                "descriptors": {
                    f.name: f.value_labels[f.values.index(row[f.name])] if row[f.name] else None
                    for f in schema.fields
                },
            }
            for row in self.checkpoint.cases.cases.to_dict("records")
        ]

    def explain(self, features: np.ndarray, k: int = 5, n_similar: int = 5) -> CaseExplanation:
        """The explanation of one case, JSON-ready."""
        return self.explain_batch([features], k, n_similar)[0]

    def explain_batch(
        self, cases: Sequence[np.ndarray], k: int = 5, n_similar: int = 5
    ) -> list[CaseExplanation]:
        """The explanations of many cases, one model pass for all: what `explain` returns.

        Every case is validated first; an invalid one raises InputError naming its index.
        """
        arrays = self._validate(cases, k)
        if not arrays:
            return []
        run = self._forward(arrays, k, n_similar)
        ckpt = self.checkpoint
        simulated = bool(ckpt.meta.get("data", {}).get("simulated", False))
        results = []
        for i, array in enumerate(arrays):
            fields = self._field_answers(run, i)
            best = float(run.sims[i, 0]) if run.sims.shape[1] else 0.0
            reasons = self._low_confidence(best, fields, run.served is not None)
            n_slices, n_used = len(array), len(run.used[i])
            results.append(
                CaseExplanation(
                    model_version=ckpt.version,
                    catalog_version=ckpt.catalog.version,
                    schema=ckpt.schema.name,
                    simulated=simulated,
                    k=k,
                    slices={"received": n_slices, "used": n_used, "subsampled": n_slices > n_used},
                    texts=self._retrieved_texts(run, i),
                    fields=fields,
                    slice_attention=self._attention(run, i),
                    slice_evidence=run.evidence[i],
                    similar_cases=self._similar_cases(run, i),
                    low_confidence=bool(reasons),
                    low_confidence_reasons=reasons,
                )
            )
        return results

    # --- the steps of an explanation ------------------------------------------------------------
    def _validate(self, cases: Sequence[np.ndarray], k: int) -> list[np.ndarray]:
        """Each case's features as float32 [slices, dim]; InputError names the first bad one."""
        if not K_RANGE[0] <= k <= K_RANGE[1]:
            raise InputError(f"k must be between {K_RANGE[0]} and {K_RANGE[1]}, got {k}")
        cfg = self.checkpoint.config
        arrays = []
        for i, features in enumerate(cases):
            try:
                arrays.append(validate_features(features, cfg.feature_dim, bounds=self.bounds))
            except InputError as e:
                raise InputError(f"case {i}: {e}" if len(cases) > 1 else str(e)) from None
        return arrays

    def _forward(self, arrays: list[np.ndarray], k: int, n_similar: int) -> _Forward:
        """One model pass over all cases, then every search and read-out the answers draw on."""
        ckpt, schema = self.checkpoint, self.checkpoint.schema
        cfg = ckpt.config
        used = [select_slices(len(a), cfg.max_slices) for a in arrays]
        slices, mask = batch_slices(arrays, cfg.max_slices)  # (b, s, f), (b, s)
        with torch.no_grad():
            emb, weights = ckpt.model.encode_image(slices, mask, want_weights=True)  # (b, d)
            heads = [
                np.round(torch.softmax(h, dim=-1).numpy(), DIGITS) for h in ckpt.model.classify(emb)
            ]
        emb_np = emb.numpy()
        # A served answer that reads retrieval's vote reads it over its own number of texts,
        # whatever k the caller asked to see.
        served_head = ckpt.served
        vote_k = served_head.vote_k if served_head is not None and served_head.reads_votes else 0
        sims, ids = ckpt.catalog.search(emb_np, max(k, vote_k))  # (b, max(k, vote_k))
        keep = (ids >= 0).all(0)  # the flat catalog pads every row alike when k > its size
        sims, ids = sims[:, keep], ids[:, keep]
        if not keep.any():  # an empty catalog, or an embedding the index could not place
            raise InputError("no descriptor text could be retrieved for these features")
        served = self._served(arrays, emb_np, sims[:, :vote_k], ids[:, :vote_k])
        sims, ids = sims[:, :k], ids[:, :k]
        vote, share, tallies = vote_fields(sims, ids, ckpt.catalog.labels, schema.class_counts)
        scale = ckpt.model.scale.item()
        case_sims, case_ids = ckpt.cases.search(emb_np, n_similar)
        return _Forward(
            used=used,
            weights=weights,
            heads=heads,
            served=served,
            sims=sims,
            ids=ids,
            vote=vote,
            share=share,
            tallies=[np.round(t, DIGITS) for t in tallies],
            top1=top1_fields(ids, ckpt.catalog.labels),
            zero_shots=[
                np.round(zero_shot(emb_np, ckpt.zero_shot[f.name], scale), DIGITS)
                for f in schema.fields
            ],
            case_sims=case_sims,
            case_ids=case_ids,
            evidence=self._slice_evidence(
                [a[u] for a, u in zip(arrays, used, strict=True)], used, ids[:, 0]
            ),
            catalog_texts=self._catalog_texts(set(ids.ravel().tolist())),
        )

    def _served(
        self, arrays: list[np.ndarray], emb: np.ndarray, vote_sims: np.ndarray, vote_ids: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]] | None:
        """The served read-out's (codes, calibrated probability, distributions), None for a
        checkpoint from before it. `vote_sims`, `vote_ids`: its vote_k retrieved texts, read
        when a field serves retrieval's vote."""
        ckpt = self.checkpoint
        if ckpt.served is None:
            return None
        votes = None
        if ckpt.served.reads_votes:
            counts = ckpt.schema.class_counts
            votes = vote_fields(vote_sims, vote_ids, ckpt.catalog.labels, counts)[2]
        pooled = pooled_features(_Arrays(arrays), ckpt.config.max_slices)
        codes, probability, distributions = ckpt.served.predict(served_inputs(pooled, emb), votes)
        return codes, probability, [np.round(d, DIGITS) for d in distributions]

    def _retrieved_texts(self, run: _Forward, i: int) -> list[RetrievedText]:
        texts = run.catalog_texts
        return [
            RetrievedText(
                rank=rank,
                text=texts[t][0],
                similarity=round(s, 4),
                training_cases=texts[t][1],
                descriptors=dict(texts[t][2]),
            )
            for rank, (s, t) in enumerate(
                zip(run.sims[i].tolist(), run.ids[i].tolist(), strict=True), 1
            )
        ]

    def _field_answers(self, run: _Forward, i: int) -> list[FieldAnswer]:
        """Per field: the served answer, the vote, the top-1 text, zero-shot and head scores."""
        fields = []
        for j, f in enumerate(self.checkpoint.schema.fields):
            voted = int(run.vote[i, j])
            served: ServedAnswer
            if run.served is not None:
                codes, probability, distribution = run.served
                value = int(codes[i, j])
                served = {
                    "value": f.values[value],
                    "label": _label(f, value),
                    "probability": round(float(probability[i, j]), 4),
                    "calibrated": True,
                    "distribution": dict(zip(f.values, distribution[j][i].tolist(), strict=True)),
                }
            else:  # a checkpoint from before the served read-out: the vote, uncalibrated
                served = {
                    "value": _value(f, voted),
                    "label": _label(f, voted),
                    "probability": round(float(run.share[i, j]), 4),
                    "calibrated": False,
                    "distribution": None,
                }
            entry: FieldAnswer = {
                "field": f.name,
                "label": f.label,
                "served": served,
                "vote": {
                    "value": _value(f, voted),
                    "label": _label(f, voted),
                    "share": round(float(run.share[i, j]), 4),
                    "tally": dict(zip(f.values, run.tallies[j][i].tolist(), strict=True)),
                },
                "top1": {
                    "value": _value(f, int(run.top1[i, j])),
                    "label": _label(f, int(run.top1[i, j])),
                },
                "zero_shot": dict(zip(f.values, run.zero_shots[j][i].tolist(), strict=True)),
            }
            if run.heads:
                entry["head"] = dict(zip(f.values, run.heads[j][i].tolist(), strict=True))
            fields.append(entry)
        return fields

    def _low_confidence(self, best: float, fields: list[FieldAnswer], served: bool) -> list[str]:
        """Why an answer deserves doubt: a best text less similar than 90% of the training
        cases' best, or a field whose served probability (or vote share) is low."""
        threshold = float(self.checkpoint.meta.get("low_similarity", LOW_SIMILARITY))
        doubtful = [
            fe["field"]
            for fe in fields
            if fe["served"]["probability"]
            < (LOW_PROBABILITY if fe["served"]["calibrated"] else SPLIT_VOTE)
        ]
        reasons = []
        if best < threshold:
            similarity = {"best": f"{best:.2f}", "threshold": f"{threshold:.2f}"}
            reasons.append(LOW_SIMILARITY_REASON % similarity)
        if doubtful:
            fields_named = ", ".join(doubtful)
            reasons.append(
                LOW_PROBABILITY_REASON
                % {"probability": f"{LOW_PROBABILITY:.0%}", "fields": fields_named}
                if served
                else SPLIT_VOTE_REASON % {"fields": fields_named}
            )
        return reasons

    def _attention(self, run: _Forward, i: int) -> list[SliceWeight] | None:
        """CLIPMedical-Attn's weight on each used slice (None for the pooled-vector model)."""
        if run.weights is None:
            return None
        used = run.used[i]
        weights = _rounded(run.weights[i, : len(used)].numpy())
        return [{"slice": s, "weight": w} for s, w in zip(used.tolist(), weights, strict=True)]

    def _similar_cases(self, run: _Forward, i: int) -> list[SimilarCase]:
        similar = []
        for s, c in zip(run.case_sims[i].tolist(), run.case_ids[i].tolist(), strict=True):
            if c >= 0:
                case = self._training_cases[c]
                similar.append(
                    SimilarCase(
                        case_id=case["case_id"],
                        patient_id=case["patient_id"],
                        descriptors=case["descriptors"],
                        similarity=round(s, 4),
                    )
                )
        return similar

    def _catalog_texts(self, rows: set[int]) -> dict[int, tuple[str, int, dict]]:
        """(text, training cases, descriptors) of catalog rows, built once per row."""
        cache = self._text_cache
        fields = self.checkpoint.schema.fields
        for t in rows - cache.keys():
            labels = self.checkpoint.catalog.labels[t].tolist()
            cache[t] = (
                self.checkpoint.catalog.texts[t],
                int(self.checkpoint.catalog.counts[t]),
                {
                    f.name: None if v < 0 else f.value_labels[v]
                    for f, v in zip(fields, labels, strict=True)
                },
            )
        return {t: cache[t] for t in rows}

    def _slice_evidence(
        self, slices: Sequence[np.ndarray], used: Sequence[np.ndarray], top_rows: np.ndarray
    ) -> list[list[SliceSimilarity]]:
        """Per case, each used slice embedded on its own, and its similarity to the case's best
        text (all cases' slices in one pass).

        Works for both architectures: which slices, alone, already look like the retrieved text.
        """
        ckpt = self.checkpoint
        singles = [s[None, :] for case in slices for s in case]
        batch, mask = batch_slices(singles, ckpt.config.max_slices)
        with torch.no_grad():
            per_slice, _ = ckpt.model.encode_image(batch, mask)  # (all used slices, d)
        texts = np.stack([ckpt.catalog.index.reconstruct(int(r)) for r in top_rows])  # (b, d)
        case_of = np.repeat(np.arange(len(slices)), [len(case) for case in slices])
        sims = (per_slice.numpy() * texts[case_of]).sum(1)
        out: list[list[SliceSimilarity]] = []
        start = 0
        for u in used:
            part = sims[start : start + len(u)]
            start += len(u)
            out.append(
                [
                    {"slice": s, "similarity": v}
                    for s, v in zip(u.tolist(), _rounded(part), strict=True)
                ]
            )
        return out
