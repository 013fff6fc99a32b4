"""Speed-ups: patches of Hugging Face model internals that make steps faster without changing what is computed
(beyond rounding, or dropout's random draws), each returning its undo. `apply_exact` and `apply_for_training` are the
only entry points the model calls; the switches are `--model.fast_dropout` and `--model.compile` (a compiled model
traces the model as Hugging Face wrote it, so none apply).

- `first_token`: the last encoder layer runs position 0 only, where the head reads nothing else. Exact: on every
  device, in training and evaluation.
- `dropout`: lane dropout (four elements per random number) and attention as plain products. CPU training only:
  torch's fused GPU dropout is fast already.
- `embedding_grad`: word-embedding gradients in one kept buffer. CPU training on one process only (DDP reduces
  gradients during the backward).
- `fused_projections`: query, key and value as one matmul. CPU training, and CPU evaluation and prediction outside
  fit (`apply_for_inference`).
"""

from collections.abc import Callable

import torch
from torch import nn

from modules.speedups.dropout import use_lane_dropout
from modules.speedups.embedding_grad import known_norm, use_kept_embedding_grad
from modules.speedups.first_token import first_token_last_layer
from modules.speedups.fused_projections import fuse_qkv_projections

__all__ = ["apply_exact", "apply_for_inference", "apply_for_training", "known_norm", "without_full_mask"]


def apply_exact(model: nn.Module, compiled: bool) -> None:
    """The patches that change no result, on every device: applied once, when the model is built."""
    if not compiled:
        first_token_last_layer(model)


def apply_for_training(
    model: nn.Module, device_type: str, world_size: int, fast_dropout: bool, compiled: bool
) -> Callable[[], None]:
    """The CPU-training patches that pay on this run; returns the undo that restores the model as it was."""
    undo: list[Callable[[], None] | None] = []
    if device_type == "cpu" and not compiled:
        if fast_dropout:
            undo.append(use_lane_dropout(model))
        if world_size == 1:
            undo.append(use_kept_embedding_grad(model))
        undo.append(fuse_qkv_projections(model))
    steps = [u for u in undo if u is not None]

    def undo_all() -> None:
        for step in reversed(steps):
            step()

    return undo_all


def apply_for_inference(model: nn.Module, device_type: str, compiled: bool) -> Callable[[], None]:
    """The CPU patches that pay for `validate`, `test` and `predict` (no gradients); returns their undo."""
    undo = fuse_qkv_projections(model) if device_type == "cpu" and not compiled else None
    return undo or (lambda: None)


def without_full_mask(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The model inputs without `attention_mask` when it masks nothing (length-sorted evaluation batches often have no
    padding): attention then takes SDPA's unmasked path, the same numbers up to rounding. CPU tensors only: on GPUs
    the check would cost a host sync per batch."""
    mask = inputs.get("attention_mask")
    if mask is None or mask.device.type != "cpu" or not bool(mask.all()):
        return inputs
    return {k: v for k, v in inputs.items() if k != "attention_mask"}
