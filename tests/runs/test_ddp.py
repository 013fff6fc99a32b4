"""DDP on 2 CPU processes (gloo): the same numbers as one process, no hang on uneven data, one decision for all ranks.

Each run is a subprocess under a timeout, so a hang fails the test instead of stalling the suite.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from helpers import ROOT, live_processes_in_group, read_metrics, run_dir, run_subprocess, write_base_config
from modules.cli.app import cli_main
from modules.data.demo import write_reviews

pytestmark = pytest.mark.e2e  # trains end to end: `make test-fast` skips it

DDP = ["--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu"]
HELPERS_ON_PATH = {"PYTHONPATH": str(ROOT / "tests")}


@pytest.mark.slow
def test_two_processes_follow_the_single_process_loss_trajectory(tmp_path, tiny_model_no_dropout, reviews_dir):
    # Global batch 32 both ways: one process with batch 32, two with 16. The sampler hands each rank half of every
    # global batch, and DDP averages the gradients, so every step's loss matches; dropout is off because each
    # process draws its own masks.
    data, trainer = {"dataset": str(reviews_dir)}, {"max_epochs": 4}
    model = {"learning_rate": 1e-2}
    single = write_base_config(
        tmp_path / "single", tiny_model_no_dropout, data={**data, "batch_size": 32}, trainer=trainer, model=model
    )
    cli_main(
        ["fit", "--config", str(single), "--trainer.callbacks+=helpers.LossRecorder"]
        + ["--trainer.callbacks.path", str(tmp_path / "single.json")]
    )

    ddp = write_base_config(
        tmp_path / "ddp", tiny_model_no_dropout, data={**data, "batch_size": 16}, trainer=trainer, model=model
    )
    recorder = ["--trainer.callbacks+=helpers.LossRecorder", "--trainer.callbacks.path", str(tmp_path / "ddp.json")]
    result = run_subprocess(["fit", "--config", str(ddp), *DDP, *recorder], timeout=300, env=HELPERS_ON_PATH)
    assert result.returncode == 0, result.stderr[-3000:]

    expected = json.loads((tmp_path / "single.json").read_text())
    losses = json.loads((tmp_path / "ddp.json").read_text())
    assert len(expected) == len(losses) == 52  # 400 rows / 32 = 13 steps per epoch, 4 epochs
    for step, (a, b) in enumerate(zip(losses, expected)):
        assert abs(a - b) <= 1e-5 * abs(b), (step, a, b)
    assert max(expected[-13:]) < 0.5 < min(expected[:3])  # it learned: not a comparison of two flat lines


@pytest.mark.slow
def test_uneven_data_early_stopping_and_checkpoints_agree_on_every_rank(tmp_path, tiny_model):
    # 41/13/11 rows with batch 4 on 2 ranks: no split divides evenly. EarlyStopping with an impossible min_delta
    # stops after epoch 1 of 5; both ranks must take that decision together (or one would wait for the other forever)
    # and agree on the best checkpoint.
    data_dir = write_reviews(tmp_path / "uneven", {"train": 41, "validation": 13, "test": 11})
    callbacks = [
        {
            "class_path": "modules.runs.RunCheckpoint",
            "init_args": {"monitor": "val_loss", "mode": "min", "save_last": True},
        },
        {
            "class_path": "lightning.pytorch.callbacks.EarlyStopping",
            "init_args": {"monitor": "val_loss", "mode": "min", "patience": 1, "min_delta": 10.0},
        },
        {"class_path": "helpers.RankDecisions", "init_args": {"folder": str(tmp_path)}},
    ]
    trainer = {"max_epochs": 5, "callbacks": callbacks}
    base = write_base_config(tmp_path, tiny_model, data={"dataset": str(data_dir), "batch_size": 4}, trainer=trainer)
    fit = run_subprocess(["fit", "--config", str(base), *DDP], timeout=300, env=HELPERS_ON_PATH)
    assert fit.returncode == 0, fit.stderr[-3000:]

    decisions = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert decisions[0] == decisions[1]
    assert decisions[0]["stopped_epoch"] == 1 and decisions[0]["global_step"] == 2 * 6  # ceil(41 / 8) steps/epoch
    # One run: one logger version, one config, one checkpoint set.
    assert [p.name for p in (tmp_path / "logs" / "run").iterdir()] == ["version_0"]
    assert sorted(p.name for p in (run_dir(tmp_path) / "checkpoints").iterdir()) == ["epoch=0-step=6.ckpt", "last.ckpt"]

    # Every test row counted once under DDP: the same metrics as one process on the same checkpoint.
    checkpoint = str(run_dir(tmp_path) / "checkpoints" / "last.ckpt")
    ddp_test = run_subprocess(["test", "--config", str(base), *DDP, "--ckpt_path", checkpoint], env=HELPERS_ON_PATH)
    assert ddp_test.returncode == 0, ddp_test.stderr[-3000:]
    ddp_metrics = read_metrics(run_dir(tmp_path) / "test_metrics.json")
    cli_main(["test", "--config", str(base), "--ckpt_path", checkpoint])
    single_metrics = read_metrics(run_dir(tmp_path) / "test_metrics.json")
    assert ddp_metrics["test_loss"] == pytest.approx(single_metrics["test_loss"], rel=1e-5)
    assert ddp_metrics["test_acc"] == single_metrics["test_acc"]


@pytest.mark.slow
def test_sigterm_under_ddp_stops_every_rank_with_one_checkpoint(tmp_path, tiny_model, reviews_dir):
    base = write_base_config(tmp_path, tiny_model, data={"dataset": str(reviews_dir)}, trainer={"max_epochs": 50})
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "main.py"), "fit", "--config", str(base), *DDP],
        env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"},
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: the ranks it launches are found through it
    )
    last = run_dir(tmp_path) / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 240
    while not last.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)  # polling for the first checkpoint, not a timing assumption
    assert last.exists(), "no checkpoint before the deadline"
    assert len(live_processes_in_group(process.pid)) >= 2  # rank 0 and the rank it launched

    process.send_signal(signal.SIGTERM)  # to rank 0 only, as a scheduler signalling the launcher would
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 143, output[-3000:]
    deadline = time.monotonic() + 60
    while live_processes_in_group(process.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert live_processes_in_group(process.pid) == [], "orphan ranks left behind"
    reported = [line for line in output.splitlines() if line.startswith("Stopped at step")]
    assert len(reported) == 1, output[-3000:]  # one checkpoint, written by rank 0
    assert torch.load(last, weights_only=True)["global_step"] == int(reported[0].split()[3].rstrip(":"))
