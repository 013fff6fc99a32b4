"""What a run will cost, measured: a few real training steps (and evaluation batches) on a throwaway Trainer, the
longest batch the data produces among them, then step time, peak memory and checkpoint size scaled to the run.

The steps change the in-memory weights of this process only: no logger, no checkpoint, nothing written to disk.
"""

import io
import math
import resource
import sys
import time
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Callback, LightningDataModule, LightningModule, Trainer
from torch.utils.data import DataLoader

from modules.data.sampler import LengthGroupedSampler


class _BatchTimer(Callback):
    """Seconds per training batch (forward, backward and, when due, the optimizer step) and per evaluation batch."""

    def __init__(self) -> None:
        self.train: list[float] = []
        self.val: list[float] = []
        self._start = 0.0

    def _begin(self, *args: Any) -> None:
        _synchronize()
        self._start = time.perf_counter()

    def _end(self, into: list[float]) -> None:
        _synchronize()
        into.append(time.perf_counter() - self._start)

    on_train_batch_start = _begin
    on_validation_batch_start = _begin

    def on_train_batch_end(self, *args: Any) -> None:
        self._end(self.train)

    def on_validation_batch_end(self, *args: Any) -> None:
        self._end(self.val)


def _synchronize() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


class _Batches(LightningDataModule):
    """Fixed batches, with the real data module's `contract` (what the model reads in `setup`)."""

    def __init__(self, source: LightningDataModule, train: list[dict], val: list[dict]) -> None:
        super().__init__()
        self.contract = source.contract
        self._train, self._val = train, val

    # A plain list would be read as one loader per element; batch_size=None serves each batch as it is.
    def train_dataloader(self) -> DataLoader:
        return DataLoader(self._train, batch_size=None)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self._val, batch_size=None)


def batch_plan(lengths: list[int], batch_size: int, shuffle: bool, group_by_length: bool, seed: int) -> list[list[int]]:
    """The row indices of each batch of one epoch, as the data module's sampler orders them (one process)."""
    sampler = LengthGroupedSampler(
        lengths, batch_size, num_replicas=1, rank=0, shuffle=shuffle, group_by_length=group_by_length, seed=seed
    )
    order = list(sampler)
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def _tokens(batch: list[int], lengths: np.ndarray) -> int:
    """Padded tokens of a batch: rows x its longest row (what the model computes on)."""
    return len(batch) * int(lengths[batch].max())


def _strata(plan: list[list[int]], lengths: np.ndarray, count: int) -> list[tuple[list[int], int]]:
    """`count` batches standing for the epoch: the plan sorted by padded tokens, cut into `count` equal runs, the
    middle batch of each with the number of batches it stands for. Each is timed as it is, with no time-vs-size
    model: on CPUs the allocator makes a step's time grow faster than its token count."""
    by_size = sorted(plan, key=lambda b: _tokens(b, lengths))
    edges = np.linspace(0, len(by_size), min(count, len(by_size)) + 1).round().astype(int)
    return [(by_size[(lo + hi) // 2], int(hi - lo)) for lo, hi in zip(edges[:-1], edges[1:]) if hi > lo]


def peak_memory_bytes(device: torch.device) -> int:
    """The process's peak so far: resident memory on CPUs (what the OS kills for), allocated memory on GPUs."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux


def measure(trainer: Trainer, model: LightningModule, datamodule, steps: int = 8) -> dict:
    """Time `steps` training batches standing for the epoch's sizes (after two warm-up steps on the longest) and
    half as many evaluation batches, and weigh each by the batches it stands for. Peak memory includes the longest
    batch's step, so it is the whole run's peak (model, data, optimizer state, activations)."""
    train, val = datamodule.datasets["train"], datamodule.datasets.get("validation")
    collate = datamodule.collator()
    lengths = np.asarray(train["length"][:])
    seed, grouped = datamodule.seed, datamodule.group_by_length
    plan = batch_plan(lengths.tolist(), datamodule.batch_size, True, grouped, seed)
    train_strata = _strata(plan, lengths, steps)
    longest = max(plan, key=lambda b: _tokens(b, lengths))
    val_lengths = np.asarray(val["length"][:]) if val is not None and len(val) else None
    val_plan = (
        batch_plan(val_lengths.tolist(), datamodule.eval_batch_size, False, grouped, seed)
        if val_lengths is not None
        else []
    )
    val_strata = _strata(val_plan, val_lengths, max(2, steps // 2)) if val_plan else []

    def rows(dataset, batch: list[int]) -> dict:
        columns = [c for c in dataset.column_names if c != "length"]
        return collate([dataset.select_columns(columns)[i] for i in batch])

    # The longest batch first, twice: it allocates the optimizer state, warms the kernels and sets the memory peak.
    train_batches = [rows(train, longest)] * 2 + [rows(train, b) for b, _ in train_strata]
    val_batches = [rows(val, val_strata[-1][0])] + [rows(val, b) for b, _ in val_strata] if val_strata else []
    timer = _BatchTimer()
    probe = Trainer(
        accelerator=trainer.strategy.root_device.type,  # a name: for an Accelerator object, AMP autocasts "cuda"
        devices=1,
        precision=trainer.precision,
        max_steps=len(train_batches),
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=len(val_batches) or 0,
        gradient_clip_val=trainer.gradient_clip_val,
        callbacks=[timer],
        default_root_dir=None,
    )
    probe.fit(model, datamodule=_Batches(datamodule, train_batches, val_batches))
    train_seconds = sum(seconds * count for seconds, (_, count) in zip(timer.train[2:], train_strata))
    val_seconds = sum(seconds * count for seconds, (_, count) in zip(timer.val[1:], val_strata))
    batches = _limited(trainer.limit_train_batches, len(plan))
    scale = batches / len(plan)
    epoch_seconds = train_seconds * scale + val_seconds
    checkpoint_bytes = _checkpoint_bytes(model, probe.optimizers[0])
    return {
        "step_seconds": round(train_seconds / len(plan), 4),
        "longest_step_seconds": round(timer.train[1], 4),
        "longest_batch": {"rows": len(longest), "tokens": int(lengths[longest].max())},
        "batches_per_epoch": batches,
        "train_seconds_per_epoch": round(train_seconds * scale, 1),
        "validation_seconds_per_epoch": round(val_seconds, 1),
        "epoch_seconds": round(epoch_seconds, 1),
        "peak_memory_bytes": peak_memory_bytes(probe.strategy.root_device),
        "checkpoint_bytes": checkpoint_bytes,
    }


def _limited(limit: int | float | None, batches: int) -> int:
    """Batches an epoch takes under `--trainer.limit_train_batches` (a count or a fraction)."""
    if limit is None:
        return batches
    return min(batches, int(limit) if isinstance(limit, int) else max(1, int(limit * batches)))


def _checkpoint_bytes(model: LightningModule, optimizer: torch.optim.Optimizer) -> int:
    """The size of a checkpoint's tensors (trained weights, all of them without LoRA, and the optimizer state),
    serialized in memory as Lightning does before writing (`_atomic_save` fills a BytesIO): that buffer is part of
    the run's peak memory, so it is measured here too, then dropped."""
    trained = set(model.trained_keys()) if getattr(model.hparams, "lora_r", 0) else None
    weights = {k: t for k, t in model.state_dict().items() if trained is None or k in trained}
    buffer = io.BytesIO()
    torch.save({"state_dict": weights, "optimizer_states": [optimizer.state_dict()]}, buffer)
    return buffer.tell()


def run_estimate(
    epoch_seconds: float, batches_per_epoch: int, accumulate: int, max_epochs: int | None, max_steps: int
) -> tuple[float, int]:
    """(seconds, epochs) of the whole run: `max_epochs`, or fewer when `max_steps` (optimizer steps) ends it first."""
    epochs = float(max_epochs if max_epochs not in (None, -1) else 1000)  # Lightning's default without either
    if max_steps and max_steps > 0:
        steps_per_epoch = max(1, math.ceil(batches_per_epoch / accumulate))
        epochs = min(epochs, max_steps / steps_per_epoch)
    return epoch_seconds * epochs, math.ceil(epochs)
