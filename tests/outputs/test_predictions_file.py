"""Where `predict` writes (modules/outputs/predictions.py `output_file`): never over an earlier run's file unasked;
and how its rows decide (the module's `decision_rule()`: tuned per-label thresholds, a binary decision)."""

import torch

from modules.decisions.record import DecisionRule
from modules.outputs.predictions import PredictionWriter, output_file


def test_the_default_file_gets_a_new_name_when_an_earlier_predict_wrote_it(tmp_path):
    default = tmp_path / "predictions.jsonl"
    assert output_file(None, default) == default
    default.write_text("earlier\n")
    assert output_file(None, default) == tmp_path / "predictions-1.jsonl"
    (tmp_path / "predictions-1.jsonl").write_text("earlier\n")
    assert output_file(None, default) == tmp_path / "predictions-2.jsonl"


def test_a_named_file_is_the_one_written(tmp_path):
    named = tmp_path / "out.csv"
    named.write_text("earlier\n")
    assert output_file(str(named), tmp_path / "predictions.jsonl") == named  # replaced, with a notice


def test_rows_decide_by_the_rule_per_label_thresholds_and_a_binary_decision():
    columns = {"id": [7, 8]}
    probabilities = torch.tensor([[0.3, 0.6], [0.2, 0.8]])
    per_label = DecisionRule(threshold=(0.25, 0.7))
    rows = PredictionWriter._rows(columns, ["x", "y"], "multi_label", per_label, probabilities)
    assert [(row["id"], row["prediction"]) for row in rows] == [(7, ["x"]), (8, ["y"])]  # at 0.5: ["y"] twice
    probabilities = torch.tensor([[0.6, 0.4], [0.8, 0.2]])
    rows = PredictionWriter._rows(columns, ["x", "y"], "single_label", DecisionRule(decision=("y", 0.3)), probabilities)
    assert [row["prediction"] for row in rows] == ["y", "x"]  # the best label would be x for both
