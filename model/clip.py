"""CLIPMedical: image branch + text head + temperature (+ optional per-field heads)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from model.config import ModelConfig
from model.encoders import TextHead, build_image_encoder, init_logit_scale

MAX_LOGIT_SCALE = 100.0


def select_slices(n_slices: int, max_slices: int) -> np.ndarray:
    """Indices of at most `max_slices` slices spread evenly over `n_slices` (ends included)."""
    if n_slices <= max_slices:
        return np.arange(n_slices)
    return np.round(np.linspace(0, n_slices - 1, max_slices)).astype(np.int64)


def batch_slices(cases: Sequence[np.ndarray], max_slices: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-case [n_i, f] arrays -> padded (b, s, f) float tensor and (b, s) bool mask."""
    chosen = [c[select_slices(len(c), max_slices)] for c in cases]
    s = max(len(c) for c in chosen)
    out = np.zeros((len(chosen), s, chosen[0].shape[1]), np.float32)
    mask = np.zeros((len(chosen), s), bool)
    for i, c in enumerate(chosen):
        out[i, : len(c)] = c
        mask[i, : len(c)] = True
    return torch.from_numpy(out), torch.from_numpy(mask)


class CLIPMedical(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        if cfg.feature_dim <= 0 or cfg.text_hidden_size <= 0:
            raise ValueError("ModelConfig needs feature_dim and text_hidden_size")
        self.cfg = cfg
        self.image = build_image_encoder(cfg)
        self.text = TextHead(cfg.text_hidden_size, cfg)
        self.logit_scale = nn.Parameter(torch.tensor(init_logit_scale()))
        self.heads = nn.ModuleList(
            nn.Linear(cfg.embed_dim, n) for n in (cfg.field_classes if cfg.multitask else ())
        )

    @property
    def device(self) -> torch.device:
        return self.logit_scale.device

    @property
    def scale(self) -> torch.Tensor:
        return self.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)

    def encode_image(self, slices: torch.Tensor, mask: torch.Tensor, want_weights: bool = False):
        """(b, s, f) slices + (b, s) mask -> L2-normalised (b, d) and CLS weights (b, s) | None."""
        if isinstance(self.image, nn.Module) and self.cfg.architecture == "attn":
            embedding, weights = self.image(slices, mask, want_weights=want_weights)
        else:
            embedding, weights = self.image(slices, mask)
        # A guard, not a path: FeatureNorm keeps finite inputs finite. Should anything still
        # overflow, the case is the zero vector (similarity 0 to every text), never NaN.
        embedding = torch.nan_to_num(embedding, nan=0.0, posinf=0.0, neginf=0.0)
        if weights is not None:
            weights = torch.nan_to_num(weights, nan=0.0)
        return embedding, weights

    def encode_text(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Cached token states (t, L, H) + mask (t, L) -> L2-normalised (t, d)."""
        return self.text(states, mask)

    def classify(self, image_embedding: torch.Tensor) -> list[torch.Tensor]:
        return [head(image_embedding) for head in self.heads]
