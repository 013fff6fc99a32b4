"""`test_errors.csv`: the test rows the model got wrong, most confident mistakes first, with their texts.

Single-label: every row whose predicted label is not the gold one. Multi-label: every row whose predicted label set is
not the gold set. Regression has no wrong rows, only larger and smaller errors: the rows with the largest absolute
errors (`--report.regression_errors` of them), largest first.
"""

import csv
from pathlib import Path
from typing import Any

import torch

ID_COLUMNS = ("id", "idx")  # a row's own identifier, when the data has one


def error_rows(
    task: str,
    index: torch.Tensor,
    gold: torch.Tensor,
    predicted: torch.Tensor,
    probabilities: torch.Tensor,
    names: list[str],
    thresholds: tuple[float, ...] = (),
    regression_rows: int = 100,
) -> list[dict[str, Any]]:
    """One dict per wrong row (`index`, `gold`, `predicted`, then `confidence` and `margin`; regression: `error`),
    in the order the file lists them.

    Args:
        task: `single_label`, `multi_label` or `regression`.
        index: `(rows,)` each row's index in the split.
        gold: `(rows,)` class ids or values, `(rows, labels)` 0/1 for multi-label.
        predicted: The decisions, shaped as `gold` (`TransformerModule.decide`).
        probabilities: `(rows, labels)` calibrated probabilities (regression: the predicted values).
        names: Label names in id order.
        thresholds: Multi-label: the threshold of each label the decisions were made at.
        regression_rows: Regression: how many of the largest absolute errors to keep.
    """
    if task == "regression":
        error = predicted.double() - gold.double()
        order = torch.argsort(error.abs(), descending=True, stable=True)[:regression_rows]
        return [
            {"index": int(index[i]), "gold": float(gold[i]), "predicted": _round(predicted[i]),
             "error": _round(error[i])}
            for i in order.tolist()
        ]  # fmt: skip
    if task == "multi_label":
        decided, present = predicted.bool(), gold.bool()
        wrong_labels = decided != present
        # The probability of each decision: p for a label predicted, 1 - p for one left out. A row's confidence is
        # that of its most confident wrong decision, its margin how close the nearest wrong one came to flipping.
        sure = torch.where(decided, probabilities, 1 - probabilities)
        confidence = torch.where(wrong_labels, sure, -1.0).max(dim=1).values
        distance = (probabilities - probabilities.new_tensor(thresholds)).abs()
        margin = torch.where(wrong_labels, distance, 2.0).min(dim=1).values
        wrong = wrong_labels.any(dim=1)
    else:
        wrong = predicted != gold
        confidence = probabilities.gather(1, predicted.long()[:, None]).squeeze(1)
        top = probabilities.topk(min(2, probabilities.shape[1]), dim=1).values
        margin = top[:, 0] - top[:, -1]
    rows = torch.nonzero(wrong).flatten()
    rows = rows[torch.argsort(confidence[rows], descending=True, stable=True)]  # index order among equals
    return [
        {"index": int(index[i]), "gold": _label(gold[i], names), "predicted": _label(predicted[i], names),
         "confidence": _round(confidence[i]), "margin": _round(margin[i])}
        for i in rows.tolist()
    ]  # fmt: skip


def input_columns(source: Any, text_columns: list[str]) -> list[str]:
    """The columns of `source` (the split's cleaned rows; None: none) the file repeats: its id column, if any, and
    the text(s)."""
    if source is None:
        return []
    columns = [c for c in ID_COLUMNS if c in source.column_names][:1]
    return columns + [c for c in text_columns if c in source.column_names]


def header(task: str, columns: list[str]) -> list[str]:
    """The file's columns, with `input_columns` after the index."""
    scores = ["error"] if task == "regression" else ["confidence", "margin"]
    return ["index", *columns, "gold", "predicted", *scores]


def with_inputs(rows: list[dict[str, Any]], source: Any, columns: list[str]) -> list[dict[str, Any]]:
    """`rows` with each row's `columns` (`input_columns`), read from `source`: row i at position i."""
    if not columns or not rows:
        return rows
    picked = source.select([row["index"] for row in rows]).select_columns(columns).to_dict()
    return [
        {"index": row["index"], **{c: picked[c][i] for c in columns}, **{k: v for k, v in row.items() if k != "index"}}
        for i, row in enumerate(rows)
    ]


def write_errors(path: Path, rows: list[dict[str, Any]], fieldnames: list[str]) -> None:
    """The rows as CSV under `fieldnames` (`header`; the header alone when there are none)."""
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fieldnames)
        writer.writeheader()
        writer.writerows(rows)


def _label(value: torch.Tensor, names: list[str]) -> str:
    if value.ndim == 0:
        return names[int(value)]
    return ";".join(names[i] for i in torch.nonzero(value).flatten().tolist())  # as predictions.csv joins them


def _round(value: torch.Tensor) -> float:
    return round(float(value), 6)
