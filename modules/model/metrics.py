"""Which metrics each task logs, built from torchmetrics so they are synchronised across processes."""

from torchmetrics import MeanSquaredError, MetricCollection, PearsonCorrCoef, SpearmanCorrCoef
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
    MultilabelF1Score,
)

from modules.errors import HFLightningError


def build_metrics(task: str, num_labels: int, threshold: float = 0.5, per_class: bool = False) -> MetricCollection:
    """Metrics of one stage; keys are the logged names without the `val_`/`test_` prefix.

    Single-label: `acc` (micro accuracy) and `f1` (macro F1), plus per-class `precision`/`recall` vectors and the
    `confusion` matrix (rows: true label, columns: predicted) when `per_class`. Multi-label: `f1_micro` and
    `f1_macro` at `threshold` on sigmoid outputs. Regression: `mse`, `pearson`, `spearman`.
    """
    if task == "single_label":
        metrics = {
            "acc": MulticlassAccuracy(num_labels, average="micro"),
            "f1": MulticlassF1Score(num_labels, average="macro"),
        }
        if per_class:
            metrics["precision"] = MulticlassPrecision(num_labels, average=None)
            metrics["recall"] = MulticlassRecall(num_labels, average=None)
            metrics["confusion"] = MulticlassConfusionMatrix(num_labels)
        return MetricCollection(metrics)
    if task == "multi_label":
        return MetricCollection(
            {
                "f1_micro": MultilabelF1Score(num_labels, threshold=threshold, average="micro"),
                "f1_macro": MultilabelF1Score(num_labels, threshold=threshold, average="macro"),
            }
        )
    return MetricCollection({"mse": MeanSquaredError(), "pearson": PearsonCorrCoef(), "spearman": SpearmanCorrCoef()})


def logged_names(task: str, prefix: str) -> list[str]:
    """Names a stage logs as scalars, e.g. `val_loss`, `val_acc`, `val_f1` (per-class metrics left out)."""
    names = [k for k in build_metrics(task, 2).keys()]
    return [f"{prefix}_loss"] + [f"{prefix}_{name}" for name in names]


def check_monitors(callbacks: list, task: str) -> None:
    """Fail at start, not after an epoch, when EarlyStopping/ModelCheckpoint monitor a metric the run never logs."""
    available = ["train_loss"] + logged_names(task, "val")
    for callback in callbacks:
        monitor = getattr(callback, "monitor", None)
        if monitor and monitor not in available:
            raise HFLightningError(
                f"{type(callback).__name__} monitors {monitor!r}, which a {task} run never logs. "
                f"Monitor one of {available}."
            )
