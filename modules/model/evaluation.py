"""Validation, test and predict steps of `TransformerModule`: metrics per row, or per document when
`--data.long_text chunk` made windows of long texts, and the CPU speed-ups that pay without gradients."""

import re

import torch
from lightning.pytorch import LightningModule
from torchmetrics import MeanMetric

from modules.data.long_text import documents_of_windows
from modules.model.loss import task_outputs
from modules.speedups import apply_for_inference


class EvaluationSteps(LightningModule):
    """Mixed into `TransformerModule`, which provides `forward`, `_loss`, `task`, the metrics (`_build_metrics`) and
    `data_contract` (what the data told the model)."""

    _windows: list | None = None  # with --data.long_text chunk: (index, logits, labels) of evaluated windows

    def start_windows(self) -> None:
        """Collect window logits for per-document scores when the data is windowed (called with the metrics)."""
        chunked = self.data_contract is not None and self.data_contract.long_text == "chunk"
        self._windows = [] if chunked else None

    def _eval_step(self, batch: dict[str, torch.Tensor], loss_metric: MeanMetric, metrics) -> None:
        logits = self(batch)
        if self._windows is not None:  # --data.long_text chunk: scored per document at the epoch's end
            self._windows.append((batch["index"].cpu(), logits.detach().float().cpu(), batch["labels"].cpu()))
            return
        self._update_metrics(logits, batch["labels"], loss_metric, metrics)

    def _update_metrics(self, logits: torch.Tensor, labels: torch.Tensor, loss_metric: MeanMetric, metrics) -> None:
        if len(labels):
            loss_metric.update(self._loss(logits, labels), weight=len(labels))
            metrics.update(task_outputs(self.task, logits), labels.long() if self.task == "multi_label" else labels)

    def _score_documents(self, loss_metric: MeanMetric, metrics) -> None:
        if self._windows is not None:
            parts, self._windows = self._windows, []
            logits, labels = documents_of_windows(
                parts, self.task == "multi_label", self.trainer.world_size, self.trainer.global_rank
            )
            self._update_metrics(logits.to(self.device), labels.to(self.device), loss_metric, metrics)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, self.val_loss, self.val_metrics)

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, self.test_loss, self.test_metrics)

    def _log_epoch(self, prefix: str, loss_metric: MeanMetric, metrics) -> None:
        # torchmetrics has already reduced across processes (every row counted once), so all ranks agree.
        values = {f"{prefix}_loss": loss_metric.compute()}
        for name, value in metrics.compute().items():
            if value.ndim == 2:  # the confusion matrix, for the test report (outputs/report.py): not a scalar to log
                setattr(self, f"{prefix}_confusion_matrix", value.cpu())
            elif value.ndim == 0:
                values[f"{prefix}_{name}"] = value
            else:  # per-class vector: one scalar per label name
                for label, v in zip(self.hparams.label_names, value):
                    values[f"{prefix}_{name}_{re.sub(r'[^0-9A-Za-z]+', '_', str(label))}"] = v
        self.log_dict(values, prog_bar=prefix == "val", sync_dist=True)  # equal on all ranks: a no-op mean
        loss_metric.reset()
        metrics.reset()

    def on_validation_epoch_end(self) -> None:
        self._score_documents(self.val_loss, self.val_metrics)
        self._log_epoch("val", self.val_loss, self.val_metrics)

    def on_test_epoch_end(self) -> None:
        self._score_documents(self.test_loss, self.test_metrics)
        self._log_epoch("test", self.test_loss, self.test_metrics)

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        # Logits, not probabilities: with --data.long_text chunk the writer averages a document's windows first.
        return {"index": batch["index"].cpu(), "logits": self(batch).float().cpu()}

    def _start_inference(self) -> None:
        # Outside fit (whose validation runs with the training patches on): the CPU patches that pay without gradients.
        if self.trainer.state.fn != "fit":
            self._undo_inference = apply_for_inference(self.model, self.device.type, compiled=self.hparams.compile)

    def _end_inference(self) -> None:
        undo, self._undo_inference = getattr(self, "_undo_inference", None), None
        if undo is not None:
            undo()

    on_validation_start = on_test_start = on_predict_start = _start_inference
    on_validation_end = on_test_end = on_predict_end = _end_inference
