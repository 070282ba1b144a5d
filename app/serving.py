"""What answers requests: one loaded checkpoint with its catalog, swapped as a whole."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from app.errors import CheckpointRejected
from model.checkpoint import Checkpoint
from model.inference import Explainer


@dataclass(frozen=True)
class Serving:
    """A checkpoint, its explainer and their versions; never changed after it is built.

    The catalog lives inside the checkpoint, so a request holding one Serving can never pair a
    new model with an old catalog.
    """

    checkpoint: Checkpoint
    explainer: Explainer
    model_version: str
    catalog_version: str
    # The checkpoint folder: a re-index with no new catalog text still adds cases and counts,
    # in a new folder, so the folder tells two such versions apart.
    source: str = ""
    # Seconds it took to load the checkpoint and build the explainer (a metric).
    load_seconds: float = 0.0

    @property
    def feature_dim(self) -> int:
        return self.checkpoint.config.feature_dim

    @property
    def max_slices(self) -> int:
        return self.checkpoint.config.max_slices

    @classmethod
    def from_checkpoint(cls, checkpoint: Checkpoint, source: str = "") -> Serving:
        return cls(
            checkpoint,
            Explainer(checkpoint),
            checkpoint.version,
            checkpoint.catalog.version,
            source,
        )


def load_checkpoint(folder: Path) -> Checkpoint:
    """Loads a checkpoint folder; whatever goes wrong becomes CheckpointRejected."""
    try:
        return Checkpoint.load(Path(folder))
    except Exception as e:  # a folder that fails to load in any way must not be served
        raise CheckpointRejected(f"checkpoint {folder} does not load: {e}") from e


class ServingState:
    """The process's current Serving. Readers take `current` once per request, without a lock;
    writers replace it with a single assignment under `lock`."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._current: Serving | None = None

    @property
    def current(self) -> Serving | None:
        return self._current

    def replace(self, serving: Serving | None) -> None:
        """Call with `lock` held."""
        self._current = serving
