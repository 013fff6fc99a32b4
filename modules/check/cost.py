"""What a run will cost, measured: a few real training steps (and evaluation batches) on a throwaway Trainer, the
longest batch the data produces among them, then step time, peak memory and checkpoint size scaled to the run.

Estimates are steady-state: each batch is timed twice in a row, the second (warm) time stands for its batches, and
the first step at a new batch shape (oneDNN primitives, allocator pools) is counted once per distinct shape the
epoch meets, not once per batch and not zero times.

The steps change the in-memory weights of this process only: no logger, no checkpoint, nothing written to disk.
"""

import io
import math
import os
import resource
import sys
import time
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Callback, LightningDataModule, LightningModule, Trainer
from torch.utils.data import DataLoader

from modules.data.sampler import LengthGroupedSampler
from modules.outputs.export import HFExport


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


def _shape(batch: list[int], lengths: np.ndarray, multiple: int | None) -> tuple[int, int]:
    """(rows, padded length) of a batch as the collator pads it: the tensor shape kernels are built and cached for."""
    length = int(lengths[batch].max())
    if multiple:
        length = -(-length // multiple) * multiple
    return len(batch), length


def steady_state_seconds(
    cold: list[float], warm: list[float], counts: list[float], fresh: list[bool], distinct_shapes: int
) -> tuple[float, float]:
    """(seconds, warm-up seconds per shape) of the batches the strata stand for, at steady state.

    Each stratum batch ran twice in a row: `cold` then `warm` seconds, standing for `counts` batches. Its warm time
    counts for each of its batches. The first step at a shape costs more (kernels built and cached per shape), once:
    the warm-up per shape is the mean of `cold - warm` over the strata whose shape was `fresh` (not run before in
    the probe), floored at 0, and it is counted once for each of the `distinct_shapes` the epoch's batches have.
    The floor is on the mean, not on each difference: flooring each would turn timing noise into warm-up.
    """
    if not len(cold) == len(warm) == len(counts) == len(fresh):
        raise ValueError("cold, warm, counts and fresh need one entry per stratum")
    extra = [c - w for c, w, new in zip(cold, warm, fresh) if new]
    warmup = max(0.0, sum(extra) / len(extra)) if extra else 0.0
    return sum(w * n for w, n in zip(warm, counts)) + warmup * distinct_shapes, warmup


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
    half as many evaluation batches, each twice in a row, and estimate the epoch at steady state
    (`steady_state_seconds`).

    Peak memory is the larger of two moments of the run:
    - the steps: the measured peak after them (`ru_maxrss` on CPUs), which includes the longest batch's step,
      validation, every timed shape run twice (per-shape caches that stay resident are in it for those shapes; the
      epoch's other shapes are not extrapolated) and the in-memory checkpoint buffer of `_checkpoint_bytes`;
    - the end of `fit` on CPUs, with `HFExport` enabled: the process's resident memory after the probe (model,
      gradients, optimizer state, data: what `on_fit_end` still holds; the steps' peak where there is no /proc)
      plus what `export_checkpoint` adds on top (`_export_bytes`). The export runs on the host, so a GPU's peak
      has no such term.
    """
    train, val = datamodule.datasets["train"], datamodule.datasets.get("validation")
    collate = datamodule.collator()
    multiple = collate.pad_to_multiple_of
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
    # Then each stratum twice in a row: cold (its shape may be new), then warm.
    train_batches = [rows(train, longest)] * 2 + [rows(train, b) for b, _ in train_strata for _ in range(2)]
    val_batches = (
        [rows(val, val_strata[-1][0])] + [rows(val, b) for b, _ in val_strata for _ in range(2)] if val_strata else []
    )
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
    batches = _limited(trainer.limit_train_batches, len(plan))
    train_shapes = {_shape(b, lengths, multiple) for b in plan[:batches]}
    val_shapes = {_shape(b, val_lengths, multiple) for b in val_plan}
    train_seconds, train_warmup = steady_state_seconds(
        timer.train[2::2],
        timer.train[3::2],
        [count * batches / len(plan) for _, count in train_strata],
        _fresh([longest] + [b for b, _ in train_strata], lengths, multiple),
        len(train_shapes),
    )
    val_seconds, val_warmup = steady_state_seconds(
        timer.val[1::2],
        timer.val[2::2],
        [count for _, count in val_strata],
        _fresh([val_strata[-1][0]] + [b for b, _ in val_strata], val_lengths, multiple) if val_strata else [],
        len(val_shapes),
    )
    warmup_seconds = train_warmup * len(train_shapes) + val_warmup * len(val_shapes)
    checkpoint_bytes = _checkpoint_bytes(model, probe.optimizers[0])
    device = probe.strategy.root_device
    steps_peak = peak_memory_bytes(device)
    export = _export_bytes(model, checkpoint_bytes) if device.type != "cuda" and _exports(trainer) else 0
    end_of_fit = (_resident_bytes() or steps_peak) + export if export else 0
    return {
        "step_seconds": round((train_seconds - train_warmup * len(train_shapes)) / batches, 4),
        "longest_step_seconds": round(timer.train[1], 4),
        "longest_batch": {"rows": len(longest), "tokens": int(lengths[longest].max())},
        "batches_per_epoch": batches,
        "distinct_shapes": len(train_shapes),
        "validation_distinct_shapes": len(val_shapes),
        "warmup_seconds_per_shape": round(train_warmup, 4),
        "validation_warmup_seconds_per_shape": round(val_warmup, 4),
        "warmup_seconds": round(warmup_seconds, 1),
        "train_seconds_per_epoch": round(train_seconds, 1),
        "validation_seconds_per_epoch": round(val_seconds, 1),
        "epoch_seconds": round(train_seconds + val_seconds, 1),
        "steps_peak_memory_bytes": steps_peak,
        "export_memory_bytes": export,
        "end_of_fit_memory_bytes": end_of_fit,
        "peak_memory_bytes": max(steps_peak, end_of_fit),
        "checkpoint_bytes": checkpoint_bytes,
    }


def _fresh(order: list[list[int]], lengths: np.ndarray, multiple: int | None) -> list[bool]:
    """For each stratum after the first (warm-up) batch of `order`: whether its shape had not run before it."""
    seen, fresh = {_shape(order[0], lengths, multiple)}, []
    for batch in order[1:]:
        shape = _shape(batch, lengths, multiple)
        fresh.append(shape not in seen)
        seen.add(shape)
    return fresh


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


def _exports(trainer: Trainer) -> bool:
    """Whether `fit` ends with a Hugging Face export: an enabled `HFExport` and a checkpoint for it to export."""
    enabled = any(isinstance(c, HFExport) and c.enabled for c in trainer.callbacks)
    return enabled and trainer.checkpoint_callback is not None


def _export_bytes(model: LightningModule, checkpoint_bytes: int) -> int:
    """What `export_checkpoint` (modules/outputs/export.py) holds at once, while the trained module and optimizer
    are still alive in `on_fit_end`:
    - the checkpoint read whole (`load_checkpoint`, no mmap): the tensors `_checkpoint_bytes` measured;
    - a second model built from it (`trained_model`: the architecture from its config, or the pretrained base with
      LoRA) in the default float dtype, whatever precision trained it: the training model's tensor count at that
      size (LoRA adapters are merged in place).
    `save_pretrained` adds no copy: safetensors (>= 0.6) writes from the tensors' own memory."""
    element = torch.empty((), dtype=torch.get_default_dtype()).element_size()
    tensors = model.model.state_dict().values()
    return checkpoint_bytes + sum(t.numel() * (element if t.is_floating_point() else t.element_size()) for t in tensors)


def _resident_bytes() -> int | None:
    """The process's resident memory now (`/proc/self/statm`, Linux); None where there is no /proc."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return None


def run_estimate(
    epoch_seconds: float,
    batches_per_epoch: int,
    accumulate: int,
    max_epochs: int | None,
    max_steps: int,
    warmup_seconds: float = 0.0,
) -> tuple[float, int]:
    """(seconds, epochs) of the whole run: `max_epochs`, or fewer when `max_steps` (optimizer steps) ends it first.
    The first epoch's `warmup_seconds` (in `epoch_seconds`) are paid once: later epochs meet the same shapes warm."""
    epochs = float(max_epochs if max_epochs not in (None, -1) else 1000)  # Lightning's default without either
    if max_steps and max_steps > 0:
        steps_per_epoch = max(1, math.ceil(batches_per_epoch / accumulate))
        epochs = min(epochs, max_steps / steps_per_epoch)
    return (epoch_seconds - warmup_seconds) * epochs + warmup_seconds * min(epochs, 1.0), math.ceil(epochs)
