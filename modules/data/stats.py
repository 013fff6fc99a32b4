"""What the data looks like once cleaned and tokenized: rows, drops, labels and token lengths, for `check`'s report."""

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset

from modules.data.arrow_rows import chunks, column, label_counts
from modules.data.labels import LabelSpec


def length_stats(lengths: list[int] | np.ndarray, max_length: int) -> dict:
    """p50/p95/max token lengths and the share of rows at `max_length` (the tokenizer cut them, or they are exactly
    that long: the two cannot be told apart once truncated)."""
    values = np.asarray(lengths)
    if values.size == 0:
        return {"p50": 0, "p95": 0, "max": 0, "truncated_share": 0.0}
    return {
        "p50": int(np.percentile(values, 50)),
        "p95": int(np.percentile(values, 95)),
        "max": int(values.max()),
        "truncated_share": round(reached_share(values, max_length), 4),
    }


def reached_share(lengths: np.ndarray, max_length: int) -> float:
    """The share of rows whose tokenized length is `max_length`: cut there, or exactly that long (once truncated,
    the two cannot be told apart)."""
    return float((lengths >= max_length).mean()) if len(lengths) else 0.0


def pair_sides(token_type_ids: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """Tokens of the first and the second text of each pair (their special tokens included), from `token_type_ids`
    (1 marks the second text), read from Arrow a slice at a time."""
    firsts, seconds = [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=np.int64)]
    for _, part in chunks(token_type_ids):
        totals = pc.list_value_length(part).to_numpy().astype(np.int64)
        running = np.concatenate([[0], np.cumsum(pc.list_flatten(part).to_numpy().astype(np.int64))])
        ends = np.cumsum(totals)
        second = running[ends] - running[ends - totals]  # the ones in each row
        firsts.append(totals - second)
        seconds.append(second)
    return np.concatenate(firsts), np.concatenate(seconds)


def label_stats(labels: pa.ChunkedArray, spec: LabelSpec) -> dict:
    """Rows per label name (positives per label for multi-label) and the imbalance ratio (largest / smallest count);
    regression targets: their range."""
    if spec.task == "regression":
        values = labels.to_numpy().astype(float)
        return {"min": float(values.min()), "max": float(values.max()), "mean": round(float(values.mean()), 4)}
    counts = {name: int(c) for name, c in zip(spec.names, label_counts(labels, spec))}
    smallest = min(counts.values())
    ratio = round(max(counts.values()) / smallest, 2) if smallest else None  # None: a label never occurs
    return {"counts": counts, "imbalance_ratio": ratio}


def split_stats(dataset: Dataset, max_length: int, spec: LabelSpec | None, pairs: bool) -> dict:
    """The report of one tokenized split: rows, token lengths (pairs: per side too), labels."""
    report = {"rows": len(dataset), "tokens": length_stats(column(dataset, "length").to_numpy(), max_length)}
    if pairs and "token_type_ids" in dataset.column_names:
        first, second = pair_sides(column(dataset, "token_type_ids"))
        report["tokens_first"] = length_stats(first, max_length)
        report["tokens_second"] = length_stats(second, max_length)
        del report["tokens_first"]["truncated_share"], report["tokens_second"]["truncated_share"]
    if spec is not None and "labels" in dataset.column_names and len(dataset):
        report["labels"] = label_stats(column(dataset, "labels"), spec)
    return report


def data_stats(datamodule) -> dict:
    """The report of every split a set-up `HFDataModule` holds, with the rows cleaning dropped and why."""
    max_length = datamodule.effective_max_length
    pairs = datamodule.text_pair_column is not None
    splits = {
        name: {
            **split_stats(dataset, max_length, datamodule.label_spec, pairs),
            "dropped": datamodule.dropped_rows.get(name, {}),
        }
        for name, dataset in datamodule.datasets.items()
    }
    spec = datamodule.label_spec
    return {
        "task": spec.task if spec else None,
        "label_names": list(spec.names) if spec else None,
        "max_length": max_length,
        "splits": splits,
    }
