"""Helpers shared by the tests: a small run config, run folders, metrics, and a subprocess runner."""

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import torch
import yaml
from lightning.pytorch import Callback

from modules import compat

ROOT = Path(__file__).resolve().parents[1]


def write_base_config(tmp_path: Path, model_path: Path, **overrides) -> Path:
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
                    "class_path": "modules.runs.RunCheckpoint",
                    "init_args": {"monitor": "val_loss", "mode": "min", "save_last": True},
                }
            ],
        },
        "model": {"model_name_or_path": str(model_path), "learning_rate": 3e-3},
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


class StopAtStep(Callback):
    """Request Lightning's graceful stop (what SIGTERM does) once `step` optimizer steps are done: an interruption in
    the middle of an epoch, in-process."""

    def __init__(self, step: int = 7) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            compat.request_graceful_stop(trainer)


class LossRecorder(Callback):
    """Write the global mean training loss of every step (averaged over ranks) to `path` as JSON, from rank 0."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = trainer.strategy.reduce(outputs["loss"].detach().clone(), reduce_op="mean")
        self.losses.append(float(loss))

    def on_fit_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            Path(self.path).write_text(json.dumps(self.losses))


class RankDecisions(Callback):
    """Write what each rank decided at the end of `fit` (stop epoch, best checkpoint, monitored values) to
    `<folder>/rank<N>.json`, to check that all ranks agree."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def on_fit_end(self, trainer, pl_module) -> None:
        early_stopping = trainer.early_stopping_callback
        checkpoint = trainer.checkpoint_callback
        record = {
            "current_epoch": trainer.current_epoch,
            "global_step": trainer.global_step,
            "stopped_epoch": early_stopping.stopped_epoch if early_stopping else None,
            "best_model_path": checkpoint.best_model_path if checkpoint else None,
            "best_model_score": float(checkpoint.best_model_score) if checkpoint else None,
            "val_loss": float(trainer.callback_metrics["val_loss"]),
        }
        Path(self.folder, f"rank{trainer.global_rank}.json").write_text(json.dumps(record))


class OutOfMemoryAtStep(Callback):
    """Raise the error an exhausted accelerator raises, before training step `step` (default: the second epoch's
    fourth)."""

    def __init__(self, step: int = 28) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


class NanValLossAtEpoch(Callback):
    """Make the monitored `val_loss` NaN at the end of validation in `epoch`, as a diverged run would report it."""

    def __init__(self, epoch: int = 1) -> None:
        self.epoch = epoch

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch and not trainer.sanity_checking:
            trainer.callback_metrics["val_loss"] = torch.tensor(float("nan"))


class PreemptAtStep(Callback):
    """After `step` optimizer steps, send this process SIGUSR1 (what SLURM sends every task before its time limit),
    then wait to be killed, as a preempted job does: the signal lands mid-epoch at the same step on every rank."""

    def __init__(self, step: int = 5) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGUSR1)  # Lightning's handler writes hpc_ckpt_1.ckpt and calls scontrol
            while True:
                time.sleep(1)  # until the test kills the job


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def live_processes_in_group(group: int) -> list[int]:
    """Processes (not zombies) whose process group is `group`, from /proc."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        state, process_group = fields[0], int(fields[2])
        if process_group == group and state != "Z":
            alive.append(int(stat.parent.name))
    return alive


# Multi-label topics of the generated data: each label's cue word (in the tiny BERT's vocabulary) and how often a row
# has the label. `rare` never occurs in validation: its threshold cannot be tuned (the fallback the report names).
TOPICS = {
    "art": "brilliant", "food": "charming", "music": "moving", "sport": "superb", "travel": "funny", "rare": "dull"
}  # fmt: skip
TOPIC_SHARE = {"art": 0.45, "food": 0.35, "music": 0.25, "sport": 0.15, "travel": 0.1, "rare": 0.04}


def topic_rows(n: int, seed: int, split: str = "train", collapsed: bool = False) -> list[dict]:
    """`n` JSONL rows `{"text", "labels": [names]}`: neutral filler words with each present label's cue (missing 10%
    of the time; an absent label's cue appears 5% of the time). `collapsed`: the labels ignore the text, so a model
    can only learn the most common label set."""
    import random

    from modules.data.demo import NEUTRAL

    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        labels = [name for name, share in TOPIC_SHARE.items() if rng.random() < share]
        if split == "validation":
            labels = [name for name in labels if name != "rare"]
        words = [rng.choice(NEUTRAL) for _ in range(rng.randint(3, 10))]
        cue_rows = [name for name in TOPICS if rng.random() < 0.4] if collapsed else labels
        for name in TOPICS:
            if (name in cue_rows and rng.random() < 0.9) or (name not in cue_rows and rng.random() < 0.05):
                for _ in range(2):
                    words.insert(rng.randrange(len(words) + 1), TOPICS[name])
        rows.append({"text": " ".join(words), "labels": labels})
    return rows


def write_topic_splits(folder: Path, sizes: tuple[int, int, int] = (800, 300, 300), collapsed: bool = False) -> dict:
    """train/validation/test JSONL files of `topic_rows`; returns `{split: path}`."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for seed, (split, n) in enumerate(zip(("train", "validation", "test"), sizes)):
        paths[split] = folder / f"{split}.jsonl"
        rows = topic_rows(n, seed, split, collapsed)
        paths[split].write_text("".join(json.dumps(row) + "\n" for row in rows))
    return {split: str(path) for split, path in paths.items()}


class Server:
    """`api_key`: started with $HF_LIGHTNING_API_KEY set to it, and sent by `get` and `post`."""

    def __init__(self, model: Path, *flags: str, api_key: str | None = None) -> None:
        self.port, self.api_key = free_port(), api_key
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "main.py", "serve", str(model), "--port", str(self.port), *flags]
        self.log = tempfile.NamedTemporaryFile("w+", suffix=".log")  # a pipe nobody reads would block the server
        env = {k: v for k, v in os.environ.items() if k != "HF_LIGHTNING_API_KEY"}
        self.process = subprocess.Popen(
            command, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT, text=True, start_new_session=True,
            env=env | ({"HF_LIGHTNING_API_KEY": api_key} if api_key else {}),
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(Path(self.log.name).read_text())
            try:
                if self.get("/health") == (200, "ok"):
                    return
            except OSError:
                pass
            time.sleep(0.5)
        self.stop()
        raise TimeoutError("the server did not become healthy in 120 s")

    def get(self, path: str) -> tuple[int, str]:
        request = urllib.request.Request(self.url + path, headers=self._authorization())
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()

    def post(self, body: bytes | dict, headers: dict | None = None) -> tuple[int, dict | list]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = self._authorization() if headers is None else headers
        request = urllib.request.Request(self.url + "/predict", data=data, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def stop(self, group: bool = False) -> tuple[int, list[int]]:
        """SIGTERM, as a scheduler sends it (`group`: to every process of the server, as systemd does); returns the
        exit status and the server's processes still alive after it (LitServe runs the HTTP server, its manager and
        the workers as child processes), which are then killed."""
        if self.process.poll() is None:
            if group:
                os.killpg(self.process.pid, signal.SIGTERM)
            else:
                self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pass
        deadline = time.monotonic() + 5  # a process of the group that the kernel is still tearing down
        while (left := live_processes_in_group(self.process.pid)) and time.monotonic() < deadline:
            time.sleep(0.1)
        if left:
            os.killpg(self.process.pid, signal.SIGKILL)
        return self.process.wait(), left

    def _authorization(self) -> dict:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
