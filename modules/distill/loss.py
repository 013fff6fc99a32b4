"""Each task's soft loss against the teacher, and `DistillLoss`, its mix with the gold loss in a training step."""

from collections.abc import Callable

import torch
import torch.nn.functional as F


def soft_loss(task: str, student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """How far the student's scores are from the teacher's, per task, scaled by temperature squared so that its
    gradients keep their size whatever the temperature (Hinton et al., 2015):

    - single-label: KL(teacher || student) of the softmaxes at `temperature`, per row;
    - multi-label: binary cross-entropy of each label's sigmoid at `temperature` against the teacher's (the
      teacher's probability as the target);
    - regression: mean squared error against the teacher's prediction (no temperature: there is nothing to soften).
    """
    student, teacher = student.float(), teacher.float()
    if task == "regression":
        return F.mse_loss(student.squeeze(-1), teacher.squeeze(-1))
    t = temperature
    if task == "multi_label":
        return F.binary_cross_entropy_with_logits(student / t, torch.sigmoid(teacher / t)) * t * t
    log_student, log_teacher = F.log_softmax(student / t, dim=-1), F.log_softmax(teacher / t, dim=-1)
    return F.kl_div(log_student, log_teacher, log_target=True, reduction="batchmean") * t * t


class DistillLoss:
    """`alpha` x soft loss + (1 - `alpha`) x gold loss, for a batch that holds `teacher_logits`.

    Rows whose `index` is `labeled_rows` or more came from an unlabelled file: they have the soft loss only, and the
    gold loss is the mean over the batch's labelled rows (none: the soft loss alone).
    """

    def __init__(self, task: str, alpha: float, temperature: float, labeled_rows: int, unlabeled: bool) -> None:
        self.task, self.alpha, self.temperature = task, alpha, temperature
        self.labeled_rows, self.unlabeled = labeled_rows, unlabeled

    def __call__(
        self,
        logits: torch.Tensor,
        batch: dict[str, torch.Tensor],
        gold_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    ) -> torch.Tensor:
        soft = soft_loss(self.task, logits, batch["teacher_logits"], self.temperature)
        if self.alpha == 1.0:
            return soft
        labels = batch["labels"]
        if self.unlabeled:
            labeled = batch["index"] < self.labeled_rows
            if not labeled.any():  # one host sync per step, only when unlabelled rows are mixed in
                return soft
            logits, labels = logits[labeled], labels[labeled]
        return self.alpha * soft + (1 - self.alpha) * gold_loss(logits, labels)
