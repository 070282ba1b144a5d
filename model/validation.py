"""What every reader of a case's input shares: the error that names a problem, the slice cap,
the range of k.

A leaf module (numpy-free even), so the readers of features, outlines and segmentations and
the explainer can all import it without importing each other.
"""

from __future__ import annotations

# Hard cap on one case's slices. The longest LIDC-IDRI read outlines 56 slices (6,859 reads);
# 512 leaves room for thin-slice CT and still refuses what is not one nodule before any work.
MAX_SLICES_PER_CASE = 512
K_RANGE = (1, 50)  # distinct texts an explanation may return; checked before any model work


class InputError(ValueError):
    """Case features that cannot be explained; the message names the problem."""


def check_slice_count(n_slices: int, max_slices: int = MAX_SLICES_PER_CASE) -> None:
    """Refuses more slices than one nodule can have; the Explainer sub-samples fewer to its
    model's own `max_slices`."""
    if n_slices > max_slices:
        raise InputError(
            f"features have {n_slices} slices; at most {max_slices} are accepted per case "
            "(a nodule spans a few dozen)"
        )
