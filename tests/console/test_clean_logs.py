"""Every command, run as a user runs it with its output going to a log file: a clean run's log holds no traceback, no
warning line, no escape code and no carriage return (a redrawn progress bar), so every line left in it means something.

One tiny `fit` (1 epoch, 2 batches) runs once; the later commands use its checkpoint. serve is covered in tests/serve.
"""

import re
from pathlib import Path

import pytest
import yaml

from helpers import run_dir, run_subprocess, write_base_config

pytestmark = pytest.mark.e2e  # a tiny fit and one subprocess per command

# A Python warning as the warnings module prints it (`...: UserWarning: ...`, with its `warnings.warn(` source line),
# or as Lightning prints the ones raised in its files (`.../amp.py:116: message`, no category).
NOISE = re.compile(r"Traceback|\w+Warning\b|warnings\.warn|^\S+\.py:\d+: |\x1b|\r", re.MULTILINE)


def _noise(result) -> list[str]:
    """The log's noisy lines (split at newlines only: a carriage return inside a line is noise itself)."""
    return [line for line in (result.stdout + result.stderr).split("\n") if NOISE.search(line)]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory, tiny_model, reviews_dir) -> tuple[Path, Path, object]:
    """The run folder, its config and the finished `fit`: progress bar and model summary on, as by default."""
    tmp_path = tmp_path_factory.mktemp("clean_logs")
    trainer = {"max_epochs": 1, "enable_progress_bar": True, "enable_model_summary": True}
    trainer |= {f"limit_{stage}_batches": 2 for stage in ("train", "val", "test")}  # predict writes every row
    base = write_base_config(tmp_path, tiny_model, data={"dataset": str(reviews_dir)}, trainer=trainer)
    return tmp_path, base, run_subprocess(["fit", "--config", str(base)])


def _args(command: str, tmp_path: Path, base: Path) -> list[str]:
    if command in ("validate", "test"):
        return [command, "--config", str(base), "--ckpt_path", "last"]
    if command == "predict":  # in windows: their aggregation once printed torch's "index_reduce() is in beta"
        windows = ["--data.long_text", "chunk", "--data.max_length", "8"]
        return ["predict", "--config", str(base), "--ckpt_path", "last", *windows]
    if command == "check":  # bf16 on a CPU: once printed torch's "CUDA is not available ... Disabling autocast"
        return ["check", "--config", str(base), "--trainer.precision", "bf16-mixed"]
    if command == "export":
        return ["export", str(run_dir(tmp_path) / "checkpoints" / "last.ckpt"), str(tmp_path / "export"), "--onnx"]
    if command == "demo":
        return ["demo", str(tmp_path / "demo")]
    search = tmp_path / "search.yaml"
    search.write_text(yaml.safe_dump({"model.learning_rate": {"type": "float", "low": 1e-4, "high": 1e-3}}))
    return [
        *("tune", "--config", str(base), "--search", str(search), "--n_trials", "1", "--study_name", "quiet"),
        *("--output_dir", str(tmp_path / "tune")),  # the baseline trial is the one trial
    ]


def test_noise_pattern_catches_each_kind_of_noise():
    noisy = [
        "Traceback (most recent call last):",
        "/x/site-packages/torch/nn/modules/module.py:12: UserWarning: something",
        "  warnings.warn(",
        "/x/lightning/pytorch/plugins/precision/amp.py:116: CUDA is not available or torch_xla is imported.",
        "\x1b[1mBertForSequenceClassification LOAD REPORT\x1b[0m",
        "Writing model shards:   0%|          | 0/1\rWriting model shards: 100%|##########| 1/1",
    ]
    clean = ["epoch 1/1  val_loss 0.6931  val_acc 0.5000", "warning: --trainer.precision bf16-mixed: this CPU ..."]
    result = type("Result", (), {"stdout": "\n".join(noisy + clean), "stderr": ""})
    assert _noise(result) == noisy


def test_fit_log_is_clean(fitted):
    _, _, result = fitted
    assert result.returncode == 0, result.stderr[-3000:]
    assert "train_loss" in result.stdout  # the log does hold the run's own lines
    assert _noise(result) == [], result.stdout + result.stderr


@pytest.mark.parametrize("command", ["validate", "test", "predict", "check", "export", "demo", "tune"])
def test_command_log_is_clean(command, fitted):
    tmp_path, base, fit = fitted
    assert fit.returncode == 0, fit.stderr[-3000:]
    result = run_subprocess(_args(command, tmp_path, base))
    assert result.returncode == 0, result.stderr[-3000:]
    assert _noise(result) == [], result.stdout + result.stderr
    if command == "tune":  # `--n_trials 1` with the queued baseline trial runs that trial, not none
        trials = (tmp_path / "tune" / "trials.csv").read_text().splitlines()
        assert len(trials) == 2 and "COMPLETE" in trials[1], trials
