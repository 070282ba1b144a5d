"""Training: contrastive alignment of slice features with descriptor texts (Adam, InfoNCE)."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import cast

import numpy as np
import torch

from model.cases import CaseSet
from model.clip import CLIPMedical, batch_slices
from model.config import ModelConfig, TrainConfig
from model.encoders import FeatureNorm, FrozenTextEncoder, TextTokenCache
from model.loss import clip_loss, multitask_loss, reader_positives
from model.readers import reader_distributions
from model.retrieval import exact_vote
from model.schema import Schema


@dataclass
class Progress:
    epoch: int  # 1-based epoch being run
    epochs: int  # upper bound of epochs
    batch: int  # 1-based batch within the epoch
    batches: int  # batches per epoch
    loss: float  # running mean training loss of this epoch


@dataclass
class TrainResult:
    model: CLIPMedical
    history: dict[str, list[float]] = field(default_factory=dict)  # train_loss, val_loss
    best_epoch: int = 0  # epoch whose weights were kept (1-based)
    seconds: float = 0.0  # wall time of the training loop
    text_seconds: float = 0.0  # wall time spent in the frozen text encoder
    steps: int = 0  # optimiser steps taken: 0 means the weights are still the random ones
    # the cases whose patients were held out for early stopping (never trained on), by index
    val_idx: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


class Subset:
    """Rows `idx` of a CaseSet (used for the validation split)."""

    def __init__(self, base: CaseSet, idx: np.ndarray) -> None:
        self.base, self.idx = base, idx
        self.labels = base.labels[idx]
        all_texts = base.texts()
        self._texts = [all_texts[i] for i in idx]
        self.schema = base.schema
        self.feature_names = base.feature_names
        self.feature_extractor = base.feature_extractor
        self.outlines = base.outlines

    @property
    def case_ids(self) -> list[str]:
        ids = self.base.case_ids
        return [ids[i] for i in self.idx]

    def __len__(self) -> int:
        return len(self.idx)

    def slices(self, i: int) -> np.ndarray:
        return self.base.slices(int(self.idx[i]))

    def texts(self) -> list[str]:
        return self._texts

    @property
    def patients(self) -> np.ndarray:
        return self.base.patients[self.idx]

    @property
    def nodules(self) -> np.ndarray:
        return case_nodules(self.base)[self.idx]


def case_nodules(cases: CaseSet) -> np.ndarray:
    """Each case's nodule id; a case set without nodules makes each case its own."""
    nodules = getattr(cases, "nodules", None)
    return np.asarray(nodules) if nodules is not None else np.arange(len(cases)).astype(str)


def soft_targets(cases: CaseSet, n_classes: Sequence[int], device) -> list[torch.Tensor] | None:
    """Per field (n, classes) each case's nodule distribution of reader values, or None."""
    if not n_classes:
        return None
    dists = reader_distributions(cases.labels, case_nodules(cases), list(n_classes))
    return [torch.from_numpy(d).to(device) for d in dists]


def resolve_device(name: str) -> torch.device:
    """A TrainConfig.device as a torch device: "auto" is cuda when torch sees one, else cpu."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} asked for, but torch sees no CUDA device")
    return device


def split_by_patient(patients: np.ndarray, fraction: float, seed: int):
    """(train_idx, val_idx) with `fraction` of the distinct patients held out."""
    unique = np.unique(patients)
    rng = np.random.default_rng(seed)
    held = set(rng.choice(unique, size=int(round(fraction * len(unique))), replace=False))
    is_val = np.array([p in held for p in patients])
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def balanced_weights(labels: np.ndarray) -> np.ndarray:
    """Per-case sampling weight: mean over known fields of 1 / frequency of the case's class."""
    weights = np.zeros(len(labels))
    known_fields = np.zeros(len(labels))
    for j in range(labels.shape[1]):
        col = labels[:, j]
        values, counts = np.unique(col[col >= 0], return_counts=True)
        freq = dict(zip(values.tolist(), counts.tolist(), strict=True))
        for i, v in enumerate(col):
            if v >= 0:
                weights[i] += 1.0 / freq[int(v)]
                known_fields[i] += 1
    weights = np.where(known_fields > 0, weights / np.maximum(known_fields, 1), 0.0)
    if weights.sum() == 0:
        return np.ones(len(labels))
    return weights / weights.sum()


def inverse_frequency(labels: np.ndarray, n_classes: Sequence[int]) -> list[torch.Tensor]:
    """Per field, class weights n / (classes x count), over known values (empty classes: 0)."""
    weights = []
    for j, c in enumerate(n_classes):
        col = labels[:, j]
        counts = np.bincount(col[col >= 0], minlength=c).astype(np.float64)
        w = np.divide(counts.sum(), c * counts, out=np.zeros(c), where=counts > 0)
        weights.append(torch.tensor(w, dtype=torch.float32))
    return weights


def feature_statistics(cases: CaseSet, max_cases: int = 20_000, seed: int = 0):
    """Mean and std of per-slice features over (a sample of) the cases, streamed."""
    rng = np.random.default_rng(seed)
    idx = np.arange(len(cases))
    if len(idx) > max_cases:
        idx = rng.choice(idx, max_cases, replace=False)
    first = cases.slices(int(idx[0])).astype(np.float64)
    total, sq, n = first.sum(0), (first**2).sum(0), len(first)
    for i in idx[1:]:
        x = cases.slices(int(i)).astype(np.float64)
        total, sq = total + x.sum(0), sq + (x**2).sum(0)
        n += len(x)
    mean = total / n
    std = np.sqrt(np.maximum(sq / n - mean**2, 0))
    return torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32)


def _batches(n: int, batch_size: int, sampler_weights: np.ndarray | None, rng):
    if sampler_weights is None:
        order = rng.permutation(n)
    else:
        order = rng.choice(n, size=n, replace=True, p=sampler_weights)
    # Drop a trailing batch of one: a contrastive batch needs negatives.
    stops = [s for s in range(0, n, batch_size) if n - s > 1 or s == 0]
    return [order[s : s + batch_size] for s in stops]


def _batch_loss(model, cases, idx, text_ids, cache, tcfg, mcfg, class_weights=None, soft=None):
    """One batch's loss; `soft` (see soft_targets, all cases of `cases`) turns on the reader
    targets: soft head targets and reader-weighted label-aware positives."""
    slices, mask = batch_slices([cases.slices(int(i)) for i in idx], mcfg.max_slices)
    image, _ = model.encode_image(slices.to(model.device), mask.to(model.device))  # (b, d)
    ids = text_ids[idx]
    uniq, inverse = torch.unique(ids, return_inverse=True)
    distinct = model.encode_text(cache.states[uniq], cache.mask[uniq])  # (u, d)
    labels = torch.from_numpy(np.asarray(cases.labels[idx], dtype=np.int64)).to(model.device)
    batch_soft = None
    if soft is not None:
        rows = torch.as_tensor(np.asarray(idx), device=model.device)
        batch_soft = [d[rows] for d in soft]
    if tcfg.label_aware and batch_soft is not None:
        first = torch.full((len(uniq),), len(idx), device=model.device).scatter_reduce(
            0, inverse, torch.arange(len(idx), device=model.device), "amin"
        )
        positives = reader_positives(batch_soft, labels[first], inverse)
        loss = clip_loss(image, distinct, model.scale, inverse, positives)
    elif tcfg.label_aware:
        loss = clip_loss(image, distinct, model.scale, inverse)
    else:
        loss = clip_loss(image, distinct[inverse], model.scale)  # (b, d): the thesis's form
    if tcfg.multitask_weight > 0 and len(model.heads):
        loss = loss + tcfg.multitask_weight * multitask_loss(
            model.classify(image), labels, class_weights, batch_soft
        )
    return loss


def train(
    cases: CaseSet,
    mcfg: ModelConfig,
    tcfg: TrainConfig,
    encoder: FrozenTextEncoder,
    cache: TextTokenCache | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    field_classes: Sequence[int] = (),
) -> TrainResult:
    """Train a fresh model on `cases`, on `tcfg.device`; the model comes back on the CPU.

    `cache` may hold the token states of more texts."""
    device = resolve_device(tcfg.device)
    torch.manual_seed(tcfg.seed)
    rng = np.random.default_rng(tcfg.seed)
    texts = cases.texts()
    t0 = time.perf_counter()
    if cache is None or any(t not in cache.index for t in texts):
        cache = TextTokenCache(encoder, texts)
    text_seconds = time.perf_counter() - t0
    cache = cache.to(device)  # the frozen encoder stays on the CPU; its cached states move once

    first = cases.slices(0)
    mcfg = mcfg.replace(
        feature_dim=int(first.shape[1]),
        text_hidden_size=encoder.hidden_size,
        text_encoder=encoder.path,
        field_classes=tuple(field_classes) or mcfg.field_classes,
    )
    model = CLIPMedical(mcfg)

    train_idx, val_idx = np.arange(len(cases)), np.array([], dtype=np.int64)
    if tcfg.val_fraction > 0:
        train_idx, val_idx = split_by_patient(cases.patients, tcfg.val_fraction, tcfg.seed)
    fit_set, val_set = Subset(cases, train_idx), Subset(cases, val_idx)
    mean, std = feature_statistics(fit_set, seed=tcfg.seed)
    norm = cast(FeatureNorm, model.image.norm_in)
    norm.mean.copy_(mean)
    norm.std.copy_(std.clamp_min(1e-6))
    model.to(device)

    fit_ids = cache.ids(fit_set.texts()).to(device)
    val_ids = cache.ids(val_set.texts()).to(device) if len(val_set) else None
    weights = balanced_weights(fit_set.labels) if tcfg.balanced else None
    class_weights = None
    if tcfg.balanced_heads and mcfg.field_classes:
        class_weights = [
            w.to(device) for w in inverse_frequency(fit_set.labels, mcfg.field_classes)
        ]
    fit_soft = val_soft = None
    if tcfg.reader_targets:  # each split's own nodules: no reader of a val patient leaks in
        fit_soft = soft_targets(fit_set, mcfg.field_classes, device)
        val_soft = soft_targets(val_set, mcfg.field_classes, device)
    optimiser = torch.optim.Adam(
        [p for p in model.parameters() if p.requires_grad],
        lr=tcfg.lr,
        weight_decay=tcfg.weight_decay,
    )

    history: dict[str, list[float]] = {"train_loss": [], "val_loss": []}
    best_state, best_val, best_epoch, stale = None, float("inf"), 0, 0
    steps = 0
    start = time.perf_counter()
    for epoch in range(1, tcfg.epochs + 1):
        model.train()
        batches = _batches(len(fit_set), tcfg.batch_size, weights, rng)
        running = 0.0
        for b, idx in enumerate(batches, 1):
            loss = _batch_loss(
                model, fit_set, idx, fit_ids, cache, tcfg, mcfg, class_weights, fit_soft
            )
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            steps += 1
            running += loss.item()
            if on_progress:
                on_progress(Progress(epoch, tcfg.epochs, b, len(batches), running / b))
        history["train_loss"].append(running / max(len(batches), 1))

        if val_ids is None:
            best_epoch = epoch
            continue
        val_loss = evaluate_loss(
            model, val_set, val_ids, cache, tcfg, mcfg, class_weights, val_soft
        )
        history["val_loss"].append(val_loss)
        if val_loss < best_val - 1e-4:
            best_val, best_epoch, stale = val_loss, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            stale += 1
            if tcfg.patience and stale >= tcfg.patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.cpu().eval()  # checkpoints and inference are CPU-only
    seconds = time.perf_counter() - start
    return TrainResult(model, history, best_epoch, seconds, text_seconds, steps, val_idx)


@torch.no_grad()
def evaluate_loss(
    model, cases, text_ids, cache, tcfg, mcfg, class_weights=None, soft=None
) -> float:
    """Mean batch loss over `cases` in a fixed order (no sampling, eval mode)."""
    model.eval()
    losses = []
    order = np.arange(len(cases))
    for s in range(0, len(order), tcfg.batch_size):
        idx = order[s : s + tcfg.batch_size]
        if len(idx) < 2:
            continue
        loss = _batch_loss(model, cases, idx, text_ids, cache, tcfg, mcfg, class_weights, soft)
        losses.append(loss.item())
    return float(np.mean(losses)) if losses else float("nan")


@torch.no_grad()
def embed_cases(model: CLIPMedical, cases: CaseSet, batch_size: int = 256) -> np.ndarray:
    """L2-normalised image embeddings of every case, float32 (n, d), on the model's device."""
    model.eval()
    out = []
    for s in range(0, len(cases), batch_size):
        slices, mask = batch_slices(
            [cases.slices(i) for i in range(s, min(s + batch_size, len(cases)))],
            model.cfg.max_slices,
        )
        out.append(
            model.encode_image(slices.to(model.device), mask.to(model.device))[0].cpu().numpy()
        )
    return (
        np.concatenate(out).astype(np.float32)
        if out
        else np.zeros((0, model.cfg.embed_dim), np.float32)
    )


@torch.no_grad()
def embed_texts(model: CLIPMedical, cache: TextTokenCache, texts: Sequence[str]) -> np.ndarray:
    """L2-normalised text embeddings, float32 (t, d)."""
    model.eval()
    ids = cache.ids(texts).to(cache.states.device)
    states, mask = cache.states[ids].to(model.device), cache.mask[ids].to(model.device)
    return model.encode_text(states, mask).cpu().numpy().astype(np.float32)


def unseen_votes(
    model: CLIPMedical,
    cache: TextTokenCache,
    schema: Schema,
    texts: Sequence[str],
    case_emb: np.ndarray,
    unseen: np.ndarray | None,
    k: int,
) -> list[np.ndarray] | None:
    """Per field, retrieval's vote shares [n, classes] over k texts for the training cases
    `unseen` (whose patients the model never trained on), NaN for the others: retrieved from
    a catalog of the other training cases' texts only, so a case's own description is in it
    no more often than a new patient's would be in the service's catalog. None without
    unseen cases (served.fit_served then does not offer the vote)."""
    if unseen is None or len(unseen) == 0:
        return None
    held = np.zeros(len(texts), bool)
    held[unseen] = True
    distinct = list(dict.fromkeys(t for t, h in zip(texts, held, strict=True) if not h))
    if not distinct:
        return None
    labels = np.stack([schema.parse(t) for t in distinct])
    shares = exact_vote(
        case_emb[held], embed_texts(model, cache, distinct), labels, schema.class_counts, k
    )
    out = []
    for part in shares:
        full = np.full((len(texts), part.shape[1]), np.nan)
        full[held] = part
        out.append(full)
    return out
