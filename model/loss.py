"""Contrastive loss: logits = -Euclidean distance x learnable scale, symmetric InfoNCE."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def distance_logits(image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """(b, d) x (t, d) L2-normalised embeddings -> (b, t) logits = -||i - t|| * scale."""
    return -torch.cdist(image, text) * scale


def clip_loss(
    image: torch.Tensor,
    text: torch.Tensor,
    scale: torch.Tensor,
    text_index: torch.Tensor | None = None,
    positives: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric InfoNCE.

    Plain (thesis): `text` is (b, d), row i of `image` goes with row i of `text`, and every other
    row is a negative, even when it is the same descriptor text.

    Label-aware: `text` holds the batch's *distinct* texts (u, d) and `text_index` (b,) maps each
    case to its row. Image -> text is a softmax over the distinct texts (a frequent text is no
    longer counted once per case in every denominator); text -> image spreads each text's target
    evenly over all its cases. (With identical texts duplicated instead, the gradients equal the
    plain loss exactly, which is why this needs the distinct-text form.)

    Reader-weighted (label-aware only): `positives` (b, u) >= 0 weighs how much each distinct
    text is a positive of each case (see :func:`reader_positives`); image -> text targets are
    its rows normalised, text -> image targets its columns.
    """
    logits = distance_logits(image, text, scale)  # (b, b) or (b, u)
    if text_index is None:
        target = torch.arange(len(image), device=image.device)
        return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    if positives is not None:
        targets = positives / positives.sum(1, keepdim=True)
        owners = (positives / positives.sum(0, keepdim=True)).T
        return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, owners)) / 2
    owners = F.one_hot(text_index, num_classes=len(text)).T.to(logits.dtype)  # (u, b)
    owners = owners / owners.sum(1, keepdim=True)
    return (F.cross_entropy(logits, text_index) + F.cross_entropy(logits.T, owners)) / 2


def reader_positives(
    soft: list[torch.Tensor], text_labels: torch.Tensor, text_index: torch.Tensor
) -> torch.Tensor:
    """(b, u) weights: how likely case i's nodule's readers are to give distinct text u.

    `soft` holds per field (b, classes) the case's nodule distribution of reader values,
    `text_labels` (u, fields) each distinct text's class codes (-1 unknown). The weight is the
    product over fields of the probability of u's value (fields unknown on either side count 1),
    so a case's own text always weighs > 0 (its own read is in its distribution); texts its
    readers would not give weigh 0.
    """
    weight = torch.ones(len(text_index), len(text_labels), device=text_labels.device)
    for j, dist in enumerate(soft):
        values = text_labels[:, j]
        known_text = values >= 0
        factor = dist[:, values.clamp_min(0)]  # (b, u)
        known_case = dist.sum(1, keepdim=True) > 0
        weight = weight * torch.where(known_case & known_text[None, :], factor, 1.0)
    own = F.one_hot(text_index, num_classes=len(text_labels)).to(weight.dtype)
    return torch.maximum(weight, own * 1e-6)  # numerically positive on the own text


def multitask_loss(
    logits: list[torch.Tensor],
    labels: torch.Tensor,
    class_weights: list[torch.Tensor] | None = None,
    soft: list[torch.Tensor] | None = None,
) -> torch.Tensor:
    """Mean over fields of cross-entropy, each field skipping cases whose value is unknown (-1).

    `class_weights` (one (classes,) tensor per field) re-weights rare classes. `soft` (one
    (b, classes) tensor per field: the nodule's distribution of reader values) replaces the
    read's own value as the target; rows of zeros (no known reader value) are skipped.
    """
    terms = []
    for j, field_logits in enumerate(logits):
        weight = class_weights[j] if class_weights is not None else None
        if soft is not None:
            known = soft[j].sum(1) > 0
            if known.any():
                terms.append(F.cross_entropy(field_logits[known], soft[j][known], weight=weight))
            continue
        known = labels[:, j] >= 0
        if known.any():
            terms.append(F.cross_entropy(field_logits[known], labels[known, j], weight=weight))
    if not terms:
        return logits[0].sum() * 0.0
    return torch.stack(terms).mean()
