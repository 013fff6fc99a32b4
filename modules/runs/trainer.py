"""`HFTrainer`: Lightning's Trainer with the `check` command beside fit, validate, test and predict; every command's
Trainer (LightningCLI's `trainer_class`)."""

from pathlib import Path
from typing import Any

from lightning.pytorch import LightningDataModule, LightningModule, Trainer

from modules.check.command import run_check


class HFTrainer(Trainer):
    """Lightning's Trainer with a `check` command next to `fit`, `validate`, `test` and `predict`."""

    def predict(
        self,
        model: LightningModule | None = None,
        dataloaders: Any = None,
        datamodule: LightningDataModule | None = None,
        return_predictions: bool | None = False,
        ckpt_path: str | Path | None = None,
        weights_only: bool | None = None,
    ) -> list | None:
        """Lightning's `predict`, except that `return_predictions` defaults to False: the PredictionWriter writes
        them to a file as they come, and a list of every batch's outputs would grow with the input's size."""
        return super().predict(model, dataloaders, datamodule, return_predictions, ckpt_path, weights_only)

    def check(self, model: LightningModule, datamodule=None, memory_limit_gb: float | None = None) -> dict:
        """Measure what `fit` with the same flags would cost, and whether it can run.

        Args:
            model: The module `fit` would train.
            datamodule: The data `fit` would train on.
            memory_limit_gb: Memory the run may use, in GiB; None: the machine's (physical memory on CPUs, the
                GPU's memory on GPUs).
        """
        return run_check(self, model, datamodule, memory_limit_gb)
