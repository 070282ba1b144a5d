"""Explaining one case with a checkpoint: retrieved texts, per-field votes, zero-shot, evidence."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from model.checkpoint import Checkpoint
from model.clip import batch_slices, select_slices
from model.feature_range import FeatureBounds
from model.retrieval import top1_fields, vote_fields, zero_shot
from model.validation import MAX_SLICES_PER_CASE, InputError, check_slice_count

LOW_SIMILARITY = 0.5  # fallback threshold for checkpoints that do not carry their own
SPLIT_VOTE = 0.6  # a field whose winning share is under this -> low confidence


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


@dataclass
class Explainer:
    checkpoint: Checkpoint

    def __post_init__(self) -> None:
        self.bounds = FeatureBounds.for_checkpoint(
            self.checkpoint.meta, self.checkpoint.config.feature_dim
        )
        # The training cases as the explanation shows them, built once rather than per request.
        schema = self.checkpoint.schema
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
        ckpt, schema = self.checkpoint, self.checkpoint.schema
        cfg = ckpt.config
        if not 1 <= k <= 50:
            raise InputError(f"k must be between 1 and 50, got {k}")
        array = validate_features(features, cfg.feature_dim, bounds=self.bounds)
        n_slices = len(array)
        used = select_slices(n_slices, cfg.max_slices)
        slices, mask = batch_slices([array], cfg.max_slices)
        with torch.no_grad():
            emb, weights = ckpt.model.encode_image(slices, mask, want_weights=True)
            head_logits = ckpt.model.classify(emb)
        emb_np = emb.numpy()

        sims, ids = ckpt.catalog.search(emb_np, k)
        keep = ids[0] >= 0
        sims, ids = sims[:, keep], ids[:, keep]
        if not keep.any():  # an empty catalog, or an embedding the index could not place
            raise InputError("no descriptor text could be retrieved for these features")
        n_classes = [len(f.values) for f in schema.fields]
        vote, share, tallies = vote_fields(sims, ids, ckpt.catalog.labels, n_classes)
        top1 = top1_fields(ids, ckpt.catalog.labels)

        def label(j: int, v: int) -> str | None:
            return None if v < 0 else schema.fields[j].value_labels[v]

        texts = []
        for rank, (s, i) in enumerate(zip(sims[0], ids[0], strict=True), 1):
            row = ckpt.catalog.labels[i]
            texts.append(
                {
                    "rank": rank,
                    "text": ckpt.catalog.texts[i],
                    "similarity": round(float(s), 4),
                    "training_cases": int(ckpt.catalog.counts[i]),
                    "descriptors": {
                        f.name: label(j, int(row[j])) for j, f in enumerate(schema.fields)
                    },
                }
            )

        fields = []
        scale = ckpt.model.scale.item()
        for j, f in enumerate(schema.fields):
            zs = zero_shot(emb_np, ckpt.zero_shot[f.name], scale)[0]
            entry = {
                "field": f.name,
                "label": f.label,
                "vote": {
                    "value": f.values[vote[0, j]] if vote[0, j] >= 0 else None,
                    "label": label(j, int(vote[0, j])),
                    "share": round(float(share[0, j]), 4),
                    "tally": {
                        f.values[v]: round(float(tallies[j][0, v]), 4) for v in range(len(f.values))
                    },
                },
                "top1": {
                    "value": f.values[top1[0, j]] if top1[0, j] >= 0 else None,
                    "label": label(j, int(top1[0, j])),
                },
                "zero_shot": {f.values[v]: round(float(zs[v]), 4) for v in range(len(f.values))},
            }
            if head_logits:
                p = torch.softmax(head_logits[j], dim=-1)[0].numpy()
                entry["head"] = {f.values[v]: round(float(p[v]), 4) for v in range(len(f.values))}
            fields.append(entry)

        best = float(sims[0, 0]) if sims.size else 0.0
        split = [fe["field"] for fe in fields if fe["vote"]["share"] < SPLIT_VOTE]
        reasons = []
        threshold = float(ckpt.meta.get("low_similarity", LOW_SIMILARITY))
        if best < threshold:
            reasons.append(
                f"best similarity {best:.2f} is under {threshold:.2f}, which 90% of the "
                "training cases reach"
            )
        if split:
            reasons.append(f"split vote on {', '.join(split)}")

        similar = []
        c_sims, c_ids = ckpt.cases.search(emb_np, n_similar)
        for s, i in zip(c_sims[0], c_ids[0], strict=True):
            if i >= 0:
                similar.append({**self._training_cases[int(i)], "similarity": round(float(s), 4)})

        attention = None
        if weights is not None:
            attention = [
                {"slice": int(s), "weight": round(float(w), 4)}
                for s, w in zip(used, weights[0].numpy(), strict=True)
            ]
        slice_evidence = self._slice_evidence(array[used], used, int(ids[0, 0]))
        return {
            "model_version": ckpt.version,
            "catalog_version": ckpt.catalog.version,
            "schema": schema.name,
            "simulated": bool(ckpt.meta.get("data", {}).get("simulated", False)),
            "k": k,
            "slices": {"received": n_slices, "used": len(used), "subsampled": n_slices > len(used)},
            "texts": texts,
            "fields": fields,
            "slice_attention": attention,
            "slice_evidence": slice_evidence,
            "similar_cases": similar,
            "low_confidence": bool(reasons),
            "low_confidence_reasons": reasons,
        }

    def _slice_evidence(self, slices: np.ndarray, used: np.ndarray, top_row: int) -> list[dict]:
        """Each used slice embedded on its own, and its similarity to the best text.

        Works for both architectures: which slices, alone, already look like the retrieved text.
        """
        ckpt = self.checkpoint
        batch, mask = batch_slices([s[None, :] for s in slices], ckpt.config.max_slices)
        with torch.no_grad():
            per_slice, _ = ckpt.model.encode_image(batch, mask)  # (s, d)
        text = ckpt.catalog.index.reconstruct(top_row)  # (d,)
        sims = per_slice.numpy() @ text
        return [
            {"slice": int(i), "similarity": round(float(v), 4)}
            for i, v in zip(used, sims, strict=True)
        ]
