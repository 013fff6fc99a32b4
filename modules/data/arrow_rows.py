"""Row checks and label encoding on Arrow columns, so preparing N rows never builds N-element Python lists."""

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset

from modules.errors import HFLightningError

if TYPE_CHECKING:  # labels.py imports this module
    from modules.data.labels import LabelSpec


def column(split: Dataset, name: str) -> pa.ChunkedArray:
    """The split's column as Arrow (respecting a `select`/`filter` indices mapping), without a Python copy."""
    return split.with_format("arrow").select_columns([name])[:][name]


def blank_text_mask(split: Dataset, text_columns: list[str]) -> np.ndarray:
    """True where any text column is missing or only whitespace."""
    blank = np.zeros(len(split), dtype=bool)
    for name in text_columns:
        values = column(split, name)
        if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
            values = pc.cast(values, pa.string())
        empty = pc.equal(pc.utf8_trim_whitespace(values), "")
        blank |= pc.fill_null(empty, True).to_numpy(zero_copy_only=False)
    return blank


def is_scalar(values: pa.ChunkedArray) -> bool:
    """Strings, integers, floats and booleans: the label kinds handled here (lists and ClassLabel ids are ints)."""
    kind = values.type
    return (
        pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
        or pa.types.is_integer(kind)
        or pa.types.is_floating(kind)
        or pa.types.is_boolean(kind)
    )


def missing_label_mask(values: pa.ChunkedArray, spec: "LabelSpec") -> np.ndarray:
    """True for None/NaN labels and, for single-label ids, the Hub's -1 (unlabeled row)."""
    missing = pc.is_null(values, nan_is_null=True)
    if spec.task == "single_label" and pa.types.is_integer(values.type):
        missing = pc.or_(missing, pc.fill_null(pc.equal(values, -1), False))
    return missing.to_numpy(zero_copy_only=False)


def encode_labels(
    values: pa.ChunkedArray, spec: "LabelSpec", where: Callable[[int], str], rows: np.ndarray
) -> np.ndarray:
    """Class ids (single-label) or floats (regression) for the labelled rows. `rows` maps each value back to its row
    index in the split; `where(index)` names that row in errors (its file's line when it has one)."""
    if spec.task == "regression":
        return pc.cast(values, pa.float32()).to_numpy(zero_copy_only=False).astype(np.float64)
    if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        ids = pc.index_in(values, value_set=pa.array(spec.names, values.type)).to_numpy(zero_copy_only=False)
        unknown = np.flatnonzero(np.isnan(ids)) if ids.dtype.kind == "f" else np.array([], dtype=int)
        if len(unknown):
            row = int(unknown[0])
            raise HFLightningError(
                f"unknown label {values[row].as_py()!r} in {where(int(rows[row]))}: the train split's labels are "
                f"{list(spec.names)}. Fix the row or add examples of that label to train."
            )
        return ids.astype(np.int64)
    numbers = values.to_numpy(zero_copy_only=False)
    ids = numbers.astype(np.int64)
    bad = np.flatnonzero((ids != numbers) | (ids < 0) | (ids >= spec.num_labels))
    if len(bad):
        row, value = int(bad[0]), numbers[bad[0]]
        if value != int(value):
            raise HFLightningError(
                f"label {value} in {where(int(rows[row]))} is not a class id "
                f"(expected an integer 0..{spec.num_labels - 1})."
            )
        raise HFLightningError(
            f"label {int(value)} in {where(int(rows[row]))} is out of range for {spec.num_labels} labels (ids "
            f"0..{spec.num_labels - 1}, names {list(spec.names)}). Fix the row, or check --data.label_column."
        )
    return ids


def distinct_values(values: pa.ChunkedArray) -> list:
    """The column's distinct non-missing values, as Python objects (bounded by the number of classes)."""
    present = pc.drop_null(pc.if_else(pc.is_nan(values), None, values) if pa.types.is_floating(values.type) else values)
    return pc.unique(present).to_pylist()
