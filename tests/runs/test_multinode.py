"""Multi-node, simulated on 127.0.0.1 with gloo: torchrun across 2 "nodes", and SLURM's requeue on SIGUSR1.

The torchrun command is read from docs/scaling.md, so the documented command is the one tested.
"""

import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from helpers import ROOT, free_port, run_dir, write_base_config
from modules.data.demo import write_reviews

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(300)]  # about 80 s each on 2 shared cores

HELPERS_ON_PATH = {"PYTHONPATH": str(ROOT / "tests")}


def _documented_torchrun() -> list[str]:
    """The multi-node torchrun command of docs/scaling.md, as a list of words."""
    text = (ROOT / "docs" / "scaling.md").read_text()
    match = re.search(r"^(torchrun --nnodes 2 .*?)$\n^(.*?)$", text, flags=re.MULTILINE)
    assert match, "docs/scaling.md lost its multi-node torchrun command"
    return shlex.split(match.group(1).rstrip("\\") + " " + match.group(2))


def _substitute(words: list[str], values: dict[str, str]) -> list[str]:
    return [values.get(word, word) for word in words]


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **HELPERS_ON_PATH, **extra}


def _torchrun_words(command: list[str], config: Path, extra: list[str]) -> list[str]:
    # torchrun as `python -m torch.distributed.run`: the same launcher, from this interpreter's environment.
    assert command[0] == "torchrun"
    return [sys.executable, "-m", "torch.distributed.run", *command[1:], "--trainer.accelerator", "cpu", *extra]


def test_two_nodes_follow_the_one_node_loss_trajectory(tmp_path, tiny_model_no_dropout, reviews_dir):
    # The same 2 processes, once as 2 nodes x 1 process (two torchrun launches, node_rank 0 and 1), once as
    # 1 node x 2 processes: same global batch, same seed, so the same loss at every step.
    data, model = {"dataset": str(reviews_dir), "batch_size": 16}, {"learning_rate": 1e-2}
    documented = _documented_torchrun()

    def recorder(name: str) -> list[str]:
        return ["--trainer.callbacks+=helpers.LossRecorder", "--trainer.callbacks.path", str(tmp_path / name)]

    two = write_base_config(tmp_path / "two_nodes", tiny_model_no_dropout, data=data, model=model)
    port = str(free_port())
    launches = []
    for node_rank in ("0", "1"):
        values = {"4": "1", "$NODE_RANK": node_rank, "node0": "127.0.0.1", "29500": port, "configs/bert.yaml": str(two)}
        words = _torchrun_words(_substitute(documented, values), two, recorder("two_nodes.json"))
        launches.append(
            subprocess.Popen(words, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        )
    outputs = [launch.communicate(timeout=120)[0] for launch in launches]
    assert [launch.returncode for launch in launches] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]

    one = write_base_config(tmp_path / "one_node", tiny_model_no_dropout, data=data, model=model)
    values = {
        "2": "1",
        "4": "2",
        "$NODE_RANK": "0",
        "node0": "127.0.0.1",
        "29500": str(free_port()),
        "configs/bert.yaml": str(one),
    }
    words = _torchrun_words(_substitute(documented, values), one, recorder("one_node.json"))
    single = subprocess.run(words, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=120)
    assert single.returncode == 0, single.stderr[-3000:]

    expected = json.loads((tmp_path / "one_node.json").read_text())
    losses = json.loads((tmp_path / "two_nodes.json").read_text())
    assert len(expected) == len(losses) == 26  # 400 rows / 32 per global batch = 13 steps, 2 epochs
    for step, (a, b) in enumerate(zip(losses, expected)):
        assert abs(a - b) <= 1e-5 * abs(b), (step, a, b)
    assert max(expected) - min(expected) > 1e-3  # the weights move: not a comparison of two flat lines


def _slurm_task(rank: int, config: Path, tmp_path: Path, extra: list[str]) -> subprocess.Popen:
    """One task of `srun` on a 2-node allocation with one task per node: SLURM's variables, then the documented
    `python main.py fit ... --trainer.num_nodes 2 --trainer.devices N` with N = 1 task per node."""
    slurm = {
        "SLURM_JOB_ID": "4242",
        "SLURM_JOB_NAME": "hf-lightning",
        "SLURM_NTASKS": "2",
        "SLURM_NTASKS_PER_NODE": "1",
        "SLURM_NNODES": "2",
        "SLURM_NODELIST": "127.0.0.1",
        "SLURM_PROCID": str(rank),
        "SLURM_NODEID": str(rank),
        "SLURM_LOCALID": "0",
        "MASTER_PORT": os.environ["TEST_MASTER_PORT"],
        "PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}",  # the fake scontrol
    }
    documented = _documented_srun()
    assert documented[:2] == ["srun", "python"]
    values = {"4": "1", "configs/bert.yaml": str(config)}
    words = [sys.executable, *_substitute(documented[2:], values), "--trainer.accelerator", "cpu", *extra]
    return subprocess.Popen(
        words, cwd=ROOT, env=_env(**slurm), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _documented_srun() -> list[str]:
    text = (ROOT / "docs" / "scaling.md").read_text()
    match = re.search(r"^(srun python main.py fit .*)$", text, flags=re.MULTILINE)
    assert match, "docs/scaling.md lost its srun command"
    return shlex.split(match.group(1))


def _run_job(config: Path, tmp_path: Path, extra: list[str] = ()) -> list[str]:
    os.environ["TEST_MASTER_PORT"] = str(free_port())
    tasks = [_slurm_task(rank, config, tmp_path, list(extra)) for rank in (0, 1)]
    outputs = [task.communicate(timeout=120)[0] for task in tasks]
    assert [task.returncode for task in tasks] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    return outputs


def _weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    return torch.load(checkpoint, weights_only=True, map_location="cpu")["state_dict"]


def test_slurm_sigusr1_writes_a_checkpoint_and_the_requeued_job_resumes_exactly(tmp_path, tiny_model_no_dropout):
    # 96 training rows, global batch 32 (16 per task): 3 steps per epoch, 4 epochs. SIGUSR1 after step 5 is mid-epoch.
    data_dir = write_reviews(tmp_path / "data", {"train": 96, "validation": 32, "test": 32})
    (tmp_path / "bin").mkdir()
    scontrol = tmp_path / "bin" / "scontrol"  # records the requeue Lightning asks SLURM for
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "requeued"}\n')
    scontrol.chmod(0o755)
    data, trainer = {"dataset": str(data_dir), "batch_size": 16}, {"max_epochs": 4}

    whole = write_base_config(
        tmp_path / "whole",
        tiny_model_no_dropout,
        data=data,
        trainer={**trainer, "default_root_dir": str(tmp_path / "whole")},
    )
    _run_job(whole, tmp_path)
    expected = _weights(run_dir(tmp_path / "whole") / "checkpoints" / "last.ckpt")

    job = write_base_config(
        tmp_path / "job",
        tiny_model_no_dropout,
        data=data,
        trainer={**trainer, "default_root_dir": str(tmp_path / "job")},
    )
    os.environ["TEST_MASTER_PORT"] = str(free_port())
    tasks = [_slurm_task(r, job, tmp_path, ["--trainer.callbacks+=helpers.PreemptAtStep"]) for r in (0, 1)]
    hpc = tmp_path / "job" / "hpc_ckpt_1.ckpt"  # Lightning's requeue checkpoint, in default_root_dir
    deadline = time.monotonic() + 120
    while not (tmp_path / "requeued").exists() and time.monotonic() < deadline:
        if any(task.poll() is not None for task in tasks):
            break
        time.sleep(0.2)  # polling for the requeue, not a timing assumption
    for task in tasks:
        task.kill()  # SLURM ends the job once it is requeued
        task.communicate(timeout=30)
    assert (tmp_path / "requeued").read_text().split() == ["requeue", "4242"]
    assert torch.load(hpc, weights_only=True)["global_step"] == 5

    # The requeued job: the same command, no --ckpt_path; Lightning resumes from the hpc checkpoint under SLURM.
    outputs = _run_job(job, tmp_path)
    assert "hpc_ckpt_1.ckpt" in outputs[0], outputs[0][-3000:]
    # Resumed without --ckpt_path, the requeued job logs as a new version; its last.ckpt is the finished run's.
    last = run_dir(tmp_path / "job", version=1) / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 12
    resumed = _weights(last)
    assert resumed.keys() == expected.keys()
    for name, tensor in expected.items():
        assert torch.equal(resumed[name], tensor), name
