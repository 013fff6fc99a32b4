"""Calibration, thresholds, targets and the collapse warning through the CLI, as users run them."""

import json
import random
import shutil

import pytest

from helpers import read_metrics, run_dir, write_base_config, write_topic_splits
from main import main
from modules.cli.app import cli_main
from modules.data.demo import NEGATIVE, NEUTRAL, POSITIVE
from modules.decisions.callback import describe
from modules.decisions.record import Decisions
from modules.runs.paths import load_checkpoint


def _best(run: dict) -> str:
    return json.loads((run["run_dir"] / "fit_summary.json").read_text())["best_checkpoint"]


def test_multi_label_thresholds_tuned_beat_the_default_and_follow_the_export(topic_run):
    cli_main(["test", "--config", str(topic_run["config"]), "--ckpt_path", "best"])
    metrics = read_metrics(topic_run["run_dir"] / "test_metrics.json")
    assert metrics["test_f1_macro"] >= metrics["test_f1_macro_untuned"]
    assert {"test_f1_micro", "test_ece", "test_ece_uncalibrated"} <= set(metrics)
    decisions = Decisions.from_checkpoint(load_checkpoint(_best(topic_run)))
    assert decisions.calibration.method == "platt" and decisions.tuned_for == "f1"
    assert list(decisions.untuned) == ["rare"]  # never in validation: keeps --model.threshold, and is named
    assert any("rare (0 positive(s) in validation" in line for line in describe(decisions))
    config = json.loads((topic_run["export"] / "config.json").read_text())
    assert config["hf_lightning_thresholds"] == dict(zip(decisions.labels, decisions.thresholds))
    assert config["hf_lightning_thresholds"]["rare"] == config["hf_lightning_threshold"] == 0.5
    assert config["hf_lightning_calibration"]["folded_into_weights"] is True


def test_recalibrate_writes_new_decisions_into_the_checkpoint(topic_run, tmp_path, capsys):
    checkpoint = tmp_path / "copy.ckpt"
    shutil.copy(_best(topic_run), checkpoint)
    other = write_topic_splits(tmp_path / "other", sizes=(50, 120, 10))
    files = json.dumps({"validation": other["validation"]})
    cli_main(["validate", "--config", str(topic_run["config"]), "--ckpt_path", str(checkpoint),
              "--data.data_files", files, "--decisions.recalibrate", "true"])  # fmt: skip
    assert "Replaced the checkpoint's calibration" in capsys.readouterr().out
    before = Decisions.from_checkpoint(load_checkpoint(_best(topic_run)))
    after = Decisions.from_checkpoint(load_checkpoint(checkpoint))
    assert before.calibration.rows == 300 and after.calibration.rows == 120 and after.thresholds != before.thresholds


def _mixed_reviews(n: int, seed: int) -> list[dict]:
    """Half clear reviews, half with a word of each polarity and a coin-flip label: a confident class and a doubtful
    one, so a precision target has something to trade."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = rng.randrange(2)
        words = [rng.choice(NEUTRAL) for _ in range(rng.randint(3, 12))]
        cues = [rng.choice(POSITIVE if label else NEGATIVE)] if i % 2 else [rng.choice(POSITIVE), rng.choice(NEGATIVE)]
        for cue in cues:
            words.insert(rng.randrange(len(words) + 1), cue)
        rows.append({"text": " ".join(words), "label": ["neg", "pos"][label]})
    return rows


def test_binary_target_precision_holds_on_test_and_a_healthy_run_gives_no_warning(tmp_path, tiny_model, capsys):
    files = {}
    for seed, (split, n) in enumerate({"train": 600, "validation": 4000, "test": 4000}.items()):
        files[split] = tmp_path / f"{split}.jsonl"
        files[split].write_text("".join(json.dumps(row) + "\n" for row in _mixed_reviews(n, seed)))
    data = {"data_files": {k: str(v) for k, v in files.items()}, "eval_batch_size": 256}
    config = write_base_config(tmp_path, tiny_model, trainer={"max_epochs": 3}, data=data)
    target = ["--decisions.target_precision", "0.9", "--decisions.target_label", "pos"]
    cli_main(["fit", "--config", str(config), *target])
    out = capsys.readouterr().out
    assert "Decision: pos when its probability is above" in out and "collapsed" not in out
    cli_main(["test", "--config", str(config), "--ckpt_path", "best"])
    metrics = read_metrics(run_dir(tmp_path) / "test_metrics.json")
    assert abs(metrics["test_precision_pos"] - 0.9) <= 0.02
    assert metrics["test_ece"] < metrics["test_ece_uncalibrated"] or metrics["test_ece"] < 0.02


def test_a_collapsed_model_is_called_out(tmp_path, tiny_model, capsys):
    files = write_topic_splits(tmp_path / "data", sizes=(300, 200, 50), collapsed=True)
    config = write_base_config(
        tmp_path, tiny_model, trainer={"max_epochs": 3}, data={"data_files": files, "label_column": "labels"}
    )
    cli_main(["fit", "--config", str(config)])
    lines = [line for line in capsys.readouterr().out.splitlines() if "look collapsed" in line]
    assert lines and "learning_rate" in lines[-1]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--decisions.target_precision", "1.5"], "--decisions.target_precision must be in (0, 1), got 1.5"),
        (["--decisions.target_precision", "0.9", "--decisions.target_label", "maybe"],
         "target for unknown label(s) ['maybe']: the labels are ['neg', 'pos']"),
        (["--decisions.calibrate", "true", "--trainer.limit_val_batches", "0"],
         "--decisions.calibrate is fitted on the validation split, which --trainer.limit_val_batches 0 turns off"),
    ],
    ids=["target-outside-0-1", "unknown-label", "no-validation"],
)  # fmt: skip
def test_bad_decision_flags_are_one_line_before_training(flags, message, tmp_path, tiny_model, reviews_dir, capsys):
    config = write_base_config(tmp_path, tiny_model, data={"dataset": str(reviews_dir)})
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(config), *flags])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (run_dir(tmp_path) / "checkpoints").exists()  # nothing trained
