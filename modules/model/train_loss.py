"""`train_loss` logged only on the batches something reads it, as the mean over the batches since its last log."""

import torch
from lightning.pytorch import LightningModule, Trainer


class TrainLossLog:
    """Adds each batch's loss up on the device and logs the window's mean when a logger or the bar will read it.

    Lightning's `self.log` costs about 1 ms of host time per call (it walks its result record each time), time a GPU
    step, host-bound at fine-tuning sizes, waits for. Loggers read the value every `log_every_n_steps` steps and a
    progress bar every `refresh_rate` batches; in between, the losses add up on the device (no sync). The value logged
    is the mean over that window, like the Hugging Face Trainer's `loss`: one batch's loss where it is read every batch
    (a bar that refreshes each batch, a callback that monitors it, `fast_dev_run`).
    """

    def __init__(self) -> None:
        self._window: tuple[torch.Tensor, int] | None = None
        self._bar_rate, self._every_step = 0, True

    def start(self, trainer: Trainer) -> None:
        """At the start of training: learn how often the bar and callbacks read the value."""
        bar = trainer.progress_bar_callback
        self._window = None
        self._bar_rate = getattr(bar, "refresh_rate", 0) if bar is not None and bar.is_enabled else 0
        monitored = any(getattr(callback, "monitor", None) == "train_loss" for callback in trainer.callbacks)
        self._every_step = monitored or bool(trainer.fast_dev_run)

    def add(self, module: LightningModule, loss: torch.Tensor, batch_idx: int, batch_size: int) -> None:
        window = self._window
        self._window = (window[0] + loss, window[1] + 1) if window else (loss, 1)
        trainer = module.trainer
        step = trainer.global_step + 1  # this batch's optimizer step, once it is done
        stepping = (batch_idx + 1) % trainer.accumulate_grad_batches == 0
        due = (
            self._every_step
            or trainer.is_last_batch
            or 0 < trainer.max_steps <= step
            or (stepping and trainer.log_every_n_steps > 0 and step % trainer.log_every_n_steps == 0)
            or (self._bar_rate > 0 and (batch_idx + 1) % self._bar_rate == 0)
        )
        if due:
            total, count = self._window
            self._window = None
            module.log("train_loss", total / count, prog_bar=True, batch_size=batch_size)
