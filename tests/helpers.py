"""Helpers shared by the tests: a small run config, run folders, metrics, and a subprocess runner."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml
from lightning.pytorch import Callback

ROOT = Path(__file__).resolve().parents[1]


def write_base_config(tmp_path: Path, model: Path, **overrides) -> Path:
    """A small run config: CPU, CSV logs under tmp_path, best-by-val_loss and last checkpoints, no progress bar."""
    config = {
        "seed_everything": 42,
        "trainer": {
            "max_epochs": 2,
            "accelerator": "cpu",
            "devices": 1,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "logger": {
                "class_path": "lightning.pytorch.loggers.CSVLogger",
                "init_args": {"save_dir": str(tmp_path / "logs"), "name": "run"},
            },
            "callbacks": [
                {
                    "class_path": "modules.checkpoints.RunCheckpoint",
                    "init_args": {"monitor": "val_loss", "mode": "min", "save_last": True},
                }
            ],
        },
        "model": {"model_name_or_path": str(model), "learning_rate": 3e-3},
        "data": {"batch_size": 16},
        "export": {"enabled": False},
    }
    for section, values in overrides.items():
        config.setdefault(section, {}).update(values)
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "base.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run_dir(tmp_path: Path, version: int = 0) -> Path:
    return tmp_path / "logs" / "run" / f"version_{version}"


def read_metrics(path: Path) -> dict:
    return json.loads(path.read_text())["metrics"]


def epoch_metrics(tmp_path: Path, name: str, version: int = 0) -> list[float]:
    """Values of one metric per logged row of the CSV logger's metrics.csv."""
    with (run_dir(tmp_path, version) / "metrics.csv").open() as f:
        return [float(row[name]) for row in csv.DictReader(f) if row.get(name)]


def run_subprocess(args: list[str], timeout: int = 240, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python main.py ARGS` in a fresh process (DDP, signals, error output), killed after `timeout` seconds."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, str(ROOT / "main.py"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        cwd=ROOT,
    )


class StopAfterFirstEpoch(Callback):
    """`--trainer.callbacks+=helpers.StopAfterFirstEpoch` ends `fit` cleanly after epoch 0: an interruption at an
    epoch boundary, with the run configured (schedule included) for all its epochs."""

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        trainer.should_stop = True
