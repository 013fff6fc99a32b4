"""Resuming: a run stopped at an epoch boundary and resumed with `--ckpt_path last` ends where an uninterrupted run
does (same weights, optimizer and scheduler state), because the checkpoint carries the RNG state and the sampler
reshuffles from `seed + epoch`."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from helpers import ROOT, run_dir, write_base_config
from main import cli_main


def _last(tmp_path, version: int) -> dict:
    return torch.load(run_dir(tmp_path, version) / "checkpoints" / "last.ckpt", weights_only=True)


def test_resume_at_epoch_boundary_matches_uninterrupted(tmp_path, tiny_model, reviews_dir):
    data = {"dataset": str(reviews_dir)}
    whole = write_base_config(tmp_path / "whole", tiny_model, data=data, trainer={"max_epochs": 2})
    cli_main(["fit", "--config", str(whole)])

    split = write_base_config(tmp_path / "split", tiny_model, data=data, trainer={"max_epochs": 2})
    cli_main(["fit", "--config", str(split), "--trainer.callbacks+=helpers.StopAfterFirstEpoch"])
    assert _last(tmp_path / "split", 0)["epoch"] == 0  # stopped after the first epoch
    cli_main(["fit", "--config", str(split), "--ckpt_path", "last"])

    expected, resumed = _last(tmp_path / "whole", 0), _last(tmp_path / "split", 1)
    assert resumed["global_step"] == expected["global_step"]
    for key, value in expected["state_dict"].items():
        assert torch.equal(resumed["state_dict"][key], value), key
    assert resumed["lr_schedulers"] == expected["lr_schedulers"]
    for a, b in zip(
        resumed["optimizer_states"][0]["state"].values(), expected["optimizer_states"][0]["state"].values()
    ):
        assert torch.equal(a["exp_avg"], b["exp_avg"])


@pytest.mark.slow
def test_sigterm_stops_with_status_143_and_resume_completes(tmp_path, tiny_model, reviews_dir):
    base = write_base_config(tmp_path, tiny_model, data={"dataset": str(reviews_dir)}, trainer={"max_epochs": 50})
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "main.py"), "fit", "--config", str(base)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    last = run_dir(tmp_path) / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 180
    while not last.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)  # polling for the first checkpoint, not a timing assumption
    assert last.exists(), "no checkpoint before the deadline"
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 143, stderr[-2000:]
    stopped_at = torch.load(last, weights_only=True)["epoch"]
    assert stopped_at < 49
    cli_main(["fit", "--config", str(base), "--ckpt_path", "last", "--trainer.max_epochs", str(stopped_at + 2)])
    assert _last(tmp_path, 1)["epoch"] == stopped_at + 1
