"""From raw rows to model inputs: drop or reject rows with empty text or no label, encode labels, clamp the length
limit to what the model accepts, tokenize, and check the token ids fit the model's embeddings."""

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset
from lightning.pytorch.utilities import rank_zero_warn
from transformers import PretrainedConfig, PreTrainedTokenizerBase

from modules.data import arrow_rows
from modules.data.contract import clamp_max_length
from modules.data.labels import LabelSpec, encode_label, is_missing_label
from modules.data.long_text import encode_windows
from modules.data.sources import file_line
from modules.errors import HFLightningError

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def where(index: int, name: str, source: str | None) -> str:
    """Row `index` (0-based, as loaded) as a user finds it: the line of its file when the split is one file with
    lines, else its 1-based row number."""
    line = file_line(source, index) if source else None
    if line is not None:
        return f"line {line} of {source}"
    return f"row {index + 1} of the {name} {'input' if name == 'predict' else 'split'} (counting rows from 1)"


def drop_blank_inputs(
    split: Dataset, text_columns: list[str], drop_invalid_rows: bool, source: str | None = None, name: str = "predict"
) -> Dataset:
    """Unlabelled inputs without text (a blank line, an empty cell) are skipped with a count, not read as ""."""
    blank = arrow_rows.blank_text_mask(split, text_columns)
    if not blank.any():
        return split
    if not drop_invalid_rows:
        raise HFLightningError(
            f"{where(int(np.argmax(blank)), name, source)} has an empty text ({int(blank.sum())} such rows). "
            "Fix the file, or set --data.drop_invalid_rows true to skip them."
        )
    print(f"Skipped {int(blank.sum())} of {len(split)} {name} inputs with an empty text.")
    return split.select(np.flatnonzero(~blank))


def raw_labels(split: Dataset, label_column: str | list[str]) -> list:
    """Each row's label as stored; for several 0/1 label columns, a {column: value} dict per row."""
    if isinstance(label_column, list):
        columns = {c: split[c][:] for c in label_column}
        return [dict(zip(columns, row)) for row in zip(*columns.values())]
    return split[label_column][:]


def clean(
    split: Dataset,
    name: str,
    spec: LabelSpec,
    text_columns: list[str],
    label_column: str | list[str],
    drop_invalid_rows: bool,
    source: str | None = None,
) -> tuple[Dataset, dict[str, int]]:
    """Drop (or reject) rows with empty text or a missing label; encode labels into a `labels` column. `source`: the
    split's one file, if it has one, so errors name its line.

    Returns the cleaned split and the rows dropped per reason (`empty_text`, `no_label`), for `check`'s report."""
    bad_text = arrow_rows.blank_text_mask(split, text_columns)
    stored = None if isinstance(label_column, list) else arrow_rows.column(split, label_column)
    if stored is not None and arrow_rows.is_scalar(stored) and spec.task != "multi_label":
        # Arrow compute: memory stays flat in the number of rows (no per-row Python objects).
        missing = arrow_rows.missing_label_mask(stored, spec)
        labels_as_stored = None
    else:
        labels_as_stored = raw_labels(split, label_column)
        missing = np.array([_missing(v, spec) for v in labels_as_stored], dtype=bool)
    bad = bad_text | missing
    n_bad = int(bad.sum())
    if n_bad and not drop_invalid_rows:
        first = int(np.argmax(bad))
        kind = "an empty text" if bad_text[first] else "no label"
        raise HFLightningError(
            f"{where(first, name, source)} has {kind} ({n_bad} such rows in the {name} split). "
            "Fix the data, or set --data.drop_invalid_rows true to drop them."
        )
    keep = np.flatnonzero(~bad)
    if labels_as_stored is None:
        labels = arrow_rows.encode_labels(stored.take(pa.array(keep)), spec, lambda row: where(row, name, source), keep)
    else:
        labels = [_encode(labels_as_stored[i], spec, i, name, source) for i in keep]
    if n_bad:
        rank_zero_warn(
            f"Dropped {n_bad} of {len(split)} rows of the {name} split: {int(bad_text.sum())} with empty text, "
            f"{int(missing.sum())} without a label (--data.drop_invalid_rows false makes this an error)."
        )
        split = split.select(keep)
        if len(split) == 0:
            raise HFLightningError(f"every row of the {name} split has an empty text or no label.")
    dropped = {"empty_text": int(bad_text.sum()), "no_label": int((missing & ~bad_text).sum())}
    if "labels" in split.column_names:  # the label column itself is named `labels` (GoEmotions): replaced, encoded
        split = split.remove_columns("labels")
    return split.add_column("labels", labels), dropped


def _encode(value: object, spec: LabelSpec, index: int, name: str, source: str | None) -> int | float | list[float]:
    try:
        return encode_label(value, spec, "")
    except HFLightningError:
        # Finding the row's line reads the file: done only for the row that fails, whose error it then names.
        return encode_label(value, spec, where(index, name, source))


def _missing(value: object, spec: LabelSpec) -> bool:
    if isinstance(value, dict):
        return any(is_missing_label(v, spec) for v in value.values())
    return is_missing_label(value, spec)


def effective_max_length(requested: int, tokenizer: PreTrainedTokenizerBase, config: PretrainedConfig) -> int:
    """`requested`, clamped (with a warning) to the longest input the tokenizer and the model accept: the one rule,
    `clamp_max_length`, which the export and the server apply too."""
    limit = clamp_max_length(requested, config, tokenizer.model_max_length)
    if limit < requested:
        rank_zero_warn(f"--data.max_length {requested} is longer than the model accepts; using {limit}.")
    return limit


def check_token_ids(
    split: Dataset, name: str, config: PretrainedConfig, tokenizer_name_or_path: str, model_name_or_path: str
) -> None:
    """A tokenizer bigger than the model's embedding table gives ids the model cannot look up: an "index out of range"
    deep in the first step (transformers#13239). Checked on the ids the data really produced."""
    vocab_size = getattr(config, "vocab_size", None)
    if not isinstance(vocab_size, int) or len(split) == 0:
        return
    ids = arrow_rows.column(split, "input_ids")
    maxima = (pc.max(pc.list_flatten(part)).as_py() for _, part in arrow_rows.chunks(ids))
    largest = max((m for m in maxima if m is not None), default=None)
    if largest is not None and largest >= vocab_size:
        raise HFLightningError(
            f"the tokenizer {tokenizer_name_or_path} produced token id {largest} in the {name} split, but the "
            f"model {model_name_or_path} has only {vocab_size} token embeddings (vocab_size). Use the "
            "tokenizer saved with the model (leave --data.tokenizer_name_or_path unset) or a model trained with "
            "this tokenizer."
        )


def tokenize(
    split: Dataset,
    name: str,
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    text_column: str,
    text_pair_column: str | None,
    keep_labels: bool,
    num_proc: int | None,
    stride: int | None = None,
) -> Dataset:
    """Model inputs, each row's `index` in the split and its token `length` (for length grouping); `labels` kept.

    With `stride` (`--data.long_text chunk`) a text longer than `max_length` tokens becomes several rows, windows
    overlapping by `stride` tokens, each with its document's `index` and `labels` (modules/data/long_text.py).
    """

    def encode(batch: dict, indices: list[int]) -> dict:
        pairs = batch[text_pair_column] if text_pair_column else None
        if stride is None:
            encoded = tokenizer(batch[text_column], pairs, truncation=True, max_length=max_length)
            keep = {k: v for k, v in encoded.items() if k in MODEL_INPUTS}
            return {**keep, "index": indices, "length": [len(ids) for ids in encoded["input_ids"]]}
        windows = encode_windows(tokenizer, batch[text_column], max_length, stride, pairs)
        document = windows.pop("document")
        keep = {k: v for k, v in windows.items() if k in MODEL_INPUTS}
        extra = {"labels": [batch["labels"][d] for d in document]} if keep_labels else {}
        lengths = [len(ids) for ids in keep["input_ids"]]
        return {**keep, **extra, "index": [indices[d] for d in document], "length": lengths}

    keep_columns = ["labels"] if keep_labels and stride is None else []
    return split.map(
        encode,
        batched=True,
        with_indices=True,
        remove_columns=[c for c in split.column_names if c not in keep_columns],
        num_proc=num_proc,
        desc=f"Tokenizing {name}" + (" into windows" if stride is not None else ""),
    )


def check_unknown_tokens(
    encoded: Dataset, texts: Sequence[str], tokenizer: PreTrainedTokenizerBase, threshold: float = 0.05
) -> float:
    """Warn when more than `threshold` of the training tokens are the tokenizer's unknown token: the model then sees
    mostly `[UNK]` and stays at chance, with nothing else saying why. Returns the rate."""
    unk = tokenizer.unk_token_id
    if unk is None or len(encoded) == 0:
        return 0.0
    special = [i for i in tokenizer.all_special_ids if i != unk]
    total = unknown = 0
    for _, part in arrow_rows.chunks(arrow_rows.column(encoded, "input_ids")):
        ids = pc.list_flatten(part)
        n_special = pc.sum(pc.is_in(ids, value_set=pa.array(special, ids.type))).as_py() or 0 if special else 0
        total += len(ids) - n_special
        unknown += pc.sum(pc.equal(ids, unk)).as_py() or 0
    rate = unknown / max(total, 1)
    if rate > threshold:
        row = next(i for i, row_ids in enumerate(encoded["input_ids"]) if unk in row_ids)
        text = texts[encoded[row].get("index", row)]  # a window's document with --data.long_text chunk
        rank_zero_warn(
            f"{rate:.0%} of the training tokens are unknown to the tokenizer ({tokenizer.unk_token}), e.g. in "
            f"{text[:80]!r} -> {tokenizer.decode(encoded[row]['input_ids'], skip_special_tokens=False)[:80]!r}. "
            "The model cannot learn from those words: use a tokenizer (model) made for this language and text."
        )
    return rate
