"""Progress output: Rich's live bar on an interactive terminal, plain periodic lines in logs (CI, files, `| tee`)."""

import math
import sys
import time
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelSummary, ProgressBar, RichProgressBar


def default_progress_bar(interactive: bool | None = None) -> ProgressBar:
    """`RichProgressBar` when stdout is a terminal, else `LogProgress`: a live bar redraws in place, which a log file
    records as one line per refresh, or as one endless line of carriage returns."""
    interactive = sys.stdout.isatty() if interactive is None else interactive
    return RichProgressBar() if interactive else LogProgress()


class LogProgress(ProgressBar):
    """Progress as plain lines for logs. During training, every `refresh_rate` batches and at each epoch's last:

        epoch 1/3  step 40/75  batch 15/25  train_loss 0.4123  212.3 samples/s  ETA 0:35

    and after each validation: `epoch 1/3  val_loss 0.3012  val_acc 0.9100  val_f1 0.9088`. `samples/s` counts
    every process and leaves validation out; epochs count from 1; ETA is the rest of the fit at the mean
    pace of its steps so far (validation included). Test and predict print a line every `refresh_rate` batches.

    Args:
        refresh_rate: Print a line every this many batches (0 prints only the epoch ends and validation results).
    """

    def __init__(self, refresh_rate: int = 50) -> None:
        super().__init__()
        self.refresh_rate = refresh_rate
        self._enabled = True
        self._window_start = 0.0
        self._window_samples = 0
        self._fit_start = 0.0
        self._first_step = 0

    # The Trainer switches progress bars off on other ranks and around tuning routines.
    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    @property
    def is_enabled(self) -> bool:
        return self._enabled

    def _epoch(self, trainer: Trainer) -> str:
        total = trainer.max_epochs
        # 1-based, as people count: the last of 3 epochs is "epoch 3/3" (Lightning's `current_epoch` starts at 0).
        return f"epoch {trainer.current_epoch + 1}" + (f"/{total}" if total and total > 0 else "")

    def _due(self, batch_idx: int, total: int | float) -> bool:
        count = batch_idx + 1
        return self._enabled and ((self.refresh_rate > 0 and count % self.refresh_rate == 0) or count == total)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._fit_start, self._first_step = time.perf_counter(), trainer.global_step

    def _eta(self, trainer: Trainer, steps: float) -> str | None:
        done = trainer.global_step - self._first_step
        if done <= 0 or not math.isfinite(steps):
            return None
        seconds = int((time.perf_counter() - self._fit_start) / done * max(steps - trainer.global_step, 0))
        hours, rest = divmod(seconds, 3600)
        return f"ETA {hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"ETA {rest // 60}:{rest % 60:02d}"

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._window_start, self._window_samples = time.perf_counter(), 0

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._window_samples += _batch_size(batch) * trainer.world_size
        total = self.total_train_batches
        if not self._due(batch_idx, total):
            return
        parts = [self._epoch(trainer)]
        steps = trainer.estimated_stepping_batches
        parts.append(f"step {trainer.global_step}" + (f"/{int(steps)}" if math.isfinite(steps) else ""))
        parts.append(f"batch {batch_idx + 1}" + (f"/{total}" if math.isfinite(total) else ""))
        parts += _formatted(self.get_metrics(trainer, pl_module), prefix="train_")
        elapsed = time.perf_counter() - self._window_start
        if self._window_samples and elapsed > 0:
            parts.append(f"{self._window_samples / elapsed:.1f} samples/s")
        eta = self._eta(trainer, steps)
        if eta:
            parts.append(eta)
        print("  ".join(parts), flush=True)
        self._window_start, self._window_samples = time.perf_counter(), 0

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._enabled and not trainer.sanity_checking and trainer.state.fn == "fit":
            print("  ".join([self._epoch(trainer), *_formatted(trainer.callback_metrics, prefix="val_")]), flush=True)

    def _eval_batch_end(self, stage: str, batch_idx: int, total: int | float) -> None:
        if self.refresh_rate > 0 and self._due(batch_idx, total):
            print(f"{stage} batch {batch_idx + 1}" + (f"/{total}" if math.isfinite(total) else ""), flush=True)

    # (The base class's `total_*_batches_current_dataloader` need the bookkeeping of the batch-start hooks.)
    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_batch_end("test", batch_idx, trainer.num_test_batches[dataloader_idx])

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_batch_end("predict", batch_idx, trainer.num_predict_batches[dataloader_idx])


def _formatted(metrics: dict, prefix: str) -> list[str]:
    """`name value` for the scalar metrics whose name starts with `prefix`, values to 4 decimals."""
    items = []
    for name, value in metrics.items():
        if name.startswith(prefix):
            value = value.item() if hasattr(value, "item") else value
            items.append(f"{name} {value:.4f}" if isinstance(value, float) else f"{name} {value}")
    return items


def _batch_size(batch: Any) -> int:
    if isinstance(batch, dict) and "input_ids" in batch:
        return len(batch["input_ids"])
    return 0


class LogInterval(Callback):
    """Lowers `log_every_n_steps` (left unset: Lightning's 50) to the number of training batches in an epoch when
    an epoch is shorter: a small dataset then still logs its training loss, and Lightning has nothing to warn about.
    Added by the CLI only when the config does not set `trainer.log_every_n_steps`."""

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        datamodule = trainer.datamodule
        if stage != "fit" or datamodule is None or getattr(datamodule, "streaming", False):
            return  # a stream has no length: Lightning does not warn
        try:
            batches = len(datamodule.train_dataloader())
        except TypeError:  # a loader without a length
            return
        limit = trainer.limit_train_batches
        batches = min(batches, limit) if isinstance(limit, int) else int(batches * limit)
        if 0 < batches < trainer.log_every_n_steps:
            trainer.log_every_n_steps = batches


class PlainModelSummary(ModelSummary):
    """Lightning's plain summary table for log files, without its FLOPs column when nothing was counted: FLOPs are
    counted only for a model with an `example_input_array`, which ours has not, so the column is all zeros."""

    @staticmethod
    def summarize(summary_data: list, *args: Any, total_flops: int = 0, **kwargs: Any) -> None:
        if not total_flops:
            summary_data = [(name, values) for name, values in summary_data if name != "FLOPs"]
        ModelSummary.summarize(summary_data, *args, total_flops=total_flops, **kwargs)
