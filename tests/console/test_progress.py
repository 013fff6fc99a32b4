"""Progress output: plain lines when stdout is not a terminal, Rich's bar on one, and the user's choice wins."""

import re
import sys

import pytest
from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar

from helpers import run_subprocess, write_base_config
from modules.cli.app import cli_main
from modules.console.progress import LogProgress

pytestmark = pytest.mark.e2e  # trains end to end: `make test-fast` skips it

TRAIN_LINE = re.compile(
    r"^epoch (\d)/2  step (\d+)/20  batch 10/10  train_loss (\d\.\d{4})  (\d+\.\d) samples/s  ETA (\d+:\d\d)$"
)
VAL_LINE = re.compile(r"^epoch (\d)/2  val_loss \d\.\d{4}  val_acc \d\.\d{4}  val_f1 \d\.\d{4}$")


def test_plain_progress_lines_when_stdout_is_not_a_terminal(tmp_path, tiny_model, reviews_dir):
    base = write_base_config(tmp_path, tiny_model, data={"dataset": str(reviews_dir)})
    flags = ["--trainer.enable_progress_bar", "true", "--trainer.limit_train_batches", "10"]
    flags += ["--trainer.enable_model_summary", "true"]
    flags += ["--decisions.collapse_warning", "false"]  # 10 batches teach the model nothing, which it would say
    result = run_subprocess(["fit", "--config", str(base), *flags])  # stdout is a pipe, as in CI
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    train = [m.groups() for m in map(TRAIN_LINE.match, lines) if m]
    # Each epoch's last batch, epochs counted from 1; the last line has nothing left to wait for.
    assert [(epoch, step) for epoch, step, *_ in train] == [("1", "10"), ("2", "20")]
    assert train[-1][-1] == "0:00"
    assert all(0.1 < float(loss) < 2 for _, _, loss, _, _ in train)  # a cross-entropy of 2 classes, near ln 2 = 0.69
    assert [m.group(1) for m in map(VAL_LINE.match, lines) if m] == ["1", "2"]  # sanity check not reported
    assert "Epoch 0" not in result.stdout + result.stderr  # neither TQDM's nor Rich's bar
    assert "\r" not in result.stdout and "━" not in result.stdout
    # The whole log, as a file records it: the plain summary, no redrawn bars, colour codes or warnings.
    log = result.stdout + result.stderr
    assert "Total params" in log and "FLOPs" not in log and "Flops" not in log  # nothing was counted
    assert "\r" not in log and "\x1b" not in log and "┃" not in log
    assert not [line for line in log.splitlines() if "warn" in line.lower()], log


@pytest.mark.parametrize(
    ("flags", "terminal", "expected"),
    [
        ([], False, LogProgress),
        ([], True, RichProgressBar),
        (["--trainer.callbacks+=TQDMProgressBar"], False, TQDMProgressBar),
        (["--trainer.enable_progress_bar", "false"], True, type(None)),
    ],
    ids=["log-default", "terminal-default", "user-callback", "disabled"],
)
def test_progress_bar_choice(flags, terminal, expected, tmp_path, tiny_model, reviews_dir, monkeypatch):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: terminal)
    base = write_base_config(tmp_path, tiny_model, data={"dataset": str(reviews_dir)})
    args = ["--config", str(base), "--trainer.enable_progress_bar", "true", "--trainer.limit_val_batches", "1"]
    cli = cli_main(["validate", *args, *flags])
    assert type(cli.trainer.progress_bar_callback) is expected


def test_plain_progress_lines_in_test_and_predict(tmp_path, tiny_model, reviews_dir, capsys):
    base = write_base_config(tmp_path, tiny_model, data={"dataset": str(reviews_dir)}, trainer={"max_epochs": 1})
    cli_main(["fit", "--config", str(base), "--trainer.limit_train_batches", "2"])
    flags = ["--trainer.enable_progress_bar", "true", "--trainer.callbacks+=modules.console.progress.LogProgress"]
    flags += ["--trainer.callbacks.refresh_rate", "2", "--data.eval_batch_size", "25", "--ckpt_path", "last"]
    capsys.readouterr()
    for stage in ("test", "predict"):  # 100 test rows in 4 batches: a line every 2 batches
        cli_main([stage, "--config", str(base), *flags])
        lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith(f"{stage} batch")]
        assert lines == [f"{stage} batch 2/4", f"{stage} batch 4/4"]


@pytest.mark.parametrize(("flags", "interval"), [([], 5), (["--trainer.log_every_n_steps", "50"], 50)])
def test_short_epoch_logs_every_batch_unless_the_interval_is_set(flags, interval, tmp_path, tiny_model, reviews_dir):
    import warnings

    base = write_base_config(tmp_path, tiny_model, data={"dataset": str(reviews_dir)})
    args = ["fit", "--config", str(base), "--trainer.limit_train_batches", "5", "--trainer.max_epochs", "1", *flags]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cli = cli_main(args)
    assert cli.trainer.log_every_n_steps == interval
    said = [w for w in caught if "logging interval" in str(w.message)]
    assert len(said) == (1 if flags else 0)  # an interval the user set is theirs: Lightning's note then stands
