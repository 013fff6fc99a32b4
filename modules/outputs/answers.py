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
        threshold: Multi-label: the probability above which a label counts as present.
    """

    task: str
    names: Sequence[str]
    value: float | list[float]
    threshold: float = 0.5

    def scores(self) -> dict[str, float]:
        """Each label's score, in id order."""
        return dict(zip(self.names, self._values()))

    def ranked(self) -> list[tuple[str, float]]:
        """(label, score) pairs, highest score first; ties keep id order, so the first is `predict`'s label."""
        return sorted(zip(self.names, self._values()), key=lambda pair: -pair[1])

    def present(self) -> list[str]:
        """Multi-label: the labels whose score is above the threshold, in id order."""
        return [name for name, score in zip(self.names, self._values()) if score > self.threshold]

    def row(self) -> dict:
        """`predict`'s fields: `prediction` (label, label list or value) and `probabilities` (label -> score)."""
        if self.task == "regression":
            return {"prediction": self.value}
        label = self.present() if self.task == "multi_label" else self.ranked()[0][0]
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
            return {"label": ranked[0][0], "score": ranked[0][1]}
        return [{"label": name, "score": score} for name, score in ranked[:top_k]]

    def hugging_face(self, top_k: int | None = None) -> list[dict]:
        """Hugging Face's text-classification shape for every task: `{"label", "score"}` items, best first, the
        `top_k` best (None: every label), as the Inference API and text-embeddings-inference answer."""
        return [{"label": name, "score": score} for name, score in self.ranked()[:top_k]]

    def _values(self) -> list[float]:
        return self.value if isinstance(self.value, list) else [self.value]
