"""Each task's loss and outputs, and the class weights that counter imbalance in the training loss.

Light on purpose (torch only): the server imports `task_outputs` from here.
"""

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from modules.errors import HFLightningError

if TYPE_CHECKING:
    from modules.data.labels import LabelSpec  # datasets: for the annotation only


def task_loss(task: str, logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """Cross-entropy (single-label), BCE with logits (multi-label, `weights` as `pos_weight`) or MSE (regression)."""
    logits = logits.float()
    if task == "regression":
        return F.mse_loss(logits.squeeze(-1), labels)
    if task == "multi_label":
        return F.binary_cross_entropy_with_logits(logits, labels, pos_weight=weights)
    return F.cross_entropy(logits, labels, weight=weights)


def task_outputs(task: str, logits: torch.Tensor) -> torch.Tensor:
    """Class probabilities (single-label softmax, multi-label sigmoid) or the predicted value (regression)."""
    logits = logits.float()
    if task == "regression":
        return logits.squeeze(-1)
    return torch.sigmoid(logits) if task == "multi_label" else torch.softmax(logits, dim=-1)


def class_weights(
    setting: str | Sequence[float], spec: "LabelSpec", label_counts: Sequence[float] | None, train_rows: int
) -> torch.Tensor | None:
    """The loss weights `--model.class_weights` asks for: None, `balanced` from the train split's counts, or given."""
    if setting == "none":
        return None
    if spec.task == "regression":
        raise HFLightningError("--model.class_weights applies to classification; set it to none for regression.")
    if setting == "balanced":
        if not label_counts:
            raise HFLightningError("--model.class_weights balanced needs a train split to count labels in.")
        counts = torch.tensor(label_counts).clamp(min=1)
        if spec.task == "multi_label":
            return (train_rows - counts).clamp(min=1) / counts  # BCE pos_weight: negatives per positive
        return counts.sum() / (len(counts) * counts)
    if len(setting) != spec.num_labels:
        raise HFLightningError(
            f"--model.class_weights has {len(setting)} values but there are {spec.num_labels} labels "
            f"{list(spec.names)}."
        )
    return torch.tensor(setting, dtype=torch.float)
