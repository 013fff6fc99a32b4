"""Resuming and checkpoint integrity: a run stopped at an epoch boundary or mid-epoch and resumed with
`--ckpt_path last` ends where an uninterrupted run does (same weights, optimizer and scheduler state), because the
checkpoint carries the RNG state and the training loader's position; signals stop gracefully with a checkpoint of the
step reached; no kill leaves a broken `.ckpt` behind."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException

from helpers import ROOT, epoch_metrics, run_dir, write_base_config
from modules.cli.app import cli_main

pytestmark = pytest.mark.e2e  # trains end to end: `make test-fast` skips it


def _last(tmp_path, version: int) -> dict:
    return torch.load(run_dir(tmp_path, version) / "checkpoints" / "last.ckpt", weights_only=True)


def _assert_same_training_state(resumed: dict, expected: dict) -> None:
    assert resumed["global_step"] == expected["global_step"]
    for key, value in expected["state_dict"].items():
        assert torch.equal(resumed["state_dict"][key], value), key
    assert resumed["lr_schedulers"] == expected["lr_schedulers"]
    for a, b in zip(
        resumed["optimizer_states"][0]["state"].values(), expected["optimizer_states"][0]["state"].values()
    ):
        assert torch.equal(a["exp_avg"], b["exp_avg"])


def test_resume_at_epoch_boundary_matches_uninterrupted(tmp_path, tiny_model, reviews_dir):
    data = {"dataset": str(reviews_dir)}
    whole = write_base_config(tmp_path / "whole", tiny_model, data=data, trainer={"max_epochs": 2})
    cli_main(["fit", "--config", str(whole)])

    split = write_base_config(tmp_path / "split", tiny_model, data=data, trainer={"max_epochs": 2})
    cli_main(["fit", "--config", str(split), "--trainer.callbacks+=helpers.StopAfterFirstEpoch"])
    assert _last(tmp_path / "split", 0)["epoch"] == 0  # stopped after the first epoch
    cli_main(["fit", "--config", str(split), "--ckpt_path", "last"])
    resumed, expected = _last(tmp_path / "split", 1), _last(tmp_path / "whole", 0)
    _assert_same_training_state(resumed, expected)
    # The top-k choice spans the whole run, although the resumed part logs into a new version folder.
    assert _checkpoint_state(resumed)["best_model_score"] == _checkpoint_state(expected)["best_model_score"]
    assert (
        Path(_checkpoint_state(resumed)["best_model_path"]).name
        == Path(_checkpoint_state(expected)["best_model_path"]).name
    )


def _checkpoint_state(checkpoint: dict) -> dict:
    return next(v for k, v in checkpoint["callbacks"].items() if k.startswith("RunCheckpoint"))


def test_resume_mid_epoch_matches_uninterrupted(tmp_path, tiny_model, reviews_dir):
    # 400 rows / batch 16 = 25 steps per epoch: a stop after step 7 is inside epoch 0. Dropout is on, so equal
    # weights need the same batches in the same order and the same RNG state at every resumed step.
    data = {"dataset": str(reviews_dir)}
    whole = write_base_config(tmp_path / "whole", tiny_model, data=data, trainer={"max_epochs": 2})
    cli_main(["fit", "--config", str(whole)])

    split = write_base_config(tmp_path / "split", tiny_model, data=data, trainer={"max_epochs": 2})
    with pytest.raises(SIGTERMException):
        cli_main(["fit", "--config", str(split), "--trainer.callbacks+=helpers.StopAtStep"])
    stopped = _last(tmp_path / "split", 0)
    assert (stopped["global_step"], stopped["epoch"]) == (7, 0)
    assert stopped["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"epoch": 0, "batches_done": 7}]
    cli_main(["fit", "--config", str(split), "--ckpt_path", "last"])
    _assert_same_training_state(_last(tmp_path / "split", 1), _last(tmp_path / "whole", 0))
    assert epoch_metrics(tmp_path / "split", "val_loss", 1) == epoch_metrics(tmp_path / "whole", "val_loss")


def test_resume_with_another_batch_size_warns(tmp_path, tiny_model, reviews_dir):
    base = write_base_config(tmp_path, tiny_model, data={"dataset": str(reviews_dir)}, trainer={"max_epochs": 1})
    cli_main(["fit", "--config", str(base)])
    with pytest.warns(UserWarning, match=r"global batch of 8 rows .* trained with 16"):
        cli_main(
            ["fit", "--config", str(base), "--ckpt_path", "last", "--trainer.max_epochs", "2"]
            + ["--data.batch_size", "8"]
        )


def test_checkpoints_load_weights_only_with_primitive_hparams(tmp_path, tiny_model, reviews_dir):
    # LightningCLI itself loads `--ckpt_path` with weights_only=True: anything else in a checkpoint breaks `test`.
    base = write_base_config(tmp_path, tiny_model, data={"dataset": str(reviews_dir)}, trainer={"max_epochs": 1})
    cli_main(["fit", "--config", str(base)])
    paths = sorted((run_dir(tmp_path) / "checkpoints").glob("*.ckpt"))
    assert len(paths) == 2
    for path in paths:
        checkpoint = torch.load(path, weights_only=True)
        _assert_primitive(checkpoint["hyper_parameters"])
        _assert_primitive(checkpoint["datamodule_hyper_parameters"])


def _assert_primitive(value: object) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            assert isinstance(key, str)
            _assert_primitive(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _assert_primitive(item)
    else:
        assert value is None or isinstance(value, (str, int, float, bool)), type(value)


def test_failed_checkpoint_write_leaves_the_previous_one_whole(tmp_path, tiny_model, reviews_dir, monkeypatch):
    # A writer that dies halfway (what SIGKILL or a full disk does to it): the file at the final name must be the
    # previous, complete checkpoint, never the torn one.
    base = write_base_config(tmp_path, tiny_model, data={"dataset": str(reviews_dir)}, trainer={"max_epochs": 1})
    cli_main(["fit", "--config", str(base), "--trainer.callbacks.dirpath", str(tmp_path / "ckpts")])
    last = tmp_path / "ckpts" / "last.ckpt"
    before = torch.load(last, weights_only=True)["global_step"]

    def torn_write(checkpoint: dict, filepath) -> None:
        Path(filepath).write_bytes(b"PK\x03\x04 half a zip")
        raise OSError("No space left on device")

    monkeypatch.setattr("lightning.fabric.plugins.io.torch_io._atomic_save", torn_write)
    with pytest.raises(OSError, match="No space"):
        cli_main(
            ["fit", "--config", str(base), "--trainer.callbacks.dirpath", str(tmp_path / "ckpts")]
            + ["--ckpt_path", str(last), "--trainer.max_epochs", "2"]
        )
    assert torch.load(last, weights_only=True)["global_step"] == before
    for path in (tmp_path / "ckpts").glob("*.ckpt"):
        torch.load(path, weights_only=True)


def _start_fit(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "main.py"), "fit", *args],
        env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"},
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_for(path: Path, process: subprocess.Popen, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)  # polling for the first checkpoint, not a timing assumption
    assert path.exists(), "no checkpoint before the deadline"


@pytest.mark.slow
@pytest.mark.parametrize(("name", "status"), [("SIGTERM", 143), ("SIGINT", 130)])
def test_signal_stops_with_a_checkpoint_of_the_step_and_resume_completes(
    tmp_path, tiny_model, reviews_dir, name, status
):
    base = write_base_config(tmp_path, tiny_model, data={"dataset": str(reviews_dir)}, trainer={"max_epochs": 50})
    process = _start_fit(["--config", str(base)])
    last = run_dir(tmp_path) / "checkpoints" / "last.ckpt"
    _wait_for(last, process)
    process.send_signal(getattr(signal, name))
    output, _ = process.communicate(timeout=60)
    assert process.returncode == status, output[-3000:]
    reported = [line for line in output.splitlines() if line.startswith("Stopped at step")]
    assert len(reported) == 1, output[-3000:]
    step = int(reported[0].split()[3].rstrip(":"))
    stopped = torch.load(last, weights_only=True)
    assert stopped["global_step"] == step  # the step reached, not the last epoch end
    assert epoch_metrics(tmp_path, "val_loss")  # the logger was flushed
    final_epoch = stopped["epoch"] + 1
    cli_main(["fit", "--config", str(base), "--ckpt_path", "last", "--trainer.max_epochs", str(final_epoch + 1)])
    assert _last(tmp_path, 1)["epoch"] == final_epoch and _last(tmp_path, 1)["global_step"] == 25 * (final_epoch + 1)


@pytest.mark.slow
def test_sigkill_during_frequent_checkpointing_leaves_every_checkpoint_loadable(tmp_path, tiny_model, reviews_dir):
    # last.ckpt rewritten every step, the best by val_loss at epoch ends, and a SIGKILL at a random moment, three
    # times over; then resume to the end.
    folder = tmp_path / "ckpts"
    init_args = {"dirpath": str(folder), "monitor": "val_loss", "save_last": True, "last_every_n_train_steps": 1}
    callback = {"class_path": "modules.runs.RunCheckpoint", "init_args": init_args}
    trainer = {"max_epochs": 4, "callbacks": [callback]}
    base = write_base_config(tmp_path, tiny_model, data={"dataset": str(reviews_dir)}, trainer=trainer)
    pause = random.Random(0)
    for attempt in range(3):
        resume = ["--ckpt_path", str(folder / "last.ckpt")] if attempt else []
        started_from = torch.load(folder / "last.ckpt", weights_only=True)["global_step"] if attempt else 0
        process = _start_fit(["--config", str(base), *resume])
        _wait_for(folder / "last.ckpt", process)
        time.sleep(pause.uniform(0.5, 3.0))  # a random kill point; its exact value does not matter
        process.kill()
        process.communicate(timeout=30)
        for path in folder.glob("*.ckpt"):
            torch.load(path, weights_only=True)  # raises on a torn file
        assert torch.load(folder / "last.ckpt", weights_only=True)["global_step"] >= started_from
    final = _start_fit(["--config", str(base), "--ckpt_path", str(folder / "last.ckpt")])
    output, _ = final.communicate(timeout=300)
    assert final.returncode == 0, output[-3000:]
    assert torch.load(folder / "last.ckpt", weights_only=True)["global_step"] == 100
