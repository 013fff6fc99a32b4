"""HFDataModule: the data's settings, lifecycle, loaders and checkpoint state (`build` makes the splits).

What the model and the outputs need from the data is `HFDataModule.contract`, a frozen `DataContract` built in
`setup` (modules/data/contract.py documents the handover)."""

import os
from typing import Literal

from datasets import Dataset
from lightning.pytorch import LightningDataModule
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from modules.data.build import BuiltData, build, build_streaming, build_unlabeled
from modules.data.collate import PaddingCollator
from modules.data.contract import DataContract
from modules.data.labels import LabelSpec
from modules.data.loaders import padding_collator, split_loader, streaming_train_loader
from modules.data.sources import (
    check_dataset_source,
    check_files_exist,
    check_model_source,
    file_list,
)
from modules.data.streaming import check_streaming_arguments
from modules.errors import HFLightningError
from modules.runs.record import data_state


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
        streaming: bool = False,
        label_names: list[str] | None = None,
        buffer_size: int = 10_000,
        long_text: Literal["truncate", "chunk"] = "truncate",
        stride: int | None = None,
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
                the model and its tokenizer accept; checkpoints and the export keep the clamped length.
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
            streaming: Read the train split as a stream (larger-than-memory data), tokenized on the fly, sharded by
                rank and repeated, so training runs by `--trainer.max_steps`. Needs `label_names` and a validation
                file in `data_files`; see docs/data.md#streaming.
            label_names: The labels of a streamed train split (single-label), in id order; integer labels are ids.
            buffer_size: Streamed rows shuffled and grouped by length together.
            long_text: What happens to a text longer than `max_length` tokens. `truncate` cuts it there (and warns
                with the share of rows that reach it). `chunk` splits it into windows of `max_length` tokens that
                overlap by `stride`: training runs on every window with its document's label, and validate, test
                and predict average the windows' logits (max for multi-label), so metrics and predictions count
                documents. See docs/data.md#long-documents.
            stride: Tokens that consecutive windows share with `long_text chunk`; None takes a quarter of
                `max_length`. Below half of `max_length`.
        """
        super().__init__()
        # `label_names` is also the model's hyperparameter (filled from the data); Lightning rejects two values.
        self.save_hyperparameters(ignore=["label_names"])
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
        self.contract: DataContract | None = None  # what the model and the outputs read (see `contract.py`)
        self.datasets: dict[str, Dataset] = {}
        self.dropped_rows: dict[str, dict[str, int]] = {}  # split -> reason -> rows dropped by cleaning
        if self.dataset is None and self.data_files is None and self.predict_file is None:
            raise HFLightningError(
                "no data: pass --data.dataset (a Hub name or local folder) or --data.data_files (or, for predict "
                "with --ckpt_path, only --data.predict_file)."
            )
        if streaming:
            check_streaming_arguments(data_files, label_names, task, label_column)
        if long_text not in ("truncate", "chunk"):
            raise HFLightningError(f"--data.long_text {long_text!r}: use truncate or chunk.")
        if streaming and long_text == "chunk":
            raise HFLightningError(
                "--data.long_text chunk works on whole splits, not streams: drop --data.streaming, or truncate."
            )
        self.long_text = long_text
        self.stride = stride
        self.streaming = streaming
        self.label_names = label_names
        self.buffer_size = buffer_size
        if num_workers > 0:
            # Rust tokenizers' thread pool and forked workers can deadlock (transformers#5486).
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    # ----------------------------------------------------------------------------------------------- lifecycle
    def prepare_data(self) -> None:
        # Runs on one process per node: fill the dataset, tokenizer and tokenization caches; assign nothing.
        self._build(self.trainer.state.fn.value if self.trainer else "fit")

    def setup(self, stage: str) -> None:
        built = self._build(stage)
        self.datasets = built.datasets
        self.dropped_rows = built.dropped_rows
        self.contract = DataContract(
            label_spec=built.label_spec,
            tokenizer=built.tokenizer,
            tokenizer_name_or_path=self.tokenizer_name_or_path,
            max_length=built.max_length,
            long_text=self.long_text,
            stride=built.stride,
            label_counts=built.label_counts,
            train_rows=len(built.datasets["train"]) if "train" in built.datasets else 0,
            predict_raw=built.predict_raw,
            raw_splits=built.raw_splits,
            text_columns=tuple(c for c in (self.text_column, self.text_pair_column) if c),
            dataset=self.dataset,
            data_files=self.data_files,
            example_text=built.example_text,
        )
        for name, texts in built.windowed_texts.items():
            windows = len(self.datasets[name])
            rank_zero_info(
                f"{name}: {texts:,} texts in {windows:,} windows of up to {self.effective_max_length} tokens"
            )

    def unlabeled_rows(self, source: str | Dataset, offset: int) -> tuple[Dataset, Dataset]:
        """Unlabelled rows (a text file, or a dataset of the text columns) as read and as tokenized for the train
        split, their `index` counted on from `offset` (`build_unlabeled`), for distillation's teacher to label."""
        if self.streaming:
            raise HFLightningError(
                "--distill.unlabeled_file needs the train split in Arrow files: set --data.streaming false (Arrow "
                "files are memory-mapped: the unlabeled file may still be larger than memory)."
            )
        return build_unlabeled(self, source, offset)

    def replace_train(self, train: Dataset, note: str | None = None) -> None:
        """Train on `train` from now on: the train split with columns or rows a callback added in its `setup`
        (distillation's teacher scores and unlabelled rows). `note` is printed once."""
        self.datasets["train"] = train
        if note:
            rank_zero_info(note)

    # What `setup` found, for the data room's own use (loaders, `stats`); other rooms read `contract`.
    @property
    def tokenizer(self) -> PreTrainedTokenizerBase | None:
        return self.contract.tokenizer if self.contract else None

    @property
    def label_spec(self) -> LabelSpec | None:
        return self.contract.label_spec if self.contract else None

    @property
    def effective_max_length(self) -> int | None:
        """`max_length` after `clamp_max_length`: what the splits were cut or windowed at."""
        return self.contract.max_length if self.contract else None

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
        check_files_exist(file_list(self.data_files) + ([self.predict_file] if self.predict_file else []))

    def _build(self, stage: str) -> BuiltData:
        self.check_sources()
        if self.streaming and stage == "fit":
            return build_streaming(self)
        return build(self, stage)

    # ------------------------------------------------------------------------------------------- dataloaders
    def collator(self) -> PaddingCollator:
        return padding_collator(self)

    def train_dataloader(self) -> DataLoader:
        if self.streaming:
            return streaming_train_loader(self)
        return split_loader(self, "train", train=True)

    def val_dataloader(self) -> DataLoader:
        return split_loader(self, "validation", train=False)

    def test_dataloader(self) -> DataLoader:
        return split_loader(self, "test", train=False)

    def predict_dataloader(self) -> DataLoader:
        return split_loader(self, "predict", train=False)

    # ------------------------------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict:
        # Stored in every checkpoint, so an export after the fact knows the tokenizer, the length and the labels:
        # the schema is modules/runs/record.py's, and `max_length` the clamped length the run used.
        spec = self.label_spec
        return data_state(
            tokenizer_name_or_path=self.tokenizer_name_or_path,
            max_length=self.effective_max_length or self.max_length,
            long_text=self.long_text,
            stride=self.stride,
            task=spec.task if spec else None,
            label_names=list(spec.names) if spec else None,
            global_batch_size=self._global_batch_size(),
        )

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
