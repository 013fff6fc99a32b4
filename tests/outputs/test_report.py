"""The test report: confusion-matrix PNG (and TensorBoard image) and per-class table, consistent with the metrics."""

import csv

import pytest
import torch
from matplotlib.image import imread
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torchmetrics.classification import MulticlassF1Score, MulticlassPrecision, MulticlassRecall

from helpers import read_metrics, run_dir, write_base_config
from modules.cli.app import cli_main
from modules.outputs.report import per_class_rows

pytestmark = pytest.mark.e2e  # trains end to end: `make test-fast` skips it


def test_per_class_rows_agree_with_torchmetrics():
    matrix = torch.tensor([[3, 1, 0], [0, 0, 0], [2, 0, 4]])  # label 1: never in the data, predicted once
    target = torch.cat([torch.full((int(matrix[i].sum()),), i) for i in range(3)])
    preds = torch.cat([torch.full((int(matrix[i, j]),), j) for i in range(3) for j in range(3)])
    rows = per_class_rows(matrix, ["a", "b", "c"])
    assert [r["support"] for r in rows] == [4, 0, 6]
    for key, metric in (("precision", MulticlassPrecision), ("recall", MulticlassRecall), ("f1", MulticlassF1Score)):
        expected = metric(3, average=None)(preds, target).tolist()
        assert [r[key] for r in rows] == pytest.approx(expected, abs=1e-6), key


def test_test_writes_confusion_matrix_and_per_class_table(tmp_path, tiny_model, reviews_dir):
    base = write_base_config(tmp_path, tiny_model, data={"dataset": str(reviews_dir)})
    args = ["--config", str(base), "--trainer.logger", "lightning.pytorch.loggers.TensorBoardLogger"]
    cli_main(["fit", *args, "--trainer.limit_train_batches", "10"])
    cli = cli_main(["test", *args, "--ckpt_path", "best"])
    folder = run_dir(tmp_path)  # TensorBoard: the test logs into the fit's run folder

    matrix = cli.model.test_confusion_matrix
    assert matrix.shape == (2, 2) and int(matrix.sum()) == 100  # every test row counted once
    png = folder / "test_confusion_matrix.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    height, width, _ = imread(png).shape
    assert height > 200 and width > 200

    with (folder / "test_per_class.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["label"] for r in rows] == ["neg", "pos"]
    assert [int(r["support"]) for r in rows] == matrix.sum(1).tolist()
    metrics = read_metrics(folder / "test_metrics.json")
    for row in rows:  # the table and the logged per-class metrics come from the same rows
        assert float(row["precision"]) == pytest.approx(metrics[f"test_precision_{row['label']}"], abs=1e-6)
        assert float(row["recall"]) == pytest.approx(metrics[f"test_recall_{row['label']}"], abs=1e-6)

    events = EventAccumulator(str(folder))
    events.Reload()
    assert events.Tags()["images"] == ["test_confusion_matrix"]
    image = events.Images("test_confusion_matrix")[0]
    assert image.encoded_image_string[:8] == b"\x89PNG\r\n\x1a\n" and image.width > 200
