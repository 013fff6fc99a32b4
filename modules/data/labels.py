"""Label discovery and encoding: which task the labels describe, their names, and their ids per row."""

import math
from dataclasses import dataclass

from datasets import ClassLabel, Dataset, LargeList, List, Value

from modules.data import arrow_rows
from modules.data.tasks import PROBLEM_TYPES, TASKS, Task  # noqa: F401 (the task table's old home; a light module)
from modules.errors import HFLightningError


@dataclass(frozen=True)
class LabelSpec:
    """What the model predicts: the task and the names of its outputs (one name, `score`, for regression)."""

    task: Task
    names: tuple[str, ...]

    @property
    def num_labels(self) -> int:
        return len(self.names)

    def label_id(self, value: object, where: str) -> int:
        """The class id of one raw label (a name, or an id 0..N-1); `where` (e.g. "validation row 7") names the row
        in the error. The one home of these errors: the Arrow path (`arrow_rows.encode_labels`) finds its first bad
        row and hands it here."""
        if isinstance(value, str):
            try:
                return self.names.index(value)
            except ValueError:
                raise HFLightningError(
                    f"unknown label {value!r} in {where}: the train split's labels are {list(self.names)}. "
                    "Fix the row or add examples of that label to train."
                ) from None
        if isinstance(value, float) and not value.is_integer():
            raise HFLightningError(
                f"label {value} in {where} is not a class id (expected an integer 0..{self.num_labels - 1})."
            )
        index = int(value)
        if not 0 <= index < self.num_labels:
            raise HFLightningError(
                f"label {index} in {where} is out of range for {self.num_labels} labels "
                f"(ids 0..{self.num_labels - 1}, names {list(self.names)}). Fix the row, or check --data.label_column."
            )
        return index


def _is_missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def infer_label_spec(train: Dataset, label_column: str | list[str], task: str = "auto") -> LabelSpec:
    """Decide the task and label names from the train split's label column(s) and feature types.

    Several columns are multi-label (one 0/1 column per label). A `ClassLabel` gives its names. A list per row is
    multi-label. Strings are single-label, named by their sorted values. Integers are single-label ids 0..max. Floats
    are regression unless every value is a whole number (then single-label ids), so 0.0/1.0 labels never turn into
    multi-label training by accident. `task` overrides the detection where the data allows it.
    """
    if isinstance(label_column, list):
        if task not in ("auto", "multi_label"):
            raise HFLightningError(
                f"--data.label_column lists several columns {label_column}, which means multi-label; "
                f"--data.task {task} needs a single label column."
            )
        return LabelSpec("multi_label", tuple(label_column))
    feature = train.features[label_column]
    stored = arrow_rows.column(train, label_column)
    if arrow_rows.is_scalar(stored):
        # Distinct values decide everything below, so a million rows cost an Arrow pass, not a Python list.
        values = arrow_rows.distinct_values(stored)
    else:
        values = [v for v in train[label_column][:] if not _is_missing(v)]
    if isinstance(feature, (List, LargeList)):
        if task not in ("auto", "multi_label"):
            raise HFLightningError(
                f"label column {label_column!r} holds a list of labels per row (multi-label); "
                f"it cannot be trained as --data.task {task}."
            )
        inner = feature.feature
        if isinstance(inner, ClassLabel):
            return LabelSpec("multi_label", tuple(inner.names))
        return LabelSpec("multi_label", _names_from_values([x for row in values for x in row], label_column))
    if task == "multi_label":
        raise HFLightningError(
            f"--data.task multi_label needs a list of labels per row or several 0/1 columns "
            f"(--data.label_column '[a, b, c]'); column {label_column!r} holds one {feature} per row."
        )
    if isinstance(feature, ClassLabel):
        if task == "regression":
            raise HFLightningError(
                f"label column {label_column!r} is a ClassLabel; it cannot be --data.task regression."
            )
        return LabelSpec("single_label", tuple(feature.names))
    dtype = feature.dtype if isinstance(feature, Value) else str(feature)
    if dtype.startswith("float") and (task == "regression" or not all(float(v).is_integer() for v in values)):
        if task == "single_label":
            bad = next(v for v in values if not float(v).is_integer())
            raise HFLightningError(
                f"--data.task single_label, but label column {label_column!r} holds non-integer values such as "
                f"{bad}; use --data.task regression (or auto) for continuous targets."
            )
        return LabelSpec("regression", ("score",))
    if task == "regression":
        if dtype == "string" or dtype.startswith("large_string"):
            raise HFLightningError(f"label column {label_column!r} holds strings; it cannot be --data.task regression.")
        return LabelSpec("regression", ("score",))
    return LabelSpec("single_label", _names_from_values(values, label_column))


def _names_from_values(values: list, label_column: str) -> tuple[str, ...]:
    if not values:
        raise HFLightningError(f"label column {label_column!r} of the train split holds no labels.")
    if all(isinstance(v, str) for v in values):
        return tuple(sorted(set(values)))
    if all(isinstance(v, (int, float, bool)) for v in values):
        ints = [int(v) for v in values]
        if min(ints) < 0:
            raise HFLightningError(
                f"label column {label_column!r} holds the negative id {min(ints)}; integer labels must be 0..N-1 "
                "(-1 marks an unlabeled row)."
            )
        return tuple(str(i) for i in range(max(ints) + 1))
    raise HFLightningError(f"label column {label_column!r} mixes strings and numbers; use one kind of label.")


def is_missing_label(value: object, spec: LabelSpec) -> bool:
    """True for a row without a label: None/NaN, -1 ids (the Hub's convention for unlabeled rows), empty lists."""
    if _is_missing(value):
        return True
    if spec.task == "single_label" and isinstance(value, int) and not isinstance(value, bool) and value == -1:
        return True
    return False


def encode_label(value: object, spec: LabelSpec, where: str) -> int | float | list[float]:
    """Turn one raw label into what the loss expects; `where` (e.g. "validation row 7") names the row in errors."""
    if spec.task == "regression":
        return float(value)
    if spec.task == "multi_label":
        if isinstance(value, dict):  # one 0/1 column per label, gathered by the caller
            return [float(value[name]) for name in spec.names]
        hot = [0.0] * spec.num_labels
        for item in value:
            hot[spec.label_id(item, where)] = 1.0
        return hot
    return spec.label_id(value, where)
