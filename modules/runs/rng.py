"""The random-number state in every checkpoint, so a resumed run draws the dropout masks an uninterrupted one would."""

import random
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer


class RNGState(Callback):
    """Save torch's (CPU and CUDA) and Python's RNG states with each checkpoint and restore them right before the
    first resumed training step.

    Lightning keeps no RNG state. Restoring right before the step, not at load time, means nothing run in between
    (the sanity check, user hooks) shifts it; that also holds for a checkpoint saved mid-epoch. The CLI always adds it.
    """

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        states: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
        if torch.cuda.is_available():
            states["cuda"] = torch.cuda.get_rng_state_all()
        return states

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        states, self._pending = self._pending, None
        if states:
            torch.set_rng_state(states["torch"])
            random.setstate(_as_tuple(states["python"]))
            if "cuda" in states and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(states["cuda"])


def _as_tuple(value: object) -> object:
    """`random.setstate` wants the nested tuples `getstate` gave; a checkpoint round trip may turn them into lists."""
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value
