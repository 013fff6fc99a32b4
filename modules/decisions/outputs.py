"""A stage's outputs, row by row: `EvalOutputs` (each row's index in its split, raw logits and gold labels), gathered
from every batch of every process, one row per document when long texts were windowed. Calibration, thresholds,
the collapse check and the test report all read it."""

from dataclasses import dataclass

import torch

from modules.data.long_text import aggregate_windows


@dataclass(frozen=True)
class EvalOutputs:
    """Every row of a split once, in index order.

    Attributes:
        index: `(rows,)` each row's index in the split (as the datamodule loaded it).
        logits: `(rows, num_labels)` raw float logits (a document's windows averaged, max for multi-label).
        labels: `(rows,)` class ids, `(rows, num_labels)` 0/1 for multi-label, `(rows,)` values for regression.
    """

    index: torch.Tensor
    logits: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.index)


def gather(
    parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], multi_label: bool, world_size: int
) -> EvalOutputs:
    """The `(index, logits, labels)` of every batch on every process, as one row per index on every process
    (the padding rows a distributed sampler repeats count once). Collective under DDP: every rank must call it."""
    if parts:
        index, logits, labels = (torch.cat([p[i] for p in parts]) for i in range(3))
    else:
        index, logits, labels = torch.empty(0, dtype=torch.long), torch.empty(0, 1), torch.empty(0)
    if world_size > 1:
        import torch.distributed as dist

        gathered: list = [None] * world_size
        dist.all_gather_object(gathered, (index, logits, labels))
        gathered = [g for g in gathered if len(g[0])] or [(index, logits, labels)]
        index, logits, labels = (torch.cat([g[i] for g in gathered]) for i in range(3))
    if not len(index):
        return EvalOutputs(index, logits, labels)
    rows, inverse = torch.unique(index, return_inverse=True)
    per_row = aggregate_windows(logits.float(), inverse, multi_label)  # the mean of identical repeats is the row
    row_labels = torch.empty((len(rows), *labels.shape[1:]), dtype=labels.dtype)
    row_labels[inverse] = labels
    return EvalOutputs(rows, per_row, row_labels)
