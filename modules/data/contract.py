"""What the data tells the model and the outputs, handed over at one point: `DataContract`; and `clamp_max_length`,
the one rule that limits `max_length` to what a tokenizer and a model accept.

The seam, in the order Lightning runs it:

1. `HFDataModule.setup` (modules/data/datamodule.py) builds the stage's splits and freezes what other rooms need
   into `datamodule.contract`.
2. `TransformerModule.setup` (modules/model/module.py) reads `trainer.datamodule.contract`, once, and calls
   `connect(contract)`: the only read of the data through the trainer.
3. Everything later reads `pl_module.data_contract`: the model (labels, the tokenizer's pad id, class weights,
   windowed evaluation), the prediction writer (`predict_raw`, `long_text`) and the export (`dataset`,
   `data_files`, `example_text`, `tokenizer_name_or_path`).

The clamped `max_length` is also what the datamodule's checkpoint state saves (modules/runs/record.py) and what the
export writes; `serve` clamps with the same function. This file imports nothing heavy (no lightning, datasets,
transformers or torch), so the server can use it.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from datasets import Dataset
    from transformers import PreTrainedTokenizerBase

    from modules.data.labels import LabelSpec

# Tokenizers that know no limit report `int(1e30)` as their `model_max_length`.
UNKNOWN_LENGTH = 1_000_000
# The length a model with no known limit, asked for no length, is served at.
FALLBACK_MAX_LENGTH = 512


def model_length_limit(config: Any) -> int | None:
    """The longest input a model's position embeddings take (`max_position_embeddings`, GPT-2's `n_positions`), or
    None when its config names no limit. `config`: a transformers config, or its `to_dict()`."""
    for attribute in ("max_position_embeddings", "n_positions"):
        value = config.get(attribute) if isinstance(config, Mapping) else getattr(config, attribute, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def clamp_max_length(requested: int | None, config: Any = None, tokenizer_max_length: int | None = None) -> int:
    """`requested` tokens, cut to the longest input the model (`config`) and the tokenizer accept.

    None or an unknown length (a tokenizer's `int(1e30)`) asks for the limit itself, `FALLBACK_MAX_LENGTH` when
    neither the model nor the tokenizer names one. Pure: the caller warns when the result is shorter.
    """
    limits = [model_length_limit(config) if config is not None else None, tokenizer_max_length]
    known = [limit for limit in limits if limit is not None and 0 < limit < UNKNOWN_LENGTH]
    limit = min(known) if known else None
    if requested is None or requested >= UNKNOWN_LENGTH:
        return limit or FALLBACK_MAX_LENGTH
    return min(requested, limit) if limit is not None else requested


@dataclass(frozen=True)
class DataContract:
    """What the data tells the model and the outputs, for one stage; built by `HFDataModule.setup`.

    Attributes:
        label_spec: The task and label names the data gives; None when it has no train split (the checkpoint's
            labels apply then).
        tokenizer: The tokenizer the splits were encoded with (the model reads its pad id).
        tokenizer_name_or_path: Where that tokenizer came from (the export saves it).
        max_length: The longest input in tokens, after `clamp_max_length`: what the splits were cut or windowed at.
        long_text: `truncate` or `chunk` (windows, scored per document by evaluation and predict).
        stride: Tokens consecutive windows share with `chunk`; None when truncating.
        label_counts: Train rows per label (positives per label for multi-label), for balanced class weights; None
            without a train split or when it is streamed.
        train_rows: Rows of the train split (windows with `chunk`); 0 without one or when it is streamed.
        predict_raw: The rows `predict` runs on, as read (their columns come back with each prediction).
        raw_splits: Split name (`train`, `validation`, `test`) -> its rows as cleaned (Arrow, memory-mapped), a row's
            `index` in the tokenized split is its position here: the texts of the test report, of label issues and
            of the teacher's pass in distillation (modules/distill).
        text_columns: The input column, and the pair's second column when there is one (`--data.text_column`,
            `--data.text_pair_column`): what the report and label issues show of a row.
        dataset: `--data.dataset`, for the run's summary and model card.
        data_files: `--data.data_files`, for the same.
        example_text: A validation (else train) text, the usage example of the model card.
    """

    label_spec: "LabelSpec | None"
    tokenizer: "PreTrainedTokenizerBase"
    tokenizer_name_or_path: str
    max_length: int
    long_text: Literal["truncate", "chunk"] = "truncate"
    stride: int | None = None
    label_counts: list[float] | None = None
    train_rows: int = 0
    predict_raw: "Dataset | None" = None
    raw_splits: "Mapping[str, Dataset]" = field(default_factory=dict)
    text_columns: tuple[str, ...] = ("text",)
    dataset: str | None = None
    data_files: str | list[str] | dict[str, str | list[str]] | None = None
    example_text: str | None = None
