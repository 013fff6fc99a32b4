"""Each task's metrics on a tiny tensor, against values worked out by hand."""

import pytest
import torch

from modules.errors import HFLightningError
from modules.model.metrics import build_metrics, check_monitors, logged_names


def _values(metrics, preds, target) -> dict:
    metrics.update(torch.tensor(preds), torch.tensor(target))
    return {name: value.tolist() for name, value in metrics.compute().items()}


def test_single_label_accuracy_macro_f1_and_per_class():
    # Predicted classes 0, 1, 0, 1 for true 0, 1, 1, 1: 3 of 4 right.
    # class 0: precision 1/2, recall 1, F1 2/3; class 1: precision 1, recall 2/3, F1 4/5.
    probabilities = [[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]]
    values = _values(build_metrics("single_label", 2, per_class=True), probabilities, [0, 1, 1, 1])
    assert values["acc"] == pytest.approx(0.75)
    assert values["f1"] == pytest.approx((2 / 3 + 4 / 5) / 2)
    assert values["precision"] == pytest.approx([0.5, 1.0])
    assert values["recall"] == pytest.approx([1.0, 2 / 3])
    assert values["confusion"] == [[1, 0], [1, 2]]  # rows: true label, columns: predicted


def test_single_label_without_per_class_logs_only_scalars():
    assert list(build_metrics("single_label", 3).keys()) == ["acc", "f1"]


@pytest.mark.parametrize(
    ("threshold", "micro", "macro"),
    [
        # At 0.5: predicted [1,0,1],[0,1,0]. Label 0: TP 1, FN 1 -> F1 2/3; label 1: F1 1; label 2: FP 1 -> F1 0.
        # Micro: TP 2, FP 1, FN 1 -> 4/6.
        (0.5, 4 / 6, (2 / 3 + 1 + 0) / 3),
        # At 0.3: predicted [1,0,1],[1,1,0]. Label 0: F1 1; label 1: F1 1; label 2: F1 0. Micro: TP 3, FP 1 -> 6/7.
        (0.3, 6 / 7, 2 / 3),
    ],
)
def test_multi_label_f1_at_the_threshold(threshold, micro, macro):
    probabilities = [[0.9, 0.2, 0.6], [0.4, 0.7, 0.1]]
    values = _values(build_metrics("multi_label", 3, threshold=threshold), probabilities, [[1, 0, 0], [1, 1, 0]])
    assert values["f1_micro"] == pytest.approx(micro)
    assert values["f1_macro"] == pytest.approx(macro)


def test_regression_mse_pearson_spearman():
    # Errors 0, 0, 0, 1 -> MSE 1/4. Deviations from the means (2.5, 2.75): x (-1.5, -0.5, 0.5, 1.5),
    # y (-1.75, -0.75, 0.25, 2.25): covariance sum 6.5, squares 5 and 8.75 -> r = 6.5 / sqrt(43.75). Same ranks -> 1.
    values = _values(build_metrics("regression", 1), [1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 5.0])
    assert values["mse"] == pytest.approx(0.25)
    assert values["pearson"] == pytest.approx(6.5 / 43.75**0.5)
    assert values["spearman"] == pytest.approx(1.0)


def test_logged_names_per_task():
    assert logged_names("single_label", "val") == ["val_loss", "val_acc", "val_f1"]
    assert logged_names("multi_label", "test") == ["test_loss", "test_f1_macro", "test_f1_micro"]
    assert logged_names("regression", "val") == ["val_loss", "val_mse", "val_pearson", "val_spearman"]


class _Monitoring:
    def __init__(self, monitor: str | None) -> None:
        self.monitor = monitor


def test_monitor_of_a_metric_the_task_never_logs_fails_at_start():
    check_monitors([_Monitoring("val_mse"), _Monitoring("train_loss"), _Monitoring(None)], "regression")
    with pytest.raises(HFLightningError, match=r"_Monitoring monitors 'val_acc', which a regression run never logs"):
        check_monitors([_Monitoring("val_acc")], "regression")
