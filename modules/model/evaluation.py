"""Validation, test and predict steps of `TransformerModule`: metrics per row, or per document when
`--data.long_text chunk` made windows of long texts; every row's outputs kept for the decisions room
(modules/decisions: calibration, thresholds, the test report); and the CPU speed-ups that pay without gradients.

Outside `fit`, the run's decisions (calibration and thresholds, from the checkpoint) apply to every score: test and
validate metrics, predict's probabilities and labels. During `fit` the scores stay raw (they are being fitted)."""

import re

import torch
from lightning.pytorch import LightningModule
from torchmetrics import MeanMetric

from modules import compat
from modules.decisions.calibration import apply, expected_calibration_error
from modules.decisions.outputs import EvalOutputs, gather
from modules.decisions.record import DecisionRule, Decisions
from modules.decisions.thresholds import predicted
from modules.model.loss import task_outputs
from modules.speedups import apply_for_inference


class EvaluationSteps(LightningModule):
    """Mixed into `TransformerModule`, which provides `forward`, `_loss`, `task`, the metrics (`_build_metrics`) and
    `data_contract` (what the data told the model)."""

    decisions: Decisions | None = None  # fitted by modules/decisions/callback.py, saved with each checkpoint
    val_outputs: EvalOutputs | None = None  # every row of the last validation, on every process
    test_outputs: EvalOutputs | None = None
    _collected: list | None = None  # (index, raw logits, labels) of this epoch's batches
    _windowed: bool = False

    def start_windows(self) -> None:
        """Score per document when the data is windowed (called with the metrics)."""
        self._windowed = self.data_contract is not None and self.data_contract.long_text == "chunk"

    # ------------------------------------------------------------------------------------------ decisions
    def applies_decisions(self) -> bool:
        """The decisions apply outside `fit` (and to a module loaded on its own, for inference)."""
        trainer = compat.attached_trainer(self)
        return self.decisions is not None and (trainer is None or trainer.state.fn != "fit")

    def decision_rule(self, decisions: Decisions | None = None) -> DecisionRule:
        """How scores become labels: the decisions' rule (tuned thresholds, a target's decision), except that a
        `--model.threshold` other than the one they were fitted with replaces every threshold (a command's own
        value wins)."""
        decisions = decisions or (self.decisions if self.applies_decisions() else None)
        threshold = float(self.hparams.threshold)
        if decisions is None:
            return DecisionRule(threshold=threshold)
        given = self.task == "multi_label" and threshold != decisions.default_threshold
        return decisions.rule(threshold if given else None)

    def calibrated(self, logits: torch.Tensor, decisions: Decisions | None = None) -> torch.Tensor:
        decisions = decisions or (self.decisions if self.applies_decisions() else None)
        return apply(logits, decisions.calibration if decisions else None)

    def decide(self, logits: torch.Tensor, decisions: Decisions | None = None) -> torch.Tensor:
        """Class ids (single-label), 0/1 per label (multi-label) or values (regression) from raw logits."""
        probabilities = task_outputs(self.task, self.calibrated(logits, decisions))
        names = [str(name) for name in self.hparams.label_names]
        return predicted(self.task, probabilities, self.decision_rule(decisions), names)

    # ---------------------------------------------------------------------------------------------- steps
    def _eval_step(self, batch: dict[str, torch.Tensor], loss_metric: MeanMetric, metrics) -> None:
        logits = self(batch)
        if self._collected is None:
            self._collected = []
        self._collected.append((batch["index"].cpu(), logits.detach().float().cpu(), batch["labels"].cpu()))
        if not self._windowed:  # windows are scored per document at the epoch's end
            self._update_metrics(logits, batch["labels"], loss_metric, metrics)

    def _update_metrics(self, logits: torch.Tensor, labels: torch.Tensor, loss_metric: MeanMetric, metrics) -> None:
        if len(labels):
            calibrated = self.calibrated(logits.float())
            loss_metric.update(self._loss(calibrated, labels), weight=len(labels))
            if self.task == "regression":
                metrics.update(task_outputs(self.task, logits), labels)
            else:
                metrics.update(self.decide(logits.float()), labels.long())

    def _end_epoch(self, loss_metric: MeanMetric, metrics) -> EvalOutputs:
        parts, self._collected = self._collected or [], None
        outputs = gather(parts, self.task == "multi_label", self.trainer.world_size)
        if self._windowed and len(outputs):  # each process scores its share: synced metrics count each document once
            mine = torch.arange(len(outputs)) % self.trainer.world_size == self.trainer.global_rank
            self._update_metrics(outputs.logits[mine].to(self.device), outputs.labels[mine].to(self.device),
                                 loss_metric, metrics)  # fmt: skip
        return outputs

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, self.val_loss, self.val_metrics)

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, self.test_loss, self.test_metrics)

    def _log_epoch(self, prefix: str, loss_metric: MeanMetric, metrics, extra: dict | None = None) -> None:
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
        values.update(extra or {})
        self.log_dict(values, prog_bar=prefix == "val", sync_dist=True)  # equal on all ranks: a no-op mean
        loss_metric.reset()
        metrics.reset()

    def on_validation_epoch_end(self) -> None:
        self.val_outputs = self._end_epoch(self.val_loss, self.val_metrics)
        self._log_epoch("val", self.val_loss, self.val_metrics)

    def on_test_epoch_end(self) -> None:
        self.test_outputs = outputs = self._end_epoch(self.test_loss, self.test_metrics)
        self._log_epoch("test", self.test_loss, self.test_metrics, self._decision_metrics(outputs))

    def _decision_metrics(self, outputs: EvalOutputs) -> dict[str, float]:
        """`test_ece` (calibrated) and `test_ece_uncalibrated`; multi-label, `test_f1_macro_untuned`: macro-F1 of
        the raw scores at `--model.threshold`, what the tuned thresholds are measured against."""
        if self.task == "regression" or not len(outputs):
            return {}
        multi_label = self.task == "multi_label"
        raw, calibrated = (task_outputs(self.task, x) for x in (outputs.logits, self.calibrated(outputs.logits)))
        values = {
            "test_ece": expected_calibration_error(calibrated, outputs.labels, multi_label),
            "test_ece_uncalibrated": expected_calibration_error(raw, outputs.labels, multi_label),
        }
        if multi_label:
            from modules.decisions.thresholds import f1_scores

            values["test_f1_macro_untuned"] = f1_scores(raw > float(self.hparams.threshold), outputs.labels)[0]
        return values

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        # Logits, not probabilities: with --data.long_text chunk the writer averages a document's windows first
        # (calibration is affine with a positive scale, so it commutes with that mean and max).
        return {"index": batch["index"].cpu(), "logits": self.calibrated(self(batch).float()).cpu()}

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
