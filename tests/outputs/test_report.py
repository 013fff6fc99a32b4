"""The test report: per-label tables consistent with the logged metrics, calibration, the most-confused labels, the
wrong rows in test_errors.csv (most confident first, with their texts) and the figures."""

import csv
import json
import sys

import pytest
import torch
from torchmetrics.classification import MulticlassF1Score, MulticlassPrecision, MulticlassRecall, MultilabelF1Score

from helpers import read_metrics, run_dir, write_base_config
from modules.cli.app import cli_main
from modules.decisions.thresholds import f1_scores
from modules.outputs.breakdown import confused_pairs, per_class_rows, residual_summary
from modules.outputs.errors import error_rows

try:
    import matplotlib  # noqa: F401  (the `plots` extra)

    PLOTS = True
except ImportError:
    PLOTS = False

PNG = b"\x89PNG\r\n\x1a\n"


def read_csv(path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


# ------------------------------------------------------------------------------------------ the pure parts
def test_per_class_rows_agree_with_torchmetrics():
    matrix = torch.tensor([[3, 1, 0], [0, 0, 0], [2, 0, 4]])  # label 1: never in the data, predicted once
    target = torch.cat([torch.full((int(matrix[i].sum()),), i) for i in range(3)])
    preds = torch.cat([torch.full((int(matrix[i, j]),), j) for i in range(3) for j in range(3)])
    rows = per_class_rows(matrix, ["a", "b", "c"])
    assert [r["support"] for r in rows] == [4, 0, 6]
    for key, metric in (("precision", MulticlassPrecision), ("recall", MulticlassRecall), ("f1", MulticlassF1Score)):
        expected = metric(3, average=None)(preds, target).tolist()
        assert [r[key] for r in rows] == pytest.approx(expected, abs=1e-6), key


def test_multi_label_f1_agrees_with_torchmetrics():
    generator = torch.Generator().manual_seed(0)
    predicted = (torch.rand(50, 4, generator=generator) > 0.6).float()
    labels = (torch.rand(50, 4, generator=generator) > 0.7).long()
    labels[:, 3] = 0  # a label absent from the data
    macro, micro = f1_scores(predicted, labels)
    assert macro == pytest.approx(float(MultilabelF1Score(4, average="macro")(predicted, labels)), abs=1e-6)
    assert micro == pytest.approx(float(MultilabelF1Score(4, average="micro")(predicted, labels)), abs=1e-6)


def test_confused_pairs_count_gold_against_the_label_predicted_instead():
    names = ["a", "b", "c"]
    single = confused_pairs(torch.tensor([1, 1, 2, 0, 1, 0]), torch.tensor([0, 0, 0, 0, 2, 1]), names)
    assert [(p["gold"], p["predicted"], p["rows"]) for p in single] == [
        ("a", "b", 2),
        ("a", "c", 1),
        ("b", "a", 1),
        ("c", "b", 1),
    ]
    gold = torch.tensor([[1, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]])
    predicted = torch.tensor([[0, 0, 1], [1, 0, 1], [1, 1, 0], [0, 0, 0]])  # row 2 right; row 3 misses b only
    assert confused_pairs(predicted, gold, names) == [{"gold": "a", "predicted": "c", "rows": 2}]


def test_residual_summary():
    summary = residual_summary(torch.tensor([1.0, 2.0, 5.0]), torch.tensor([1.0, 3.0, 3.0]))  # residuals 0, -1, 2
    assert summary["mean"] == pytest.approx(1 / 3) and summary["mae"] == pytest.approx(1.0)
    assert summary["q50"] == pytest.approx(0.0) and summary["rmse"] == pytest.approx((5 / 3) ** 0.5)


def test_error_rows_most_confident_mistake_first():
    names = ["a", "b", "c"]
    probabilities = torch.tensor([[0.2, 0.7, 0.1], [0.9, 0.05, 0.05], [0.1, 0.45, 0.45], [0.3, 0.3, 0.4]])
    rows = error_rows("single_label", torch.tensor([10, 11, 12, 13]), torch.tensor([0, 0, 1, 0]),
                      torch.tensor([1, 0, 2, 2]), probabilities, names)  # fmt: skip
    assert [r["index"] for r in rows] == [10, 12, 13]  # row 11 is right
    assert [(r["gold"], r["predicted"]) for r in rows] == [("a", "b"), ("b", "c"), ("a", "c")]
    assert [r["confidence"] for r in rows] == pytest.approx([0.7, 0.45, 0.4])
    assert [r["margin"] for r in rows] == pytest.approx([0.5, 0.0, 0.1])

    probabilities = torch.tensor([[0.9, 0.2], [0.6, 0.45], [0.3, 0.8]])
    gold = torch.tensor([[1, 0], [0, 0], [0, 0]])
    predicted = (probabilities > torch.tensor([0.5, 0.4])).float()  # row 0 right; row 1 both wrong; row 2 b wrong
    rows = error_rows("multi_label", torch.arange(3), gold, predicted, probabilities, ["a", "b"], (0.5, 0.4))
    assert [(r["index"], r["gold"], r["predicted"]) for r in rows] == [(2, "", "b"), (1, "", "a;b")]
    assert [r["confidence"] for r in rows] == pytest.approx([0.8, 0.6])  # the most confident wrong decision
    assert [r["margin"] for r in rows] == pytest.approx([0.4, 0.05])  # the wrong label nearest its threshold


def test_without_matplotlib_one_line_and_no_figure(tmp_path, monkeypatch, capsys):
    from modules.outputs.figures import confusion_figure
    from modules.outputs.report import _save_figures

    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # as if the `plots` extra were not installed
    figures = {"test_confusion_matrix": lambda: confusion_figure(torch.eye(2), ["a", "b"])}
    assert _save_figures(tmp_path, figures, trainer=None) == [] and not list(tmp_path.iterdir())
    assert capsys.readouterr().out == (
        "No figures (test_confusion_matrix.png): matplotlib is not installed (`pip install hf-lightning[plots]`).\n"
    )


# ------------------------------------------------------------------------------------------ end to end
@pytest.mark.e2e  # trains end to end: `make test-fast` skips it
def test_single_label_report_and_errors(tmp_path, tiny_model, reviews_dir, capsys):
    from matplotlib.image import imread
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    base = write_base_config(tmp_path, tiny_model, data={"dataset": str(reviews_dir)})
    args = ["--config", str(base), "--trainer.logger", "lightning.pytorch.loggers.TensorBoardLogger"]
    cli_main(["fit", *args, "--trainer.limit_train_batches", "3", "--trainer.max_epochs", "1"])
    capsys.readouterr()
    cli = cli_main(["test", *args, "--ckpt_path", "best"])
    out = capsys.readouterr().out
    folder = run_dir(tmp_path)  # TensorBoard: the test logs into the fit's run folder
    metrics = read_metrics(folder / "test_metrics.json")

    rows = read_csv(folder / "test_per_class.csv")
    assert [r["label"] for r in rows] == ["neg", "pos"]
    assert sum(int(r["support"]) for r in rows) == 100  # every test row counted once
    for row in rows:  # the table and the logged per-class metrics come from the same rows
        assert float(row["precision"]) == pytest.approx(metrics[f"test_precision_{row['label']}"], abs=1e-6)
        assert float(row["recall"]) == pytest.approx(metrics[f"test_recall_{row['label']}"], abs=1e-6)

    errors = read_csv(folder / "test_errors.csv")
    assert list(errors[0]) == ["index", "text", "gold", "predicted", "confidence", "margin"]
    assert len(errors) == round((1 - metrics["test_acc"]) * 100) > 0
    confidence = [float(r["confidence"]) for r in errors]
    assert confidence == sorted(confidence, reverse=True)
    test_split = cli.datamodule.contract.raw_splits["test"]
    for row in errors:  # each row is wrong, and its text and gold label are those of its row in the test split
        assert row["gold"] != row["predicted"]
        source = test_split[int(row["index"])]
        assert row["text"] == source["text"] and row["gold"] == ["neg", "pos"][source["label"]]
        assert 0.5 <= float(row["confidence"]) <= 1 and float(row["margin"]) == pytest.approx(
            2 * float(row["confidence"]) - 1, abs=1e-5
        )  # two labels: top1 - top2 = p - (1 - p)

    assert f"ECE (15 bins): raw {metrics['test_ece_uncalibrated']:.4f}, calibrated {metrics['test_ece']:.4f}" in out
    assert "Calibrated: temperature scaling" in out and "Most confused (gold -> predicted): " in out
    assert f"test_errors.csv: {len(errors)} wrong rows" in out
    if not PLOTS:
        assert "matplotlib is not installed" in out
        return
    for name in ("test_confusion_matrix", "test_reliability"):
        png = folder / f"{name}.png"
        assert png.read_bytes()[:8] == PNG
        height, width, _ = imread(png).shape
        assert height > 200 and width > 200
    events = EventAccumulator(str(folder))
    events.Reload()
    assert sorted(events.Tags()["images"]) == ["test_confusion_matrix", "test_reliability"]
    assert events.Images("test_confusion_matrix")[0].encoded_image_string[:8] == PNG


@pytest.mark.e2e
def test_multi_label_report_thresholds_f1_and_errors(topic_run, capsys):
    capsys.readouterr()
    cli = cli_main(["test", "--config", str(topic_run["config"]), "--ckpt_path", "best"])
    out = capsys.readouterr().out
    folder, model = topic_run["run_dir"], cli.model
    metrics = read_metrics(folder / "test_metrics.json")
    names = list(model.hparams.label_names)

    rows = {r["label"]: r for r in read_csv(folder / "test_per_class.csv")}
    assert list(rows) == names
    assert list(rows["rare"]) == ["label", "precision", "recall", "f1", "support", "threshold", "tuned",
                                  "untuned_because"]  # fmt: skip
    assert rows["rare"]["tuned"] == "False" and "0 positive(s) in validation" in rows["rare"]["untuned_because"]
    assert float(rows["rare"]["threshold"]) == model.hparams.threshold
    decisions = model.decisions
    for name, threshold in zip(names, decisions.thresholds):
        assert float(rows[name]["threshold"]) == pytest.approx(threshold, abs=1e-6)
        assert (rows[name]["tuned"] == "True") == (name not in decisions.untuned)
    assert "Thresholds: 5 of 6 labels tuned" in out

    # tuned and untuned F1 side by side, the same numbers the module logged
    assert f"| {metrics['test_f1_macro']:.4f} | {metrics['test_f1_micro']:.4f} |" in out
    assert f"| --model.threshold 0.5, raw scores | {metrics['test_f1_macro_untuned']:.4f} |" in out
    assert f"raw {metrics['test_ece_uncalibrated']:.4f}, calibrated {metrics['test_ece']:.4f}" in out

    gold_sets = [set(json.loads(line)["labels"]) for line in open(topic_run["files"]["test"])]
    errors = read_csv(folder / "test_errors.csv")
    assert list(errors[0]) == ["index", "text", "gold", "predicted", "confidence", "margin"]
    outputs = model.test_outputs
    wrong = (model.decide(outputs.logits).bool() != outputs.labels.bool()).any(dim=1)
    assert len(errors) == int(wrong.sum()) > 0
    confidence = [float(r["confidence"]) for r in errors]
    assert confidence == sorted(confidence, reverse=True)
    for row in errors:
        gold, predicted = (set(filter(None, row[k].split(";"))) for k in ("gold", "predicted"))
        assert gold == gold_sets[int(row["index"])] and gold != predicted
        assert 0 < float(row["confidence"]) <= 1 and 0 <= float(row["margin"]) <= 1
    assert (folder / "test_reliability.png").exists() == PLOTS
