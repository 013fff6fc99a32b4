"""What a run decided after training, in one schema: `Decisions` (calibration of the scores, and the thresholds that
turn them into labels). The checkpoint keeps it under `hf_lightning_decisions`; the Hugging Face export folds the
calibration into its weights and writes the rest into its config (`hf_lightning_*` keys, `export_keys`), where
`serve`, the ONNX backends and any reader find it (`DecisionRule.from_config`).

Light on purpose (no torch): the server reads it.
"""

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

CHECKPOINT_KEY = "hf_lightning_decisions"


@dataclass(frozen=True)
class Calibration:
    """How the scores were calibrated, fitted on validation outputs by negative log-likelihood.

    Attributes:
        method: `temperature` (single-label: softmax(logits / T), one T) or `platt` (multi-label: sigmoid(a * logit
            + b), one `a` and `b` per label).
        scale: Multiplier of the logits: `(1 / T,)` for temperature, one `a` per label for Platt.
        bias: Added after scaling: one `b` per label for Platt, empty for temperature.
        rows: Validation rows (documents) it was fitted on.
        nll_before: Validation negative log-likelihood per row, raw scores.
        nll_after: The same, calibrated.
        ece_before: Validation expected calibration error, raw scores.
        ece_after: The same, calibrated.
        fitted_by: The score minimised: `brier` or `nll`.
    """

    method: str
    scale: tuple[float, ...]
    bias: tuple[float, ...] = ()
    rows: int = 0
    nll_before: float = 0.0
    nll_after: float = 0.0
    ece_before: float = 0.0
    ece_after: float = 0.0
    fitted_by: str = "nll"

    def describe(self) -> str:
        if self.method == "temperature":
            how = f"temperature scaling (T = {1 / self.scale[0]:.3f})"
        else:
            how = f"Platt scaling per label (a from {min(self.scale):.2f} to {max(self.scale):.2f})"
        return (
            f"{how}, fitted by {'Brier score' if self.fitted_by == 'brier' else 'log-likelihood'} on {self.rows:,} "
            f"validation rows: validation ECE {self.ece_before:.4f} -> "
            f"{self.ece_after:.4f}, NLL {self.nll_before:.4f} -> {self.nll_after:.4f}"
        )


@dataclass(frozen=True)
class Target:
    """A threshold chosen for a target precision or recall of one label.

    Attributes:
        label: The label (class name) the target is for.
        metric: `precision` or `recall`.
        value: The target asked for.
        threshold: The probability above which `label` is predicted.
        reached: The metric at that threshold on validation (below `value` when no threshold reaches it).
    """

    label: str
    metric: str
    value: float
    threshold: float
    reached: float


@dataclass(frozen=True)
class Decisions:
    """What turns a model's scores into decisions, fitted on validation outputs.

    Attributes:
        task: `single_label`, `multi_label` or `regression`.
        labels: Label names in id order.
        calibration: None when the scores are raw (`--decisions.calibrate false`, or regression).
        default_threshold: Multi-label: the `--model.threshold` of the run, which labels without a tuned threshold
            keep.
        thresholds: Multi-label: one threshold per label (id order) on calibrated probabilities; None: the default
            for every label.
        untuned: Labels left at the default threshold, each with why (too few validation positives).
        targets: Thresholds chosen for a target precision or recall (binary single-label: one, for the named class;
            multi-label: one per label the target applied to).
        tuned_for: What the thresholds maximise or meet: `f1`, `precision >= 0.9`, ...
    """

    task: str
    labels: tuple[str, ...]
    calibration: Calibration | None = None
    default_threshold: float = 0.5
    thresholds: tuple[float, ...] | None = None
    untuned: dict[str, str] = field(default_factory=dict)
    targets: tuple[Target, ...] = ()
    tuned_for: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "Decisions | None":
        if not data:
            return None
        calibration = data.get("calibration")
        return cls(
            task=data["task"],
            labels=tuple(data["labels"]),
            calibration=Calibration(**{**calibration, "scale": tuple(calibration["scale"]),
                                       "bias": tuple(calibration["bias"])}) if calibration else None,
            default_threshold=data.get("default_threshold", 0.5),
            thresholds=tuple(data["thresholds"]) if data.get("thresholds") is not None else None,
            untuned=dict(data.get("untuned") or {}),
            targets=tuple(Target(**t) for t in data.get("targets") or ()),
            tuned_for=data.get("tuned_for"),
        )  # fmt: skip

    @classmethod
    def from_checkpoint(cls, checkpoint: Mapping[str, Any]) -> "Decisions | None":
        return cls.from_dict(checkpoint.get(CHECKPOINT_KEY))

    def binary_target(self) -> Target | None:
        """Single-label: the class predicted whenever its probability reaches its target's threshold."""
        return self.targets[0] if self.task == "single_label" and self.targets else None

    def rule(self, threshold: float | None = None) -> "DecisionRule":
        """The rule predict, test and serve apply; `threshold` (a command's own `--model.threshold` or `--threshold`)
        replaces every tuned threshold."""
        if threshold is not None:
            return DecisionRule(threshold=threshold)
        target = self.binary_target()
        if target is not None:
            return DecisionRule(decision=(target.label, target.threshold))
        return DecisionRule(threshold=self.thresholds if self.thresholds is not None else self.default_threshold)

    def export_keys(self) -> dict[str, Any]:
        """What the Hugging Face export's config records (the calibration itself is folded into its weights)."""
        keys: dict[str, Any] = {}
        if self.task == "multi_label":
            keys["hf_lightning_threshold"] = self.default_threshold
            if self.thresholds is not None:
                keys["hf_lightning_thresholds"] = dict(zip(self.labels, self.thresholds))
        target = self.binary_target()
        if target is not None:
            keys["hf_lightning_decision"] = {"label": target.label, "threshold": target.threshold}
        if self.calibration is not None:
            keys["hf_lightning_calibration"] = {**asdict(self.calibration), "folded_into_weights": True}
        return keys


@dataclass(frozen=True)
class DecisionRule:
    """How scores become labels.

    Attributes:
        threshold: Multi-label: one probability for every label, or one per label in id order; a label is predicted
            when its probability is above it.
        decision: Single-label: `(label, threshold)`, predict `label` when its probability is above the threshold,
            else the best other label. None: the best label.
    """

    threshold: float | tuple[float, ...] = 0.5
    decision: tuple[str, float] | None = None

    @classmethod
    def from_config(cls, config: Any, threshold: float | None = None) -> "DecisionRule":
        """The rule a Hugging Face export's config records (`export_keys`); `threshold` overrides it (multi-label)."""
        if threshold is not None:
            return cls(threshold=threshold)
        decision = getattr(config, "hf_lightning_decision", None)
        if decision:
            return cls(decision=(decision["label"], float(decision["threshold"])))
        per_label = getattr(config, "hf_lightning_thresholds", None)
        if per_label:
            names = [config.id2label[i] for i in range(config.num_labels)]
            return cls(threshold=tuple(float(per_label[name]) for name in names))
        default = getattr(config, "hf_lightning_threshold", None)
        return cls(threshold=0.5 if default is None else float(default))

    def per_label(self, num_labels: int) -> tuple[float, ...]:
        if isinstance(self.threshold, Sequence):
            return tuple(self.threshold)
        return (float(self.threshold),) * num_labels

    def describe(self) -> Any:
        """For `/info` and logs: the threshold(s) or the decision."""
        if self.decision is not None:
            return {"label": self.decision[0], "threshold": self.decision[1]}
        return list(self.threshold) if isinstance(self.threshold, Sequence) else self.threshold
