"""Multi-node, simulated on 127.0.0.1 with gloo: torchrun across 2 "nodes", and SLURM's requeue on SIGUSR1.

The torchrun command is read from docs/scaling.md, so the documented command is the one tested.
"""

import json
import os
import re
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import ROOT, write_base_config

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

HELPERS_ON_PATH = {"PYTHONPATH": str(ROOT / "tests")}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
    port = str(_free_port())
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
        "29500": str(_free_port()),
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
