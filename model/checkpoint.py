"""Checkpoints: safetensors weights + JSON that explains them + the FAISS catalog beside them.

A checkpoint folder::

    checkpoint.json     version, configs, schema, text encoder name/revision, data hash, metrics
    model.safetensors   all weights and buffers (feature normalisation included)
    zeroshot.safetensors  per field, the embeddings of each value's own text
    catalog.faiss/.json   distinct training texts and their embeddings
    cases.faiss/.csv/.json  training cases' image embeddings, for similar-case lookup; the
                        JSON names the index kind (exact or approximate) and its parameters
    outlines.npz        optional: the training cases' contours in mm, to draw similar cases
    served.safetensors  the served read-out per field (model.served), calibrated; absent in
                        checkpoints from before it, which serve the vote share instead

Written into a temporary sibling folder and renamed into place, so a folder that exists is
complete. No pickle anywhere: loading never executes code from the files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file as load_numpy
from safetensors.numpy import save_file as save_numpy
from safetensors.torch import load_file, save_file

from model.cases import CaseSet, case_table
from model.catalog import EXACT_BELOW, CaseIndex, CaseIndexSpec, Catalog, choose_case_index
from model.clip import CLIPMedical
from model.config import ModelConfig, TrainConfig, config_from_dict, text_encoder_path
from model.encoders import FrozenTextEncoder, TextTokenCache
from model.feature_range import training_feature_ranges
from model.outline import OutlineStore
from model.schema import Schema
from model.served import VOTE_K, ServedHead, fit_served, pooled_features, served_inputs
from model.train import TrainResult, embed_cases, embed_texts, unseen_votes

FORMAT = 1
FEATURE_EXTRACTOR_V1 = "clipmed-morphometry/1"  # what LIDC checkpoints before it was recorded used
LOW_SIMILARITY_PERCENTILE = 10  # under the 10th percentile of training cases -> low confidence


class CheckpointError(ValueError):
    """A checkpoint folder that is missing, incomplete or inconsistent."""


@dataclass
class Checkpoint:
    model: CLIPMedical
    schema: Schema
    meta: dict  # everything in checkpoint.json
    catalog: Catalog
    cases: CaseIndex
    zero_shot: dict[str, np.ndarray]  # field name -> (values, d) text embeddings
    outlines: OutlineStore | None = None  # training cases' contours, where the cohort had them
    served: ServedHead | None = None  # the calibrated served read-out (None: older checkpoint)

    @property
    def version(self) -> str:
        return self.meta["version"]

    @property
    def feature_extractor(self) -> str | None:
        """ "name/version" of the code that computed the training features; None for simulated
        or unknown features. Checkpoints from before it was recorded were all trained on the
        LIDC importer's first extractor."""
        if "feature_extractor" in self.meta:
            return self.meta["feature_extractor"]
        lidc = self.meta.get("data", {}).get("cohort") == "lidc-idri"
        return FEATURE_EXTRACTOR_V1 if lidc else None

    @property
    def config(self) -> ModelConfig:
        return self.model.cfg

    def save(self, folder: Path) -> Path:
        folder = Path(folder)
        if folder.exists():
            raise CheckpointError(f"{folder} already exists; checkpoints are never overwritten")
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
        try:
            state = {k: v.contiguous() for k, v in self.model.state_dict().items()}
            save_file(state, str(tmp / "model.safetensors"))
            save_numpy(
                {k: np.ascontiguousarray(v) for k, v in self.zero_shot.items()},
                str(tmp / "zeroshot.safetensors"),
            )
            self.catalog.save(tmp)
            self.cases.save(tmp)
            if self.outlines is not None:
                self.outlines.save(tmp / "outlines.npz")
            if self.served is not None:
                save_numpy(self.served.tensors(), str(tmp / "served.safetensors"))
            meta = {**self.meta, "catalog_version": self.catalog.version}
            (tmp / "checkpoint.json").write_text(json.dumps(meta, indent=2) + "\n")
            os.replace(tmp, folder)
        except Exception as e:  # a write failed (disk full, quota): nothing is left behind
            shutil.rmtree(tmp, ignore_errors=True)
            raise CheckpointError(f"could not write the checkpoint {folder}: {e}") from e
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return folder

    @classmethod
    def load(cls, folder: Path) -> Checkpoint:
        folder = Path(folder)
        if not (folder / "checkpoint.json").is_file():
            raise CheckpointError(
                f"{folder} is not a checkpoint folder (no checkpoint.json); "
                "create one with `clipmed train`"
            )
        meta = json.loads((folder / "checkpoint.json").read_text())
        if meta.get("format") != FORMAT:
            raise CheckpointError(
                f"{folder}: checkpoint format {meta.get('format')}, this code reads {FORMAT}"
            )
        cfg = config_from_dict(ModelConfig, meta["model_config"])
        model = CLIPMedical(cfg)
        model.load_state_dict(load_file(str(folder / "model.safetensors")), strict=True)
        model.eval()
        zero_shot = load_numpy(str(folder / "zeroshot.safetensors"))
        outlines_path = folder / "outlines.npz"
        served_path = folder / "served.safetensors"
        schema = Schema.from_dict(meta["schema"])
        served = (
            ServedHead.from_tensors(load_numpy(str(served_path)), len(schema.fields))
            if served_path.is_file()
            else None
        )
        return cls(
            model,
            schema,
            meta,
            Catalog.load(folder),
            CaseIndex.load(folder),
            dict(zero_shot),
            OutlineStore.load(outlines_path) if outlines_path.is_file() else None,
            served,
        )

    def text_encoder(self, setting: str = "") -> FrozenTextEncoder:
        """The frozen encoder this model was trained with, from the folder it was trained from
        unless `setting` (the service's) or TEXT_ENCODER names another copy of it."""
        path = text_encoder_path(setting, trained_with=self.config.text_encoder)
        encoder = FrozenTextEncoder(path, self.config.text_max_length)
        if encoder.revision != self.meta["text_encoder"]["revision"]:
            raise CheckpointError(
                f"text encoder at {path} is revision {encoder.revision}, but this checkpoint was "
                f"trained with {self.meta['text_encoder']['revision']} "
                f"({self.meta['text_encoder']['name']})"
            )
        return encoder


def weights_hash(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().numpy().tobytes())
    return h.hexdigest()


def build_checkpoint(
    result: TrainResult,
    cases: CaseSet,
    encoder: FrozenTextEncoder,
    tcfg: TrainConfig,
    data: dict,
    metrics: dict | None = None,
    cache: TextTokenCache | None = None,
    case_index: str = "auto",
    case_index_exact_below: int = EXACT_BELOW,
) -> Checkpoint:
    """Everything serving needs, from a trained model and the cases it was trained on.

    `case_index` is the similar-case index kind ("flat", "hnsw", "ivf"), or "auto": exact below
    `case_index_exact_below` cases, approximate above (the service's settings of the same names).
    From the cases come the schema, the case ids, the feature extractor (the code that computed
    the features; None for simulated ones: segmentations are explained only by a model trained
    on the same one), the outlines (kept to draw the cases as similar cases) and the feature
    names (with each column's training range they let serving refuse values far outside it).
    """
    schema = cases.schema
    model = result.model
    texts = cases.texts()
    labels = cases.labels
    distinct = list(dict.fromkeys(texts))
    value_texts = {f.name: schema.value_texts(f.name) for f in schema.fields}
    needed = distinct + [t for vt in value_texts.values() for t in vt]
    if cache is None or any(t not in cache.index for t in needed):
        cache = TextTokenCache(encoder, needed)

    row_of = {t: i for i, t in enumerate(distinct)}
    first_case: dict[str, int] = {}
    counts = np.zeros(len(distinct), np.int64)
    for i, t in enumerate(texts):
        counts[row_of[t]] += 1
        first_case.setdefault(t, i)
    catalog = Catalog.build(
        distinct,
        labels[[first_case[t] for t in distinct]],
        counts,
        embed_texts(model, cache, distinct),
    )

    table = case_table(cases)
    case_embeddings = embed_cases(model, cases)
    kind = choose_case_index(len(table), case_index, case_index_exact_below)
    similar_cases = CaseIndex.build(table, case_embeddings, CaseIndexSpec(kind=kind))
    # Image and text embeddings sit apart (the modality gap), so "low similarity" is judged
    # against the training cases' own best-text similarities, not an absolute number.
    best_train = catalog.search(case_embeddings, 1)[0][:, 0]
    low_similarity = float(np.percentile(best_train, LOW_SIMILARITY_PERCENTILE))
    zero_shot = {name: embed_texts(model, cache, vt) for name, vt in value_texts.items()}

    created = datetime.now(UTC)
    digest = weights_hash(model)
    meta = {
        "format": FORMAT,
        "version": f"{created:%Y%m%d-%H%M%S}-{digest[:8]}",
        "created": created.isoformat(timespec="seconds"),
        "weights_sha256": digest,
        "model_config": dataclasses.asdict(model.cfg),
        "train_config": dataclasses.asdict(tcfg),
        "schema": schema.to_dict(),
        "text_encoder": {"path": encoder.path, "name": encoder.name, "revision": encoder.revision},
        "data": data,
        "history": result.history,
        "best_epoch": result.best_epoch,
        "train_seconds": round(result.seconds, 2),
        "metrics": metrics or {},
        "logit_scale": model.scale.item(),
        "low_similarity": round(low_similarity, 4),
        "feature_extractor": cases.feature_extractor,
        # per-feature min/max/mean/std of the training slices: serving's bounds on input values
        "feature_ranges": training_feature_ranges(cases, cases.feature_names),
    }
    drawn = None if cases.outlines is None else cases.outlines.subset(cases.case_ids)
    pooled = pooled_features(cases, model.cfg.max_slices)
    served = fit_served(
        served_inputs(pooled, case_embeddings),
        labels,
        np.asarray(cases.patients),
        schema.class_counts,
        seed=tcfg.seed,
        unseen=result.val_idx,
        slice_columns=pooled.shape[1],
        votes=unseen_votes(model, cache, schema, texts, case_embeddings, result.val_idx, VOTE_K),
    )
    meta["served"] = {
        "method": "per field, the mean of class-balanced gradient-boosted trees' and "
        "class-balanced logistic regression's probabilities (C from a grid), on pooled slice "
        "features and the image embedding or on the slice features alone, chosen by macro-F1 "
        "on held-out predictions: the slice-only ones on patient-grouped inner folds of the "
        "training patients, the others on the patients the CLIP model never trained on (its "
        "early-stopping patients), the two best compared on those (with too few of them, "
        "every candidate on the inner folds); the winner refitted on all the training "
        "patients, its top-class probability calibrated on its held-out predictions "
        "(isotonic; Platt below 1,000 of them); the winner averaged with retrieval's "
        f"similarity-weighted vote over {VOTE_K} texts where that mean does better on the "
        "same unseen patients (their votes from a catalog of the other training patients' texts)",
        "readout": {
            f.name: head.readout for f, head in zip(schema.fields, served.fields, strict=True)
        },
        "C": {f.name: head.C for f, head in zip(schema.fields, served.fields, strict=True)},
    }
    return Checkpoint(model, schema, meta, catalog, similar_cases, zero_shot, drawn, served)
