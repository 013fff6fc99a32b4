"""How one prediction reads, in every place that shows one: `predict`'s rows (modules/outputs/predictions.py) and
the server's answers, in its own shape and in Hugging Face's (modules/serve/api.py).

Light on purpose (no imports): the server imports it without the training stack.
"""

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Prediction:
    """One input's outputs, read as a label decision.

    Args:
        task: `single_label`, `multi_label` or `regression` (modules/data/tasks.py).
        names: Label names in id order (one name for regression).
        value: The predicted value (regression), else one score per label in `names` order: probabilities
            (softmax for single-label, sigmoid for multi-label) unless the caller applied another function.
        threshold: Multi-label: the probability above which a label counts as present, for every label or one per
            label in `names` order (tuned thresholds, modules/decisions/thresholds.py).
        decision: Single-label: `(label, threshold)`, the label predicted whenever its probability is above the
            threshold (a target precision or recall), else the best other label. None: the best label.
    """

    task: str
    names: Sequence[str]
    value: float | list[float]
    threshold: float | Sequence[float] = 0.5
    decision: tuple[str, float] | None = None

    def scores(self) -> dict[str, float]:
        """Each label's score, in id order."""
        return dict(zip(self.names, self._values()))

    def ranked(self) -> list[tuple[str, float]]:
        """(label, score) pairs, highest score first; ties keep id order, so the first is `predict`'s label."""
        return sorted(zip(self.names, self._values()), key=lambda pair: -pair[1])

    def present(self) -> list[str]:
        """Multi-label: the labels whose score is above their threshold, in id order."""
        values = self._values()
        thresholds = self.threshold if isinstance(self.threshold, Sequence) else [self.threshold] * len(values)
        return [name for name, score, cut in zip(self.names, values, thresholds) if score > cut]

    def label(self) -> str:
        """Single-label: the predicted label (the best, or the decision's label when it is above its threshold)."""
        ranked = self.ranked()
        if self.decision is None:
            return ranked[0][0]
        name, cut = self.decision
        if self.scores()[name] > cut:
            return name
        return next(other for other, _ in ranked if other != name)

    def row(self) -> dict:
        """`predict`'s fields: `prediction` (label, label list or value) and `probabilities` (label -> score)."""
        if self.task == "regression":
            return {"prediction": self.value}
        label = self.present() if self.task == "multi_label" else self.label()
        return {"prediction": label, "probabilities": self.scores()}

    def answer(self, top_k: int | None = 1) -> dict | list[dict]:
        """The server's own shape: `{"score"}` (regression), `{"labels", "scores"}` (multi-label), else the top
        label as `{"label", "score"}` (`top_k` 1) or a list of the `top_k` best (None: every label)."""
        if self.task == "regression":
            return {"score": self.value}
        if self.task == "multi_label":
            return {"labels": self.present(), "scores": self.scores()}
        ranked = self.ranked()
        if top_k == 1:
            label = self.label()
            return {"label": label, "score": self.scores()[label]}
        return [{"label": name, "score": score} for name, score in ranked[:top_k]]

    def hugging_face(self, top_k: int | None = None) -> list[dict]:
        """Hugging Face's text-classification shape for every task: `{"label", "score"}` items, best first, the
        `top_k` best (None: every label), as the Inference API and text-embeddings-inference answer."""
        return [{"label": name, "score": score} for name, score in self.ranked()[:top_k]]

    def _values(self) -> list[float]:
        return self.value if isinstance(self.value, list) else [self.value]
