"""Resuming: a run stopped at an epoch boundary and resumed with `--ckpt_path last` ends where an uninterrupted run
does (same weights, optimizer and scheduler state), because the checkpoint carries the RNG state and the sampler
reshuffles from `seed + epoch`."""

import torch

from helpers import run_dir, write_base_config
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
