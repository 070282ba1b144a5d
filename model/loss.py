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
) -> torch.Tensor:
    """Symmetric InfoNCE.

    Plain (thesis): `text` is (b, d), row i of `image` goes with row i of `text`, and every other
    row is a negative, even when it is the same descriptor text.

    Label-aware: `text` holds the batch's *distinct* texts (u, d) and `text_index` (b,) maps each
    case to its row. Image -> text is a softmax over the distinct texts (a frequent text is no
    longer counted once per case in every denominator); text -> image spreads each text's target
    evenly over all its cases. (With identical texts duplicated instead, the gradients equal the
    plain loss exactly, which is why this needs the distinct-text form.)
    """
    logits = distance_logits(image, text, scale)  # (b, b) or (b, u)
    if text_index is None:
        target = torch.arange(len(image), device=image.device)
        return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    owners = F.one_hot(text_index, num_classes=len(text)).T.to(logits.dtype)  # (u, b)
    owners = owners / owners.sum(1, keepdim=True)
    return (F.cross_entropy(logits, text_index) + F.cross_entropy(logits.T, owners)) / 2


def multitask_loss(
    logits: list[torch.Tensor],
    labels: torch.Tensor,
    class_weights: list[torch.Tensor] | None = None,
) -> torch.Tensor:
    """Mean over fields of cross-entropy, each field skipping cases whose value is unknown (-1).

    `class_weights` (one (classes,) tensor per field) re-weights rare classes.
    """
    terms = []
    for j, field_logits in enumerate(logits):
        known = labels[:, j] >= 0
        if known.any():
            weight = class_weights[j] if class_weights is not None else None
            terms.append(F.cross_entropy(field_logits[known], labels[known, j], weight=weight))
    if not terms:
        return logits[0].sum() * 0.0
    return torch.stack(terms).mean()
