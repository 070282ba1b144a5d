"""The two branches: image encoders over slice features, and the text branch over a frozen encoder.

The frozen Hugging Face encoder runs once per distinct text (:class:`TextTokenCache`); training
and inference only run the small learnable head on its cached token states.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from model.config import ModelConfig, text_encoder_path


# --------------------------------------------------------------------------------------------
# Frozen text encoder and its per-text cache
# --------------------------------------------------------------------------------------------
class FrozenTextEncoder:
    """A Hugging Face encoder loaded by local path, frozen, in eval mode. Never downloads."""

    def __init__(self, path: str, max_length: int = 64) -> None:
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # our own progress reporting is the caller's

        folder = Path(path)
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(
                f"text encoder folder {folder} has no config.json; set "
                "TEXT_ENCODER to a local Hugging Face model folder"
            )
        self.path = str(folder)
        self.max_length = max_length
        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        self.model = AutoModel.from_pretrained(folder, local_files_only=True)
        self.model.eval()
        for p in self.model.parameters():  # frozen: never part of any optimiser
            p.requires_grad_(False)
        self.hidden_size = int(self.model.config.hidden_size)

    @classmethod
    def for_config(cls, cfg: ModelConfig, setting: str = "") -> FrozenTextEncoder:
        """The encoder a model config trains with: its own folder if it names one, else
        `setting` (the service's), else as model.config.text_encoder_path decides."""
        return cls(text_encoder_path(cfg.text_encoder, setting), cfg.text_max_length)

    @property
    def name(self) -> str:
        cfg = json.loads((Path(self.path) / "config.json").read_text())
        return str(cfg.get("_name_or_path") or Path(self.path).name)

    @property
    def revision(self) -> str:
        """sha256 over the folder's weight and config files: which exact weights were used."""
        h = hashlib.sha256()
        folder = Path(self.path)
        for f in (
            sorted(folder.glob("*.json"))
            + sorted(folder.glob("*.safetensors"))
            + sorted(folder.glob("*.bin"))
        ):
            h.update(f.name.encode())
            with f.open("rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
        return h.hexdigest()[:16]

    @torch.no_grad()
    def token_states(self, texts: Sequence[str], batch_size: int = 64):
        """Token states [n, L, H] and attention mask [n, L] (bool), L = longest in `texts`."""
        enc = self.tokenizer(
            list(texts),
            padding="longest",
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        states = []
        for start in range(0, len(texts), batch_size):
            out = self.model(
                input_ids=enc["input_ids"][start : start + batch_size],
                attention_mask=enc["attention_mask"][start : start + batch_size],
            )
            states.append(out.last_hidden_state.float())
        return torch.cat(states), enc["attention_mask"].bool()


class TextTokenCache:
    """Token states of each distinct text, computed once: text -> row."""

    def __init__(self, encoder: FrozenTextEncoder, texts: Sequence[str]) -> None:
        self.texts = list(dict.fromkeys(texts))  # distinct, first-seen order
        self.index = {t: i for i, t in enumerate(self.texts)}
        self.states, self.mask = encoder.token_states(self.texts)  # (T, L, H), (T, L)

    def to(self, device: torch.device | str) -> TextTokenCache:
        """The same cache with its token states on `device` (no copy where they already are)."""
        moved = copy.copy(self)
        moved.states, moved.mask = self.states.to(device), self.mask.to(device)
        return moved

    def ids(self, texts: Sequence[str]) -> torch.Tensor:
        return torch.tensor([self.index[t] for t in texts], dtype=torch.long)


class TextHead(nn.Module):
    """Learnable part of the text branch: Linear(H -> d), self-attention, masked mean pool."""

    def __init__(self, hidden_size: int, cfg: ModelConfig) -> None:
        super().__init__()
        d = cfg.embed_dim
        self.proj = nn.Linear(hidden_size, d)
        self.attn = nn.MultiheadAttention(d, cfg.n_heads, dropout=cfg.dropout, batch_first=True)
        self.norm = nn.LayerNorm(d)

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.proj(states)  # (t, L, d)
        attended, _ = self.attn(x, x, x, key_padding_mask=~mask, need_weights=False)
        x = self.norm(x + attended)
        m = mask.unsqueeze(-1).to(x.dtype)  # (t, L, 1)
        pooled = (x * m).sum(1) / m.sum(1).clamp_min(1.0)  # (t, d)
        return F.normalize(pooled, dim=-1)


# --------------------------------------------------------------------------------------------
# Image branch
# --------------------------------------------------------------------------------------------
# Standardised features are clamped here: no training value lies further out (a sample of n
# values is within sqrt(n) standard deviations of its mean), and beyond it a finite input could
# overflow float32 in the layers after (1e30 -> inf -> NaN embeddings and similarities).
MAX_ABS_Z = 1e4


class FeatureNorm(nn.Module):
    """Standardises per-slice features with training-set statistics (saved with the weights)."""

    mean: torch.Tensor  # (f,) buffers, saved with the weights
    std: torch.Tensor

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    def fit(self, features: torch.Tensor) -> None:
        self.mean.copy_(features.mean(0))
        self.std.copy_(features.std(0).clamp_min(1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ((x - self.mean) / self.std).clamp(-MAX_ABS_Z, MAX_ABS_Z)


def mean_max_pool(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean and max over a case's real slices, side by side: (b, s, f) -> (b, 2f).

    The pooled vector of CLIPMedical's image branch and of the served read-out's inputs."""
    m = mask.unsqueeze(-1)  # (b, s, 1)
    mean = (x * m).sum(1) / m.sum(1).clamp_min(1)
    peak = x.masked_fill(~m, float("-inf")).amax(1)
    return torch.cat([mean, peak], dim=-1)


class MLPImageEncoder(nn.Module):
    """CLIPMedical: one vector per case (mean and max over slices) -> Linear, ReLU, LayerNorm."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.norm_in = FeatureNorm(cfg.feature_dim)
        self.net = nn.Sequential(
            nn.Linear(2 * cfg.feature_dim, cfg.embed_dim), nn.ReLU(), nn.LayerNorm(cfg.embed_dim)
        )

    def forward(self, slices: torch.Tensor, mask: torch.Tensor):
        x = self.norm_in(slices)  # (b, s, f)
        z = self.net(mean_max_pool(x, mask))  # (b, d)
        return F.normalize(z, dim=-1), None


class SliceEncoderLayer(nn.Module):
    """Pre-norm transformer layer that can hand back the CLS token's attention over slices."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        d = cfg.embed_dim
        self.norm1 = nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, cfg.n_heads, dropout=cfg.dropout, batch_first=True)
        self.norm2 = nn.LayerNorm(d)
        self.ff = nn.Sequential(
            nn.Linear(d, cfg.ff_dim), nn.GELU(), nn.Dropout(cfg.dropout), nn.Linear(cfg.ff_dim, d)
        )
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, pad: torch.Tensor, want_weights: bool):
        h = self.norm1(x)
        a, w = self.attn(
            h, h, h, key_padding_mask=pad, need_weights=want_weights, average_attn_weights=True
        )
        x = x + self.drop(a)
        x = x + self.drop(self.ff(self.norm2(x)))
        return x, w  # w: (b, s+1, s+1) or None


class AttnImageEncoder(nn.Module):
    """CLIPMedical-Attn: slices -> linear -> [CLS] + 2-layer transformer -> CLS embedding."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        d = cfg.embed_dim
        self.norm_in = FeatureNorm(cfg.feature_dim)
        self.proj = nn.Linear(cfg.feature_dim, d)
        self.cls = nn.Parameter(torch.zeros(1, 1, d))
        self.pos = nn.Parameter(torch.zeros(1, cfg.max_slices + 1, d))
        nn.init.normal_(self.cls, std=0.02)
        nn.init.normal_(self.pos, std=0.02)
        self.layers = nn.ModuleList(SliceEncoderLayer(cfg) for _ in range(cfg.n_layers))
        self.norm_out = nn.LayerNorm(d)

    def forward(self, slices: torch.Tensor, mask: torch.Tensor, want_weights: bool = False):
        b, s, _ = slices.shape
        x = self.proj(self.norm_in(slices))  # (b, s, d)
        x = torch.cat([self.cls.expand(b, 1, -1), x], dim=1) + self.pos[:, : s + 1]  # (b, s+1, d)
        pad = torch.cat([torch.zeros(b, 1, dtype=torch.bool, device=mask.device), ~mask], dim=1)
        weights = None
        for i, layer in enumerate(self.layers):
            last = i == len(self.layers) - 1
            x, w = layer(x, pad, want_weights and last)
            if w is not None:
                cls_to_slices = w[:, 0, 1:]  # CLS attention over the slices, (b, s)
                # Renormalised over slices: the share the CLS token keeps on itself is no slice.
                weights = cls_to_slices / cls_to_slices.sum(-1, keepdim=True).clamp_min(1e-12)
        z = self.norm_out(x[:, 0])  # (b, d)
        return F.normalize(z, dim=-1), weights


def build_image_encoder(cfg: ModelConfig) -> nn.Module:
    if cfg.architecture == "mlp":
        return MLPImageEncoder(cfg)
    if cfg.architecture == "attn":
        return AttnImageEncoder(cfg)
    raise ValueError(f"unknown architecture {cfg.architecture!r}; use 'mlp' or 'attn'")


def init_logit_scale() -> float:
    return math.log(1 / 0.07)  # CLIP's initial temperature
