"""`FitDecisions`, the `--decisions.*` flags: after each validation of `fit`, calibrate the scores and choose the
thresholds on that validation's outputs, so every checkpoint carries the decisions fitted for its own weights
(modules/decisions/record.py); `validate --decisions.recalibrate true` fits them again on other labelled data and
writes them into `--ckpt_path`. Also calls out predictions that collapsed."""

from collections.abc import Mapping
from typing import Literal

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from modules.decisions import calibration as calibrating
from modules.decisions.collapse import ADVICE, collapse_findings, flat, scores
from modules.decisions.record import CHECKPOINT_KEY, Decisions
from modules.decisions.thresholds import best_f1, tune_binary, tune_multi_label
from modules.errors import HFLightningError
from modules.model.loss import task_outputs


class FitDecisions(Callback):
    """Calibrated scores and tuned thresholds, fitted on the validation split and stored with every checkpoint.

    Args:
        calibrate: Fit temperature scaling (single-label) or per-label Platt scaling (multi-label) on the validation
            outputs by log-likelihood: probabilities that mean what they say (a 0.8 is right about 80% of the time).
            Single-label accuracy is unchanged. The export folds it into the classifier's last layer. False keeps
            the raw scores; None (default) calibrates whenever the run validates, true insists (an error without
            validation).
        tune_thresholds: Multi-label: tune the thresholds on validation (see `tune_for`). False: `--model.threshold`
            for all; None (default) tunes whenever the run validates, true insists.
        tune_for: Multi-label: `f1_macro` gives each label the threshold of its best validation F1 (labels with
            fewer than `min_positives` validation positives keep `--model.threshold`): rare labels get predicted,
            at the cost of false positives where the model is weak. `f1_micro` tunes one threshold for all labels
            for the best micro-F1: fewer false positives, rare labels seldom predicted.
        target_precision: Multi-label: instead of the best F1, the threshold that reaches this validation precision
            with the most recall, for every label (a number) or the named ones (`{label: 0.9}`). Binary single-label:
            the precision of `target_label`.
        target_recall: Binary single-label: the threshold on `target_label`'s probability that reaches this recall
            with the most precision.
        target_label: Binary single-label: the class `target_precision` or `target_recall` is for (predicted whenever
            its probability is above the chosen threshold).
        min_positives: Validation positives a label needs for its threshold to be tuned.
        calibration_loss: What the calibration minimises on validation: `brier` (the Brier score: every row's
            probability gap weighs alike, as in the expected calibration error) or `nll` (log-likelihood, classic
            temperature scaling, dominated by the few confidently wrong rows).
        recalibrate: With `validate --ckpt_path X`: fit the calibration and thresholds again on this command's
            validation data (e.g. `--data.data_files '{validation: new.csv}'`) and write them into X.
        collapse_warning: Warn, after each validation, when the predictions collapsed (one label or label set for
            nearly every row, most labels never predicted, validation metrics flat).
    """

    def __init__(
        self,
        calibrate: bool | None = None,
        tune_thresholds: bool | None = None,
        tune_for: Literal["f1_macro", "f1_micro"] = "f1_macro",
        target_precision: float | dict[str, float] | None = None,
        target_recall: float | None = None,
        target_label: str | None = None,
        min_positives: int = 5,
        calibration_loss: Literal["brier", "nll"] = "brier",
        recalibrate: bool = False,
        collapse_warning: bool = True,
    ) -> None:
        targets = target_precision.values() if isinstance(target_precision, Mapping) else [target_precision]
        for name, values in (("target_precision", targets), ("target_recall", [target_recall])):
            for value in values:
                if value is not None and not 0 < value < 1:
                    raise HFLightningError(f"--decisions.{name} must be in (0, 1), got {value}.")
        if target_precision is not None and target_recall is not None:
            raise HFLightningError("set --decisions.target_precision or --decisions.target_recall, not both.")
        if target_recall is not None and target_label is None:
            raise HFLightningError("--decisions.target_recall needs --decisions.target_label: the class it is for.")
        if min_positives < 1:
            raise HFLightningError(f"--decisions.min_positives must be at least 1, got {min_positives}.")
        self.calibrate = calibrate
        self.tune_thresholds = tune_thresholds
        self.tune_for = tune_for
        self.target_precision = target_precision
        self.target_recall = target_recall
        self.target_label = target_label
        self.min_positives = min_positives
        self.calibration_loss = calibration_loss
        self.recalibrate = recalibrate
        self.collapse_warning = collapse_warning
        self._history: list[dict[str, float]] = []

    # ------------------------------------------------------------------------------------- checks, before work
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage not in ("fit", "validate"):
            return
        if stage == "validate" and not self.recalibrate:
            return
        asked = [name for name, value in (("calibrate", self.calibrate), ("tune_thresholds", self.tune_thresholds),
                 ("recalibrate", self.recalibrate)) if value is True]  # fmt: skip
        asked += [name for name in ("target_precision", "target_recall") if getattr(self, name) is not None]
        if not trainer.limit_val_batches and asked:
            raise HFLightningError(
                f"--decisions.{asked[0]} is fitted on the validation split, which --trainer.limit_val_batches 0 "
                "turns off: allow validation, or drop the flag."
            )
        self._check_targets(trainer, pl_module)

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Lightning knows the checkpoint once it has restored it (after `setup`): still before any batch runs.
        if self.recalibrate and trainer.state.fn == "validate" and not trainer.ckpt_path:
            raise HFLightningError("--decisions.recalibrate true writes into a checkpoint: pass --ckpt_path.")

    def _check_targets(self, trainer: Trainer, pl_module: LightningModule) -> None:
        contract = getattr(trainer.datamodule, "contract", None)
        spec = contract.label_spec if contract is not None else None
        task = spec.task if spec else pl_module.task
        names = [str(n) for n in (spec.names if spec else pl_module.hparams.label_names or [])]
        wanted = self.target_precision is not None or self.target_recall is not None
        if not wanted:
            return
        if task == "regression":
            raise HFLightningError("--decisions.target_precision/target_recall apply to classifiers, not regression.")
        if task == "single_label":
            if len(names) != 2:
                raise HFLightningError(
                    f"a target precision or recall applies to a binary classifier; this one has {len(names)} classes."
                )
            if self.target_label is None:
                raise HFLightningError(f"name the class the target is for: --decisions.target_label (one of {names}).")
            if isinstance(self.target_precision, Mapping):
                raise HFLightningError("binary: --decisions.target_precision is one number (with target_label).")
        elif self.target_recall is not None or self.target_label is not None:
            raise HFLightningError(
                "multi-label: --decisions.target_precision takes a number or {label: precision}; target_recall and "
                "target_label are for binary classifiers."
            )  # fmt: skip
        named = list(self.target_precision) if isinstance(self.target_precision, Mapping) else []
        named += [self.target_label] if self.target_label is not None else []
        unknown = [n for n in named if n not in names]
        if unknown:
            raise HFLightningError(f"--decisions target for unknown label(s) {unknown}: the labels are {names}.")

    # ------------------------------------------------------------------------------------------- fitting
    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Before ModelCheckpoint's `on_validation_end` (Lightning runs checkpoint callbacks last): the checkpoint it
        # writes now carries decisions fitted for its own weights.
        if trainer.sanity_checking:
            return
        outputs = getattr(pl_module, "val_outputs", None)
        if outputs is None or not len(outputs) or not torch.isfinite(outputs.logits).all():
            return  # nothing to fit on (a non-finite validation keeps the decisions fitted before it)
        fitting = trainer.state.fn == "fit"
        if fitting or self.recalibrate:
            pl_module.decisions = self.fit(pl_module, outputs)
        if self.collapse_warning and trainer.is_global_zero:
            self._warn_collapse(trainer, pl_module, outputs, fitting)
        if self.recalibrate and trainer.state.fn == "validate":
            self._write(trainer, pl_module.decisions)

    def fit(self, pl_module: LightningModule, outputs) -> Decisions:
        task, names = pl_module.task, [str(n) for n in pl_module.hparams.label_names]
        default = float(pl_module.hparams.threshold)
        if task == "regression":
            return Decisions(task, tuple(names), default_threshold=default)
        multi_label = task == "multi_label"
        calibration = None
        if self.calibrate is not False:
            layer = calibrating.head_layer(pl_module.model, len(names))  # fails now, not at the export
            calibration = calibrating.fit(
                outputs.logits, outputs.labels, multi_label, layer.bias is not None, self.calibration_loss
            )
        probabilities = task_outputs(task, calibrating.apply(outputs.logits, calibration))
        thresholds, untuned, targets, tuned_for = None, {}, (), None
        if multi_label and (self.tune_thresholds is not False or self.target_precision is not None):
            if self.tune_for == "f1_micro" and self.target_precision is None:
                threshold = best_f1(probabilities.flatten(), outputs.labels.flatten() > 0.5)[0]
                thresholds, tuned_for = (threshold,) * len(names), "micro-F1 (one threshold for all labels)"
            else:
                thresholds, untuned, targets = tune_multi_label(
                    probabilities, outputs.labels, names, default, self.min_positives, self.target_precision
                )
                tuned_for = "f1" if self.target_precision is None else f"precision >= {self.target_precision}"
        elif self.target_label is not None:
            metric, value = ("precision", self.target_precision) if self.target_recall is None else (
                "recall", self.target_recall)  # fmt: skip
            targets = (tune_binary(probabilities, outputs.labels, names, self.target_label, metric, value),)
            tuned_for = f"{metric} of {self.target_label} >= {value}"
        return Decisions(task, tuple(names), calibration, default, thresholds, untuned, targets, tuned_for)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        decisions = getattr(pl_module, "decisions", None)
        if trainer.is_global_zero and decisions is not None:
            for line in describe(decisions):
                print(line)

    def _write(self, trainer: Trainer, decisions: Decisions) -> None:
        if not trainer.is_global_zero:
            return
        from modules.runs.paths import load_checkpoint

        path = trainer.ckpt_path
        checkpoint = load_checkpoint(path)
        before = Decisions.from_checkpoint(checkpoint)
        checkpoint[CHECKPOINT_KEY] = decisions.to_dict()
        trainer.strategy.checkpoint_io.save_checkpoint(checkpoint, path)
        if before is not None and before.calibration is not None:
            print(f"Replaced the checkpoint's calibration: {before.calibration.describe()}")
        for line in describe(decisions):
            print(line)
        print(f"Wrote the new calibration and thresholds into {path}; export it again (`main.py export`) to serve.")

    # ------------------------------------------------------------------------------------------ collapse
    def _warn_collapse(self, trainer: Trainer, pl_module: LightningModule, outputs, fitting: bool) -> None:
        task = pl_module.task
        names = [str(n) for n in pl_module.hparams.label_names]
        predicted = pl_module.decide(outputs.logits, pl_module.decisions)  # as the decisions just fitted decide
        findings = collapse_findings(predicted, outputs.labels, names, task)
        if fitting:  # scored as the logged validation metrics are (raw scores, the run's rule), from the outputs
            self._history.append(scores(task, pl_module.decide(outputs.logits), outputs.labels, len(names)))
            moved = flat(self._history)
            if moved:
                findings.append(f"{', '.join(moved)} stuck below 0.5 for {len(self._history[-3:])} validations")
        if findings:
            print(f"warning: the model's validation predictions look collapsed: {'; '.join(findings)}. {ADVICE}.")


def describe(decisions: Decisions) -> list[str]:
    """What a run decided, for the end of fit and the test report."""
    lines = []
    if decisions.calibration is not None:
        lines.append(f"Calibrated: {decisions.calibration.describe()}.")
    if decisions.thresholds is not None:
        tuned = len(decisions.labels) - len(decisions.untuned)
        line = f"Thresholds: {tuned} of {len(decisions.labels)} labels tuned on validation for {decisions.tuned_for}"
        if decisions.untuned:
            line += f"; kept at {decisions.default_threshold}: " + "; ".join(
                f"{name} ({why})" for name, why in decisions.untuned.items()
            )
        lines.append(line + ".")
    for target in decisions.targets if decisions.task == "single_label" else ():
        lines.append(
            f"Decision: {target.label} when its probability is above {target.threshold:.4f} (validation "
            f"{target.metric} {target.reached:.4f}, target {target.value})."
        )
    missed = [t for t in decisions.targets if t.reached < t.value]
    if missed:
        lines.append(
            "warning: no threshold reaches the target for "
            + ", ".join(f"{t.label} ({t.metric} {t.reached:.3f} < {t.value})" for t in missed)
            + " on validation; the closest was kept."
        )
    return lines
