"""From sources to tokenized splits: what `HFDataModule.prepare_data` / `setup` build for a stage.

`build` loads the splits a stage needs, checks their columns, cleans and encodes labels, tokenizes (cached) and
checks token ids; `build_streaming` does the same for a streamed `fit`, whose train split stays a stream (opened
per rank by the datamodule's `train_dataloader`). Both return a `BuiltData`, which `setup` keeps, and assign nothing.
"""

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from datasets import Dataset, DatasetDict
from transformers import AutoConfig

from modules.data import arrow_rows, preprocess
from modules.data.labels import LabelSpec, infer_label_spec
from modules.data.long_text import warn_truncated, window_stride
from modules.data.sources import SPLIT_ALIASES, load_splits, load_text_file, load_tokenizer, select_splits
from modules.errors import HFLightningError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from modules.data.datamodule import HFDataModule

STAGE_SPLITS = {
    "fit": ("train", "validation"),
    "validate": ("validation",),
    "test": ("test",),
    "predict": ("predict",),
}


@dataclass(frozen=True)
class BuiltData:
    """What `build` makes for a stage: the tokenizer, the labels, the tokenized splits and the data report.

    Attributes:
        tokenizer: The loaded tokenizer.
        label_spec: Task and label names (None: no train split and no checkpoint labels yet).
        label_counts: Train rows per label; None without a (whole) train split.
        datasets: Split name -> tokenized rows (windows with `--data.long_text chunk`).
        predict_raw: The predict rows as read, blank ones dropped.
        raw_splits: Split -> the labelled rows as cleaned, in the order of their `index` (the test report's, label
            issues' and the distillation teacher's texts).
        dropped_rows: Split -> reason -> rows dropped by cleaning, for `check`'s report.
        max_length: `--data.max_length` after `clamp_max_length`.
        stride: Tokens windows share with `--data.long_text chunk`; None when truncating.
        windowed_texts: Split -> texts before windowing, with `--data.long_text chunk`.
        example_text: A validation (else train) text.
    """

    tokenizer: "PreTrainedTokenizerBase"
    label_spec: LabelSpec | None
    max_length: int
    datasets: dict[str, Dataset] = field(default_factory=dict)
    label_counts: list[float] | None = None
    predict_raw: Dataset | None = None
    raw_splits: dict[str, Dataset] = field(default_factory=dict)
    dropped_rows: dict[str, dict[str, int]] = field(default_factory=dict)
    stride: int | None = None
    windowed_texts: dict[str, int] = field(default_factory=dict)
    example_text: str | None = None


def build(dm: "HFDataModule", stage: str) -> BuiltData:
    """The tokenizer, label spec, tokenized splits and data report for `stage`, from `dm`'s settings."""
    tokenizer = load_tokenizer(dm.tokenizer_name_or_path)
    raw = load_splits(dm.dataset, dm.dataset_config, dm.data_files, dm.predict_file, dm.predict_split, dm.text_column)
    spec = label_spec(dm, raw)
    splits = select_splits(raw, STAGE_SPLITS[stage], dm.validation_size, dm.seed)
    for name, split in splits.items():
        check_columns(dm, split, name)
    datasets, label_counts, predict_raw, dropped, texts, raw_splits = {}, None, None, {}, {}, {}
    model_config = AutoConfig.from_pretrained(dm.model_name_or_path)
    max_length = preprocess.effective_max_length(dm.max_length, tokenizer, model_config)
    stride = window_stride(dm.stride, max_length) if dm.long_text == "chunk" else None
    for name, split in splits.items():
        labeled = name != "predict"
        if not labeled:
            split = predict_raw = preprocess.drop_blank_inputs(
                split, text_columns(dm), dm.drop_invalid_rows, source_file(dm, name, raw)
            )
        elif spec is None:
            raise HFLightningError(
                f"the {name} split has labels but no train split to learn label names from: add one, or pass "
                "--ckpt_path to take the labels from a trained checkpoint."
            )
        else:
            split, dropped[name] = preprocess.clean(
                split,
                name,
                spec,
                text_columns(dm),
                dm.label_column,
                dm.drop_invalid_rows,
                source_file(dm, name, raw),
            )
            raw_splits[name] = split
        datasets[name] = preprocess.tokenize(
            split,
            name,
            tokenizer,
            max_length,
            dm.text_column,
            dm.text_pair_column,
            keep_labels=labeled,
            num_proc=dm.preprocessing_num_workers,
            stride=stride,
        )
        arrow_rows.release_mapped_pages()  # the pages tokenization read and wrote
        preprocess.check_token_ids(datasets[name], name, model_config, dm.tokenizer_name_or_path, dm.model_name_or_path)
        if stride is None:
            warn_truncated(arrow_rows.column(datasets[name], "length").to_numpy(), max_length, name)
        else:
            texts[name] = len(split)
        if name == "train":
            preprocess.check_unknown_tokens(datasets[name], split[dm.text_column], tokenizer)
            label_counts = arrow_rows.label_counts(arrow_rows.column(datasets[name], "labels"), spec)
    return BuiltData(
        tokenizer=tokenizer,
        label_spec=spec,
        max_length=max_length,
        datasets=datasets,
        label_counts=label_counts,
        predict_raw=predict_raw,
        raw_splits=raw_splits,
        dropped_rows=dropped,
        stride=stride,
        windowed_texts=texts,
        example_text=next(
            (splits[s][dm.text_column][0] for s in ("validation", "train") if s in splits and len(splits[s])),
            None,
        ),
    )


def build_streaming(dm: "HFDataModule") -> BuiltData:
    """`build` for a streamed `fit`: validation is loaded whole and tokenized; train is left to the stream."""
    tokenizer = load_tokenizer(dm.tokenizer_name_or_path)
    model_config = AutoConfig.from_pretrained(dm.model_name_or_path)
    max_length = preprocess.effective_max_length(dm.max_length, tokenizer, model_config)
    spec = LabelSpec("single_label", tuple(dm.label_names))
    raw = load_splits(None, None, {"validation": dm.data_files["validation"]}, None, "test", dm.text_column)
    split = raw["validation"]
    check_columns(dm, split, "validation")
    split, dropped = preprocess.clean(
        split, "validation", spec, text_columns(dm), dm.label_column, True, source_file(dm, "validation", raw)
    )
    validation = preprocess.tokenize(
        split, "validation", tokenizer, max_length, dm.text_column, dm.text_pair_column, True, None
    )
    return BuiltData(
        tokenizer=tokenizer,
        label_spec=spec,
        max_length=max_length,
        datasets={"validation": validation},
        raw_splits={"validation": split},
        dropped_rows={"validation": dropped},
        example_text=split[dm.text_column][0] if len(split) else None,
    )


def build_unlabeled(dm: "HFDataModule", source: str | Dataset, offset: int) -> tuple[Dataset, Dataset]:
    """Unlabelled rows (a text file's, `--distill.unlabeled_file`, or a dataset of the text columns) as read (blank
    ones dropped) and tokenized as the train split was, each with a placeholder label and `index` counted on from
    `offset` (past the train split's rows: a loss tells them apart by that). Both on disk, memory-mapped: the file
    may be larger than memory."""
    train = dm.datasets["train"]
    path = source if isinstance(source, str) else None
    rows = load_text_file(source, dm.text_column) if path else source
    check_columns(dm, rows, "unlabeled")
    rows = preprocess.drop_blank_inputs(rows, text_columns(dm), dm.drop_invalid_rows, path, name="unlabeled")
    tokenized = preprocess.tokenize(
        rows,
        "unlabeled",
        dm.tokenizer,
        dm.effective_max_length,
        dm.text_column,
        dm.text_pair_column,
        keep_labels=False,
        num_proc=dm.preprocessing_num_workers,
        stride=dm.contract.stride,
    )
    spec = dm.label_spec
    placeholder = [0.0] * spec.num_labels if spec.task == "multi_label" else 0.0 if spec.task == "regression" else 0

    def mark(batch: dict) -> dict:
        return {"index": [offset + i for i in batch["index"]], "labels": [placeholder] * len(batch["index"])}

    tokenized = tokenized.map(mark, batched=True, features=train.features, desc="Marking unlabeled rows")
    return rows, tokenized


def text_columns(dm: "HFDataModule") -> list[str]:
    return [dm.text_column] + ([dm.text_pair_column] if dm.text_pair_column else [])


def check_columns(dm: "HFDataModule", split: Dataset, name: str) -> None:
    """A clear error naming the flag when the split lacks a text or label column."""
    needed = [("--data.text_column", dm.text_column)]
    if dm.text_pair_column:
        needed.append(("--data.text_pair_column", dm.text_pair_column))
    if name not in ("predict", "unlabeled"):
        labels = dm.label_column if isinstance(dm.label_column, list) else [dm.label_column]
        needed += [("--data.label_column", column) for column in labels]
    for flag, column in needed:
        if column not in split.column_names:
            raise HFLightningError(
                f"the {name} split has no column {column!r} (set by {flag}); its columns are {split.column_names}."
            )


def label_spec(dm: "HFDataModule", raw: DatasetDict) -> LabelSpec | None:
    """The task and label names: from the train split, else from the model's checkpoint."""
    if "train" not in raw:
        return model_label_spec(dm)
    check_columns(dm, raw["train"], "train")
    return infer_label_spec(raw["train"], dm.label_column, dm.task)


def model_label_spec(dm: "HFDataModule") -> LabelSpec | None:
    """No train split (`test --ckpt_path X` on a file): the task and labels the model holds from its checkpoint."""
    model = dm.trainer.lightning_module if dm.trainer else None
    task = getattr(model, "task", None)
    names = model.hparams.get("label_names") if model is not None else None
    return LabelSpec(task, tuple(names)) if task and names else None


def source_file(dm: "HFDataModule", name: str, raw: DatasetDict) -> str | None:
    """The one file a split was read from, row for row (so errors can name its lines); None for several files,
    folders, Hub datasets and a validation split carved out of train."""
    if name == "predict":
        return dm.predict_file
    if name in ("train", "validation") and "validation" not in raw:
        return None  # rows shuffled by the carve-out
    files = dm.data_files if isinstance(dm.data_files, dict) else {}
    file = next((v for k, v in files.items() if SPLIT_ALIASES.get(k, k) == name), None)
    if isinstance(file, list) and len(file) == 1:
        file = file[0]
    return file if isinstance(file, str) and os.path.isfile(os.path.expanduser(file)) else None
