"""Explaining one case with a checkpoint: retrieved texts, per-field votes, zero-shot, evidence."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from model.checkpoint import Checkpoint
from model.clip import batch_slices, select_slices
from model.feature_range import FeatureBounds
from model.retrieval import top1_fields, vote_fields, zero_shot
from model.served import pooled_features, served_inputs
from model.validation import MAX_SLICES_PER_CASE, InputError, check_slice_count

LOW_SIMILARITY = 0.5  # fallback threshold for checkpoints that do not carry their own
SPLIT_VOTE = 0.6  # without a served read-out: a winning vote share under this -> low confidence
LOW_PROBABILITY = 0.5  # a served answer whose calibrated probability is under this -> low


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


def _rounded(values: np.ndarray) -> list[float]:
    return [round(v, 4) for v in values.tolist()]


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
        self._training_cases = [
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

    def explain(self, features: np.ndarray, k: int = 5, n_similar: int = 5) -> dict:
        """The explanation of one case as a JSON-ready dict."""
        return self.explain_batch([features], k, n_similar)[0]

    def explain_batch(
        self, cases: Sequence[np.ndarray], k: int = 5, n_similar: int = 5
    ) -> list[dict]:
        """The explanations of many cases, one model pass for all: the dicts `explain` returns.

        Every case is validated first; an invalid one raises InputError naming its index.
        """
        ckpt, schema = self.checkpoint, self.checkpoint.schema
        cfg = ckpt.config
        if not 1 <= k <= 50:
            raise InputError(f"k must be between 1 and 50, got {k}")
        arrays = []
        for i, features in enumerate(cases):
            try:
                arrays.append(validate_features(features, cfg.feature_dim, bounds=self.bounds))
            except InputError as e:
                raise InputError(f"case {i}: {e}" if len(cases) > 1 else str(e)) from None
        if not arrays:
            return []
        used = [select_slices(len(a), cfg.max_slices) for a in arrays]
        slices, mask = batch_slices(arrays, cfg.max_slices)  # (b, s, f), (b, s)
        with torch.no_grad():
            emb, weights = ckpt.model.encode_image(slices, mask, want_weights=True)  # (b, d)
            heads = [torch.softmax(h, dim=-1).numpy() for h in ckpt.model.classify(emb)]
        emb_np = emb.numpy()
        served = None
        if ckpt.served is not None:
            pooled = pooled_features(_Arrays(arrays), cfg.max_slices)
            served = ckpt.served.predict(served_inputs(pooled, emb_np))

        sims, ids = ckpt.catalog.search(emb_np, k)  # (b, k)
        keep = (ids >= 0).all(0)  # the flat catalog pads every row alike when k > its size
        sims, ids = sims[:, keep], ids[:, keep]
        if not keep.any():  # an empty catalog, or an embedding the index could not place
            raise InputError("no descriptor text could be retrieved for these features")
        n_classes = [len(f.values) for f in schema.fields]
        vote, share, tallies = vote_fields(sims, ids, ckpt.catalog.labels, n_classes)
        top1 = top1_fields(ids, ckpt.catalog.labels)
        scale = ckpt.model.scale.item()
        zero_shots = [zero_shot(emb_np, ckpt.zero_shot[f.name], scale) for f in schema.fields]
        c_sims, c_ids = ckpt.cases.search(emb_np, n_similar)
        evidence = self._slice_evidence(
            [a[u] for a, u in zip(arrays, used, strict=True)], used, ids[:, 0]
        )
        threshold = float(ckpt.meta.get("low_similarity", LOW_SIMILARITY))
        simulated = bool(ckpt.meta.get("data", {}).get("simulated", False))

        def label(j: int, v: int) -> str | None:
            return None if v < 0 else schema.fields[j].value_labels[v]

        catalog_texts = self._catalog_texts(set(ids.ravel().tolist()))

        results = []
        for i, array in enumerate(arrays):
            texts = [
                {
                    "rank": rank,
                    "text": catalog_texts[t][0],
                    "similarity": round(s, 4),
                    "training_cases": catalog_texts[t][1],
                    "descriptors": dict(catalog_texts[t][2]),
                }
                for rank, (s, t) in enumerate(
                    zip(sims[i].tolist(), ids[i].tolist(), strict=True), 1
                )
            ]

            fields = []
            for j, f in enumerate(schema.fields):
                if served is not None:
                    value = int(served[0][i, j])
                    answer = {
                        "value": f.values[value],
                        "label": label(j, value),
                        "probability": round(float(served[1][i, j]), 4),
                        "calibrated": True,
                        "distribution": dict(zip(f.values, _rounded(served[2][j][i]), strict=True)),
                    }
                else:  # a checkpoint from before the served read-out: the vote, uncalibrated
                    answer = {
                        "value": f.values[vote[i, j]] if vote[i, j] >= 0 else None,
                        "label": label(j, int(vote[i, j])),
                        "probability": round(float(share[i, j]), 4),
                        "calibrated": False,
                        "distribution": None,
                    }
                entry = {
                    "field": f.name,
                    "label": f.label,
                    "served": answer,
                    "vote": {
                        "value": f.values[vote[i, j]] if vote[i, j] >= 0 else None,
                        "label": label(j, int(vote[i, j])),
                        "share": round(float(share[i, j]), 4),
                        "tally": dict(zip(f.values, _rounded(tallies[j][i]), strict=True)),
                    },
                    "top1": {
                        "value": f.values[top1[i, j]] if top1[i, j] >= 0 else None,
                        "label": label(j, int(top1[i, j])),
                    },
                    "zero_shot": dict(zip(f.values, _rounded(zero_shots[j][i]), strict=True)),
                }
                if heads:
                    entry["head"] = dict(zip(f.values, _rounded(heads[j][i]), strict=True))
                fields.append(entry)

            best = float(sims[i, 0]) if sims.shape[1] else 0.0
            doubtful = [
                fe["field"]
                for fe in fields
                if fe["served"]["probability"]
                < (LOW_PROBABILITY if fe["served"]["calibrated"] else SPLIT_VOTE)
            ]
            reasons = []
            if best < threshold:
                reasons.append(
                    f"best similarity {best:.2f} is under {threshold:.2f}, which 90% of the "
                    "training cases reach"
                )
            if doubtful:
                reasons.append(
                    f"probability under {LOW_PROBABILITY:.0%} for {', '.join(doubtful)}"
                    if served is not None
                    else f"split vote on {', '.join(doubtful)}"
                )

            similar = [
                {**self._training_cases[c], "similarity": round(s, 4)}
                for s, c in zip(c_sims[i].tolist(), c_ids[i].tolist(), strict=True)
                if c >= 0
            ]
            attention = None
            if weights is not None:
                attention = [
                    {"slice": s, "weight": w}
                    for s, w in zip(
                        used[i].tolist(), _rounded(weights[i, : len(used[i])].numpy()), strict=True
                    )
                ]
            n_slices = len(array)
            results.append(
                {
                    "model_version": ckpt.version,
                    "catalog_version": ckpt.catalog.version,
                    "schema": schema.name,
                    "simulated": simulated,
                    "k": k,
                    "slices": {
                        "received": n_slices,
                        "used": len(used[i]),
                        "subsampled": n_slices > len(used[i]),
                    },
                    "texts": texts,
                    "fields": fields,
                    "slice_attention": attention,
                    "slice_evidence": evidence[i],
                    "similar_cases": similar,
                    "low_confidence": bool(reasons),
                    "low_confidence_reasons": reasons,
                }
            )
        return results

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
    ) -> list[list[dict]]:
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
        out, start = [], 0
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
