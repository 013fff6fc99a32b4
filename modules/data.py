"""HFDataModule: load a Hub dataset or local files, check and encode labels, tokenize once (cached), batch by length."""

import glob
import os
import re
from collections import Counter
from pathlib import Path
from typing import Literal

import pyarrow.compute as pc
import torch
from datasets import Dataset, DatasetDict, load_dataset
from datasets.exceptions import DatasetGenerationError
from lightning.pytorch import LightningDataModule
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch.utils.data import DataLoader
from transformers import AutoConfig, AutoTokenizer, PretrainedConfig, PreTrainedTokenizerBase

from modules.collate import PaddingCollator
from modules.errors import HFLightningError
from modules.hub import check_dataset_source, check_model_source
from modules.labels import LabelSpec, encode_label, infer_label_spec, is_missing_label
from modules.sampler import LengthGroupedSampler, ResumableDataLoader

# Builder that reads each file extension; `.tsv` is read by the csv builder with a tab separator.
_BUILDERS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet", ".txt": "text"}
# Common spellings of split names in user files, mapped to the names this module uses.
_SPLIT_ALIASES = {"valid": "validation", "val": "validation", "dev": "validation", "eval": "validation"}
_STAGE_SPLITS = {
    "fit": ("train", "validation"),
    "validate": ("validation",),
    "test": ("test",),
    "predict": ("predict",),
}


class HFDataModule(LightningDataModule):
    """Text classification data from the Hugging Face Hub or local files, tokenized for the model being trained.

    `prepare_data` only fills the caches (dataset, tokenizer, tokenized splits) and keeps no state; `setup` runs on
    every process and reads from those caches, so multi-process training is correct by construction.
    """

    def __init__(
        self,
        dataset: str | None = None,
        dataset_config: str | None = None,
        data_files: str | list[str] | dict[str, str | list[str]] | None = None,
        text_column: str = "text",
        text_pair_column: str | None = None,
        label_column: str | list[str] = "label",
        task: Literal["auto", "single_label", "multi_label", "regression"] = "auto",
        model_name_or_path: str = "bert-base-uncased",
        tokenizer_name_or_path: str | None = None,
        max_length: int = 128,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        validation_size: float = 0.1,
        seed: int = 42,
        group_by_length: bool = True,
        pad_to_multiple_of: int | None = None,
        drop_invalid_rows: bool = True,
        predict_split: str = "test",
        predict_file: str | None = None,
        preprocessing_num_workers: int | None = None,
    ) -> None:
        """
        Args:
            dataset: What `datasets.load_dataset` takes as its path: a Hub name (`rotten_tomatoes`), a local folder
                in Hub layout, or a builder (`csv`, `json`, `parquet`) used with `data_files`. Inferred from the
                file extension when only `data_files` is given.
            dataset_config: The dataset's configuration name (e.g. `sst2` for `glue`).
            data_files: One path, a list of paths, or a split->path mapping such as
                `{train: train.csv, validation: dev.csv, test: test.csv}`. `.tsv` is read tab-separated, `.jsonl`
                as JSON lines; a folder stands for the files inside it.
            text_column: Column holding the text (the first text of a pair).
            text_pair_column: Column holding the second text of a sentence pair; None for single texts.
            label_column: Column holding the label, or a list of 0/1 columns (one per label) for multi-label data.
            task: `auto` detects it from the labels: ClassLabel/int/string -> single_label, a list per row or several
                columns -> multi_label, non-integer floats -> regression. Set it to override the detection.
            model_name_or_path: Model whose tokenizer and length limit are used; linked to
                `--model.model_name_or_path` by the CLI.
            tokenizer_name_or_path: A different tokenizer to load; None follows `model_name_or_path`.
            max_length: Longest tokenized input; longer inputs are truncated (pairs: longest first). Clamped to what
                the model accepts.
            batch_size: Training rows per batch on each process.
            eval_batch_size: Rows per batch for validation, test and predict; None uses `batch_size`.
            num_workers: DataLoader worker processes.
            validation_size: Fraction of train carved out (seeded) as validation when the data has no validation split.
            seed: Seed of the validation carve-out and of the training order.
            group_by_length: Batch rows of similar length together in training (less padding, faster steps); False
                gives plain shuffled batches.
            pad_to_multiple_of: Pad each batch's length up to a multiple of this; None picks 8 on GPUs (tensor cores)
                and exact lengths on CPUs.
            drop_invalid_rows: Drop rows with empty text or a missing label (logging how many); False fails instead.
            predict_split: Split that `predict` runs on when `predict_file` is not set.
            predict_file: A CSV/TSV/JSON(L)/Parquet file, or plain text with one input per line, to predict on.
            preprocessing_num_workers: Processes for tokenization (`Dataset.map(num_proc=...)`); None tokenizes in
                the main process.
        """
        super().__init__()
        self.save_hyperparameters()
        self.dataset = dataset
        self.dataset_config = dataset_config
        self.data_files = data_files
        self.text_column = text_column
        self.text_pair_column = text_pair_column
        self.label_column = label_column
        self.task = task
        self.model_name_or_path = model_name_or_path
        self.tokenizer_name_or_path = tokenizer_name_or_path or model_name_or_path
        self.max_length = max_length
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.validation_size = validation_size
        self.seed = seed
        self.group_by_length = group_by_length
        self.pad_to_multiple_of = pad_to_multiple_of
        self.drop_invalid_rows = drop_invalid_rows
        self.predict_split = predict_split
        self.predict_file = predict_file
        self.preprocessing_num_workers = preprocessing_num_workers
        # Set by `setup`:
        self.tokenizer: PreTrainedTokenizerBase | None = None
        self.label_spec: LabelSpec | None = None
        self.label_counts: list[float] | None = None
        self.datasets: dict[str, Dataset] = {}
        self.predict_raw: Dataset | None = None
        if self.dataset is None and self.data_files is None:
            raise HFLightningError("no data: pass --data.dataset (a Hub name or local folder) or --data.data_files.")
        if num_workers > 0:
            # Rust tokenizers' thread pool and forked workers can deadlock (transformers#5486).
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    # ----------------------------------------------------------------------------------------------- lifecycle
    def prepare_data(self) -> None:
        # Runs on one process per node: fill the dataset, tokenizer and tokenization caches; assign nothing.
        self._build(self.trainer.state.fn.value if self.trainer else "fit")

    def setup(self, stage: str) -> None:
        built = self._build(stage)
        self.tokenizer = built["tokenizer"]
        self.label_spec = built["label_spec"]
        self.label_counts = built["label_counts"]
        self.datasets = built["datasets"]
        self.predict_raw = built["predict_raw"]

    def check_sources(self) -> None:
        """Raise a clear error, before any download or tokenization, for names and files that cannot be loaded."""
        check_model_source(
            self.tokenizer_name_or_path,
            "--data.tokenizer_name_or_path"
            if self.tokenizer_name_or_path != self.model_name_or_path
            else "--model.model_name_or_path",
        )
        if self.dataset is not None:
            check_dataset_source(self.dataset)
        for path in self._file_list(self.data_files) + ([self.predict_file] if self.predict_file else []):
            if not glob.glob(os.path.expanduser(path)):
                raise HFLightningError(
                    f"data file {path!r} does not exist. Check --data.data_files / --data.predict_file."
                )

    def _build(self, stage: str) -> dict:
        self.check_sources()
        tokenizer = self._load_tokenizer()
        raw = self._load_raw()
        wanted = _STAGE_SPLITS[stage]
        label_spec = self._label_spec(raw)
        splits = self._select_splits(raw, wanted)
        datasets, label_counts, predict_raw = {}, None, None
        model_config = AutoConfig.from_pretrained(self.model_name_or_path)
        max_length = self._effective_max_length(tokenizer, model_config)
        for name, split in splits.items():
            labeled = name != "predict"
            if not labeled:
                split = self._fill_missing_text(split)
                predict_raw = split
            split = self._clean(split, name, label_spec if labeled else None)
            if labeled and label_spec is None:
                raise HFLightningError(f"the {name} split has labels but no train split to learn label names from.")
            datasets[name] = self._tokenize(split, name, tokenizer, max_length, label_spec if labeled else None)
            self._check_token_ids(datasets[name], name, model_config)
            if name == "train":
                label_counts = _label_counts(datasets[name]["labels"][:], label_spec)
        return {
            "tokenizer": tokenizer,
            "label_spec": label_spec,
            "label_counts": label_counts,
            "datasets": datasets,
            "predict_raw": predict_raw,
        }

    # ------------------------------------------------------------------------------------------------- loading
    def _load_tokenizer(self) -> PreTrainedTokenizerBase:
        tokenizer = AutoTokenizer.from_pretrained(self.tokenizer_name_or_path)
        if tokenizer.pad_token is None:
            # Decoder-only models (GPT-2, Llama) ship without a pad token; padding with EOS is the usual fix.
            tokenizer.pad_token = tokenizer.eos_token
        return tokenizer

    @staticmethod
    def _file_list(data_files: object) -> list[str]:
        if data_files is None:
            return []
        if isinstance(data_files, str):
            return [data_files]
        if isinstance(data_files, dict):
            return [f for v in data_files.values() for f in HFDataModule._file_list(v)]
        return [f for v in data_files for f in HFDataModule._file_list(v)]

    @staticmethod
    def _expand_folders(data_files: object) -> object:
        # A folder stands for the data files inside it.
        if isinstance(data_files, str):
            path = Path(data_files).expanduser()
            if path.is_dir():
                return sorted(str(p) for p in path.iterdir() if p.suffix in _BUILDERS)
            return data_files
        if isinstance(data_files, dict):
            return {k: HFDataModule._expand_folders(v) for k, v in data_files.items()}
        return [f for v in data_files for f in _as_list(HFDataModule._expand_folders(v))]

    def _load_files(self, builder: str | None, data_files: object, config: str | None = None) -> DatasetDict:
        files = self._file_list(data_files)
        suffixes = {Path(f).suffix.lower() for f in files}
        builder = builder or _builder_for(suffixes)
        kwargs = {}
        if builder == "csv" and suffixes == {".tsv"}:
            kwargs["sep"] = "\t"
        try:
            return load_dataset(builder, config, data_files=data_files, **kwargs)
        except DatasetGenerationError as error:
            cause = error.__cause__ or error.__context__ or error
            raise HFLightningError(f"could not parse {_describe(files)}: {cause}".strip()) from None
        except ValueError as error:
            empty = re.search(r'Instruction "(\w+)" corresponds to no data', str(error))
            if empty:
                raise HFLightningError(
                    f"the {empty.group(1)} split is empty: check its file in --data.data_files."
                ) from None
            raise

    def _load_raw(self) -> DatasetDict:
        data_files = self._expand_folders(self.data_files) if self.data_files is not None else None
        if self.dataset is None or self.data_files is not None:
            raw = self._load_files(self.dataset, data_files, self.dataset_config)
        else:
            try:
                raw = load_dataset(self.dataset, self.dataset_config)
            except DatasetGenerationError as error:
                cause = error.__cause__ or error.__context__ or error
                raise HFLightningError(f"could not parse the files of {self.dataset!r}: {cause}") from None
            except ValueError as error:
                if "config" in str(error).lower():
                    raise HFLightningError(f"--data.dataset_config: {error}") from None
                raise
        if isinstance(raw, Dataset):
            raw = DatasetDict(train=raw)
        raw = DatasetDict({_SPLIT_ALIASES.get(name, name): split for name, split in raw.items()})
        if self.predict_file:
            predict = self._load_files(None, self.predict_file)["train"]
            if list(predict.column_names) == ["text"] and self.text_column != "text":
                predict = predict.rename_column("text", self.text_column)  # plain-text file: one input per line
            raw["predict"] = predict
        elif self.predict_split in raw:
            raw["predict"] = raw[self.predict_split]
        return raw

    def _select_splits(self, raw: DatasetDict, wanted: tuple[str, ...]) -> dict[str, Dataset]:
        splits = dict(raw)
        if "validation" in wanted and "validation" not in splits and "train" in splits:
            carved = splits["train"].train_test_split(test_size=self.validation_size, seed=self.seed)
            splits["train"], splits["validation"] = carved["train"], carved["test"]
            rank_zero_info(
                f"No validation split: carved {len(carved['test'])} rows ({self.validation_size:.0%}) out of train "
                f"with seed {self.seed} (--data.validation_size, --data.seed)."
            )
        missing = [name for name in wanted if name not in splits]
        if missing:
            name = missing[0]
            hint = {
                "predict": f"--data.predict_split names a split ({sorted(raw)}) or --data.predict_file a file",
                "train": "give a train split (data_files: {train: ...})",
            }.get(name, f"add it via --data.data_files '{{{name}: path}}'")
            raise HFLightningError(f"the data has no {name!r} split (it has {sorted(raw)}): {hint}.")
        chosen = {name: splits[name] for name in wanted}
        for name, split in chosen.items():
            self._check_columns(split, name)
            if len(split) == 0:
                raise HFLightningError(f"the {name} split is empty: check the file or --data.data_files.")
        return chosen

    def _check_columns(self, split: Dataset, name: str) -> None:
        needed = [("--data.text_column", self.text_column)]
        if self.text_pair_column:
            needed.append(("--data.text_pair_column", self.text_pair_column))
        if name != "predict":
            needed += [("--data.label_column", column) for column in _as_list(self.label_column)]
        for flag, column in needed:
            if column not in split.column_names:
                raise HFLightningError(
                    f"the {name} split has no column {column!r} (set by {flag}); its columns are {split.column_names}."
                )

    def _label_spec(self, raw: DatasetDict) -> LabelSpec | None:
        if "train" not in raw:
            return None
        self._check_columns(raw["train"], "train")
        return infer_label_spec(raw["train"], self.label_column, self.task)

    # ------------------------------------------------------------------------------------------------ cleaning
    def _text_columns(self) -> list[str]:
        return [self.text_column] + ([self.text_pair_column] if self.text_pair_column else [])

    def _fill_missing_text(self, split: Dataset) -> Dataset:
        # Prediction keeps every row (one output per input): a missing text is predicted as an empty string.
        def fill(batch: dict) -> dict:
            return {c: ["" if t is None else t for t in batch[c]] for c in self._text_columns()}

        return split.map(fill, batched=True, desc="Filling empty texts")

    def _raw_labels(self, split: Dataset) -> list:
        if isinstance(self.label_column, list):
            columns = {c: split[c][:] for c in self.label_column}
            return [dict(zip(columns, row)) for row in zip(*columns.values())]
        return split[self.label_column][:]

    def _clean(self, split: Dataset, name: str, spec: LabelSpec | None) -> Dataset:
        """Drop (or reject) rows with empty text or a missing label; encode labels into a `labels` column."""
        texts = [split[c][:] for c in self._text_columns()]
        bad_text = [i for i, row in enumerate(zip(*texts)) if any(t is None or not str(t).strip() for t in row)]
        if spec is None:  # prediction: keep every row
            return split
        raw_labels = self._raw_labels(split)
        missing = [i for i, v in enumerate(raw_labels) if _missing(v, spec)]
        bad = sorted(set(bad_text) | set(missing))
        if bad and not self.drop_invalid_rows:
            kind = "an empty text" if bad[0] in bad_text else "no label"
            raise HFLightningError(
                f"row {bad[0]} of the {name} split has {kind} ({len(bad)} such rows). "
                "Fix the data, or set --data.drop_invalid_rows true to drop them."
            )
        bad_rows = set(bad)
        keep = [i for i in range(len(split)) if i not in bad_rows]
        labels = [encode_label(raw_labels[i], spec, f"{name} row {i}") for i in keep]
        if bad:
            rank_zero_warn(
                f"Dropped {len(bad)} of {len(split)} rows of the {name} split: {len(bad_text)} with empty text, "
                f"{len(missing)} without a label (--data.drop_invalid_rows false makes this an error)."
            )
            split = split.select(keep)
            if len(split) == 0:
                raise HFLightningError(f"every row of the {name} split has an empty text or no label.")
        return split.add_column("labels", labels)

    # ------------------------------------------------------------------------------------------- tokenization
    def _effective_max_length(self, tokenizer: PreTrainedTokenizerBase, config: PretrainedConfig) -> int:
        limits = []
        if tokenizer.model_max_length and tokenizer.model_max_length < 1_000_000:
            limits.append(tokenizer.model_max_length)
        for attribute in ("max_position_embeddings", "n_positions"):
            value = getattr(config, attribute, None)
            if isinstance(value, int) and value > 0:
                limits.append(value)
                break
        limit = min(limits) if limits else self.max_length
        if self.max_length > limit:
            rank_zero_warn(f"--data.max_length {self.max_length} is longer than the model accepts; using {limit}.")
            return limit
        return self.max_length

    def _check_token_ids(self, split: Dataset, name: str, config: PretrainedConfig) -> None:
        # A tokenizer bigger than the model's embedding table gives ids the model cannot look up: an "index out of
        # range" deep in the first step (transformers#13239). Checked on the ids the data really produced.
        vocab_size = getattr(config, "vocab_size", None)
        if not isinstance(vocab_size, int) or len(split) == 0:
            return
        largest = pc.max(pc.list_flatten(split.data.column("input_ids"))).as_py()
        if largest is not None and largest >= vocab_size:
            raise HFLightningError(
                f"the tokenizer {self.tokenizer_name_or_path} produced token id {largest} in the {name} split, but the "
                f"model {self.model_name_or_path} has only {vocab_size} token embeddings (vocab_size). Use the "
                "tokenizer saved with the model (leave --data.tokenizer_name_or_path unset) or a model trained with "
                "this tokenizer."
            )

    def _tokenize(
        self, split: Dataset, name: str, tokenizer: PreTrainedTokenizerBase, max_length: int, spec: LabelSpec | None
    ) -> Dataset:
        text_column, pair_column = self.text_column, self.text_pair_column

        def tokenize(batch: dict, indices: list[int]) -> dict:
            pairs = batch[pair_column] if pair_column else None
            encoded = tokenizer(batch[text_column], pairs, truncation=True, max_length=max_length)
            keep = {k: v for k, v in encoded.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
            return {**keep, "index": indices, "length": [len(ids) for ids in encoded["input_ids"]]}

        keep_columns = ["labels"] if spec is not None else []
        return split.map(
            tokenize,
            batched=True,
            with_indices=True,
            remove_columns=[c for c in split.column_names if c not in keep_columns],
            num_proc=self.preprocessing_num_workers,
            desc=f"Tokenizing {name}",
        )

    # ------------------------------------------------------------------------------------------- dataloaders
    def collator(self) -> PaddingCollator:
        spec = self.label_spec
        on_gpu = bool(self.trainer and self.trainer.strategy.root_device.type == "cuda")
        return PaddingCollator(
            pad_token_id=self.tokenizer.pad_token_id,
            pad_token_type_id=self.tokenizer.pad_token_type_id,
            padding_side=self.tokenizer.padding_side,
            # Tensor cores want lengths in multiples of 8; on CPUs exact lengths are cheapest.
            pad_to_multiple_of=self.pad_to_multiple_of or (8 if on_gpu else None),
            label_dtype=torch.long if spec is None or spec.task == "single_label" else torch.float,
        )

    def _loader(self, name: str, train: bool) -> DataLoader:
        dataset = self.datasets[name]
        trainer = self.trainer
        batch_size = self.batch_size if train else self.eval_batch_size
        sampler = LengthGroupedSampler(
            dataset["length"][:],
            batch_size,
            num_replicas=trainer.world_size if trainer else 1,
            rank=trainer.global_rank if trainer else 0,
            shuffle=train,
            group_by_length=self.group_by_length,
            seed=self.seed,
        )
        kwargs = {
            "batch_size": batch_size,
            "sampler": sampler,
            "collate_fn": self.collator(),
            "num_workers": self.num_workers,
            "persistent_workers": self.num_workers > 0,
            "pin_memory": bool(trainer and trainer.strategy.root_device.type == "cuda"),
            # Its own generator: creating an iterator then draws no number from the global RNG, which would shift
            # the dropout masks of a resumed run against an uninterrupted one.
            "generator": torch.Generator().manual_seed(self.seed),
        }
        dataset = dataset.select_columns([c for c in dataset.column_names if c != "length"])
        if train and trainer is not None:
            return ResumableDataLoader(dataset, batches_done=self._train_batches_done, **kwargs)
        return DataLoader(dataset, **kwargs)

    def _train_batches_done(self) -> int:
        # Batches the training loop has taken this epoch; the loader's own count would include the prefetched ones.
        return self.trainer.fit_loop.epoch_loop.batch_progress.current.ready

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("validation", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict", train=False)

    # ------------------------------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict:
        # Stored in every checkpoint, so an export after the fact knows the tokenizer and the labels.
        spec = self.label_spec
        return {
            "tokenizer_name_or_path": self.tokenizer_name_or_path,
            "max_length": self.max_length,
            "task": spec.task if spec else None,
            "label_names": list(spec.names) if spec else None,
            "global_batch_size": self._global_batch_size(),
        }

    def load_state_dict(self, state_dict: dict) -> None:
        # The training loader's saved position counts batches: with another global batch size a resumed run takes
        # other rows for the rest of the epoch (and another schedule) than the run that was interrupted.
        saved, current = state_dict.get("global_batch_size"), self._global_batch_size()
        if saved and saved != current and self.trainer and self.trainer.state.fn == "fit":
            rank_zero_warn(
                f"resuming with a global batch of {current} rows (--data.batch_size x devices), but the checkpoint "
                f"was trained with {saved}: the rest of the run will not match the one that was interrupted. Resume "
                "with the same --data.batch_size and --trainer.devices to continue it exactly."
            )

    def _global_batch_size(self) -> int:
        return self.batch_size * (self.trainer.world_size if self.trainer else 1)


def _as_list(value: object) -> list:
    return value if isinstance(value, list) else [value]


def _missing(value: object, spec: LabelSpec) -> bool:
    if isinstance(value, dict):
        return any(is_missing_label(v, spec) for v in value.values())
    return is_missing_label(value, spec)


def _builder_for(suffixes: set[str]) -> str:
    builders = {_BUILDERS.get(s) for s in suffixes}
    if len(builders) != 1 or None in builders:
        raise HFLightningError(
            f"cannot tell the format of data files with extensions {sorted(suffixes)}: use one of "
            f"{sorted(_BUILDERS)} or set --data.dataset csv|json|parquet|text."
        )
    return builders.pop()


def _describe(files: list[str]) -> str:
    return files[0] if len(files) == 1 else f"one of {files}"


def _label_counts(labels: list, spec: LabelSpec) -> list[float]:
    """Rows per class (single-label) or positives per label (multi-label); empty for regression."""
    if spec.task == "single_label":
        counts = Counter(labels)
        return [float(counts.get(i, 0)) for i in range(spec.num_labels)]
    if spec.task == "multi_label":
        return [float(sum(row[i] for row in labels)) for i in range(spec.num_labels)]
    return []
