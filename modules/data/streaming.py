"""`--data.streaming true`: the train split read as a stream, tokenized on the fly, sharded by rank, resumable.

Rows are read `buffer_size` at a time; each buffer is shuffled, tokenized, grouped by length into batches and the
batches shuffled (all seeded by epoch and buffer number). The stream repeats, so every rank takes exactly
`--trainer.max_steps` steps whatever its shard's length (no hang on a ragged last shard). A position is the
stream's own `state_dict()` at the start of a buffer plus the batches taken from it: resuming re-reads that one
buffer and skips those batches, so a resumed run sees exactly the batches of an uninterrupted one.
"""

import copy
import random
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path

import datasets
import torch.distributed as dist
from datasets.distributed import split_dataset_by_node
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DataLoader, IterableDataset
from transformers import PreTrainedTokenizerBase

from modules.data.labels import LabelSpec, encode_label, is_missing_label
from modules.data.preprocess import MODEL_INPUTS
from modules.data.sources import BUILDERS, file_list
from modules.errors import HFLightningError


def open_stream(
    dataset: str | None, dataset_config: str | None, data_files: object, rank: int, world_size: int
) -> datasets.IterableDataset:
    """The train split as an `IterableDataset`, this rank's share of it (`split_dataset_by_node`)."""
    if isinstance(data_files, dict):
        if "train" not in data_files:
            raise HFLightningError("--data.streaming needs a train file: --data.data_files '{train: ...}'.")
        data_files = {"train": data_files["train"]}
    kwargs = {}
    builder = dataset
    if data_files is not None and (dataset is None or Path(dataset).expanduser().is_dir()):
        suffixes = {Path(f).suffix.lower() for f in file_list(data_files)}
        builder = BUILDERS.get(suffixes.pop()) if len(suffixes) == 1 else None
        if builder is None:
            raise HFLightningError(
                f"--data.streaming cannot tell the format of {file_list(data_files)}: set --data.dataset "
                "csv|json|parquet|text."
            )
        if {Path(f).suffix.lower() for f in file_list(data_files)} == {".tsv"}:
            kwargs["sep"] = "\t"
    stream = datasets.load_dataset(
        builder, dataset_config, data_files=data_files, split="train", streaming=True, **kwargs
    )
    return split_dataset_by_node(stream, rank=rank, world_size=world_size) if world_size > 1 else stream


class StreamingBatches(IterableDataset):
    """Batches (lists of tokenized rows) from a stream; see the module docstring for order and position."""

    def __init__(
        self,
        stream: datasets.IterableDataset,
        tokenizer: PreTrainedTokenizerBase,
        max_length: int,
        text_column: str,
        text_pair_column: str | None,
        label_column: str,
        label_spec: LabelSpec,
        batch_size: int,
        buffer_size: int,
        group_by_length: bool,
        seed: int,
    ) -> None:
        self.stream = stream
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.text_column = text_column
        self.text_pair_column = text_pair_column
        self.label_column = label_column
        self.label_spec = label_spec
        self.batch_size = batch_size
        self.buffer_size = buffer_size
        self.group_by_length = group_by_length
        self.seed = seed
        self.start: dict = {"epoch": 0, "stream": None, "buffer": 0, "skip": 0}
        # Position before each batch handed out, newest last: the loop asks for the one its progress counter names.
        self.positions: deque[tuple[int, dict]] = deque(maxlen=64)
        self.batches_yielded = 0

    def _rows(self, batch: dict, first_index: int) -> list[dict]:
        rows = []
        texts = batch[self.text_column]
        pairs = batch[self.text_pair_column] if self.text_pair_column else [None] * len(texts)
        labels = batch[self.label_column]
        keep = [
            i
            for i in range(len(texts))
            if texts[i] is not None
            and str(texts[i]).strip()
            and (not self.text_pair_column or (pairs[i] is not None and str(pairs[i]).strip()))
            and not is_missing_label(labels[i], self.label_spec)
        ]
        if not keep:
            return rows
        encoded = self.tokenizer(
            [texts[i] for i in keep],
            [pairs[i] for i in keep] if self.text_pair_column else None,
            truncation=True,
            max_length=self.max_length,
        )
        for j, i in enumerate(keep):
            row = {k: v[j] for k, v in encoded.items() if k in MODEL_INPUTS}
            row["labels"] = encode_label(labels[i], self.label_spec, f"streamed train row {first_index + i}")
            row["index"] = first_index + i  # the row's number in this process's stream
            rows.append(row)
        return rows

    def _buffer_batches(self, buffer: dict[str, list], epoch: int, number: int) -> list[list[dict]]:
        rng = random.Random(f"{self.seed}-{epoch}-{number}")
        rows = self._rows(buffer, number * self.buffer_size)
        rng.shuffle(rows)
        if self.group_by_length:
            rows.sort(key=lambda row: len(row["input_ids"]))
        batches = [rows[i : i + self.batch_size] for i in range(0, len(rows), self.batch_size)]
        rng.shuffle(batches)
        return batches

    def __iter__(self) -> Iterator[list[dict]]:
        start, self.start = self.start, {"epoch": 0, "stream": None, "buffer": 0, "skip": 0}
        epoch, stream_state, number, skip = start["epoch"], start["stream"], start["buffer"], start["skip"]
        while True:
            # The stream applies a loaded state only in the epoch it was saved in, so each pass sets its epoch.
            self.stream.set_epoch(epoch)
            if stream_state is not None:
                self.stream.load_state_dict(stream_state)
            rows_iter = iter(self.stream)
            # The stream's state only follows the rows once they are read: the first buffer starts where it was told.
            buffer_start, stream_state, any_rows = stream_state, None, skip > 0 or number > 0
            while True:
                buffer: dict[str, list] = {}
                for _, row in zip(range(self.buffer_size), rows_iter):
                    for key, value in row.items():
                        buffer.setdefault(key, []).append(value)
                if not buffer:
                    break
                any_rows = True
                for index, batch in enumerate(self._buffer_batches(buffer, epoch, number)):
                    if index < skip:
                        continue
                    position = {"epoch": epoch, "stream": buffer_start, "buffer": number, "skip": index}
                    self.positions.append((self.batches_yielded, position))
                    self.batches_yielded += 1
                    yield batch
                skip, number = 0, number + 1
                buffer_start = copy.deepcopy(self.stream.state_dict())
            if not any_rows:
                raise HFLightningError("the streamed train split has no usable rows on this process.")
            epoch, number = epoch + 1, 0


class StreamingDataLoader(DataLoader):
    """The streaming train loader; `state_dict` is the position of the next batch the training loop will take."""

    def __init__(self, batches: StreamingBatches, batches_done: Callable[[], int], **kwargs) -> None:
        super().__init__(batches, batch_size=None, **kwargs)
        self._batches_done = batches_done
        self._offset = 0  # batches taken before this process's iterator started (a resumed run)

    def state_dict(self) -> dict:
        # Every rank builds the checkpoint and only rank 0 writes it, so the ranks' positions are gathered here.
        local: dict = {}
        if self.num_workers == 0:  # with workers the position lives in them; resuming restarts the stream
            wanted = int(self._batches_done()) - self._offset
            for count, position in self.dataset.positions:
                if count == wanted:
                    local = {"position": position, "batches_done": int(self._batches_done())}
        if dist.is_available() and dist.is_initialized():
            ranks: list = [None] * dist.get_world_size()
            dist.all_gather_object(ranks, local)
            return {"ranks": ranks}
        return {"ranks": [local]}

    def load_state_dict(self, state_dict: dict) -> None:
        ranks = state_dict.get("ranks", [])
        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        if len(ranks) != (dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1):
            rank_zero_warn(
                "the checkpoint's streaming position is for another number of processes; restarting the stream."
            )
            return
        local = ranks[rank]
        if "position" in local:
            self.dataset.start = local["position"]
            self.dataset.positions.clear()
            self.dataset.batches_yielded = 0
            self._offset = local["batches_done"]


def check_streaming_arguments(
    data_files: object, label_names: list[str] | None, task: str, label_column: object
) -> None:
    """`--data.streaming true`'s settings, checked when the datamodule is built (before any data is read)."""
    if not label_names:
        raise HFLightningError(
            "--data.streaming true needs the label names up front (a stream cannot be scanned for them): set "
            "--data.label_names '[neg, pos]' (integer labels are ids into that list)."
        )
    if task not in ("auto", "single_label") or isinstance(label_column, list):
        raise HFLightningError("--data.streaming true trains single-label data; set --data.streaming false.")
    if not isinstance(data_files, dict) or "train" not in data_files or "validation" not in data_files:
        raise HFLightningError(
            "--data.streaming true needs --data.data_files '{train: big.csv, validation: dev.csv}' (the train file "
            "is streamed, validation is loaded whole)."
        )
