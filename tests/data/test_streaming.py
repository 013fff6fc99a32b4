"""Streaming train data: equal batches on every rank of a ragged split, exact resume from a saved position."""

import csv
import os
import signal
import subprocess
import sys
import time
from itertools import islice
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from helpers import ROOT, run_subprocess, write_base_config
from modules.data.datamodule import HFDataModule
from modules.data.labels import LabelSpec
from modules.data.streaming import StreamingBatches, open_stream
from modules.errors import HFLightningError

DDP = ["--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu"]


def _write(path, rows: list[dict]) -> str:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["text", "label"])
        writer.writeheader()
        writer.writerows(rows)
    return str(path)


def _batches(stream, tokenizer, buffer_size: int = 6) -> StreamingBatches:
    return StreamingBatches(
        stream, tokenizer, 32, "text", None, "label", LabelSpec("single_label", ("neg", "pos")), 3, buffer_size, True, 0
    )


def _ids(batch: list[dict]) -> list[int]:
    return [row["index"] for row in batch]


def test_resume_from_a_saved_position_gives_the_same_batches(tiny_model, review_rows, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    train = _write(tmp_path / "train.csv", review_rows(30))
    first = _batches(open_stream(None, None, train, 0, 1), tokenizer)
    reference = [_ids(b) for b in islice(iter(first), 25)]  # 30 rows of 3: 10 a pass, so two epochs and a half
    positions = dict(first.positions)
    assert len({tuple(b) for b in reference[:10]}) == 10 and sorted(sum(reference[:10], [])) == list(range(30))
    for taken in (4, 10, 17):
        resumed = _batches(open_stream(None, None, train, 0, 1), tokenizer)
        resumed.start = positions[taken]
        assert [_ids(b) for b in islice(iter(resumed), 25 - taken)] == reference[taken:]


def test_ragged_shards_never_run_dry(tiny_model, review_rows, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    train = _write(tmp_path / "train.csv", review_rows(7))  # rank 0 gets 4 rows, rank 1 gets 3
    counts = [len(list(islice(iter(_batches(open_stream(None, None, train, r, 2), tokenizer)), 12))) for r in (0, 1)]
    assert counts == [12, 12]


def test_streaming_without_label_names_fails_before_loading(tmp_path):
    files = {"train": str(tmp_path / "t.csv"), "validation": str(tmp_path / "v.csv")}
    with pytest.raises(HFLightningError, match="--data.label_names"):
        HFDataModule(data_files=files, streaming=True)
    with pytest.raises(HFLightningError, match="validation"):
        HFDataModule(data_files=files["train"], streaming=True, label_names=["neg", "pos"])


@pytest.mark.slow
def test_ddp_ragged_stream_resumes_after_sigkill_to_the_same_weights(tmp_path, tiny_model, review_rows):
    # 41 rows on 2 ranks (21/20) in buffers of 8: the ranks' passes differ in batches, yet both take max_steps steps.
    # A run killed mid-way (SIGKILL, after a checkpoint of step >= 8) and resumed with --ckpt_path last must end
    # with the uninterrupted run's weights: each rank continues from its own saved stream position.
    files = {
        "train": _write(tmp_path / "train.csv", review_rows(41)),
        "validation": _write(tmp_path / "val.csv", review_rows(10, seed=1)),
    }
    data = {"data_files": files, "streaming": True, "label_names": ["neg", "pos"], "batch_size": 4, "buffer_size": 8}

    def config(name: str) -> tuple[Path, Path]:
        folder = tmp_path / name / "ckpts"
        callback = {
            "class_path": "modules.runs.RunCheckpoint",
            "init_args": {"dirpath": str(folder), "save_last": True, "last_every_n_train_steps": 1},
        }
        trainer = {"max_steps": 40, "max_epochs": -1, "callbacks": [callback], "val_check_interval": 20}
        return write_base_config(tmp_path / name, tiny_model, data=data, trainer=trainer), folder / "last.ckpt"

    whole, whole_last = config("whole")
    result = run_subprocess(["fit", "--config", str(whole), *DDP], timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    expected = torch.load(whole_last, weights_only=True)
    assert expected["global_step"] == 40

    killed, killed_last = config("killed")
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "main.py"), "fit", "--config", str(killed), *DDP],
        cwd=ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # the rank-1 process is a child: kill the whole group, as a node failure would
    )
    deadline = time.monotonic() + 240
    while process.poll() is None and time.monotonic() < deadline:
        if killed_last.exists() and _step(killed_last) >= 8:
            break
        time.sleep(0.05)  # polling for a checkpoint, not a timing assumption
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    stopped_at = _step(killed_last)
    assert 8 <= stopped_at < 40
    resumed = run_subprocess(["fit", "--config", str(killed), *DDP, "--ckpt_path", str(killed_last)], timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    final = torch.load(killed_last, weights_only=True)
    assert final["global_step"] == 40
    for key, value in expected["state_dict"].items():
        assert torch.equal(final["state_dict"][key], value), key


def _step(path: Path) -> int:
    try:
        return torch.load(path, weights_only=True)["global_step"]
    except (EOFError, RuntimeError):  # caught mid-write (the writer renames into place, but be safe)
        return -1
