"""The data loaders of `HFDataModule`: length-grouped batches of a tokenized split (`split_loader`), the streamed train
split (`streaming_train_loader`) and the collator that pads them (`padding_collator`)."""

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch.utils.data import DataLoader

from modules.data import arrow_rows
from modules.data.collate import PaddingCollator
from modules.data.sampler import LengthGroupedSampler, ResumableDataLoader
from modules.data.streaming import StreamingBatches, StreamingDataLoader, open_stream
from modules.errors import HFLightningError

if TYPE_CHECKING:
    from modules.data.datamodule import HFDataModule


def streaming_train_loader(dm: "HFDataModule") -> DataLoader:
    """The train loader of `--data.streaming true`: this rank's share of the stream, tokenized and batched as it is
    read; `--trainer.max_steps` gives the run its length."""
    trainer = dm.trainer
    if trainer is not None and trainer.max_steps < 0:
        raise HFLightningError(
            "--data.streaming true repeats the stream, so training needs a length: set --trainer.max_steps."
        )
    stream = open_stream(
        dm.dataset,
        dm.dataset_config,
        dm.data_files,
        rank=trainer.global_rank if trainer else 0,
        world_size=trainer.world_size if trainer else 1,
    )
    batches = StreamingBatches(
        stream,
        dm.tokenizer,
        dm.effective_max_length,
        dm.text_column,
        dm.text_pair_column,
        dm.label_column,
        dm.label_spec,
        dm.batch_size,
        dm.buffer_size,
        dm.group_by_length,
        dm.seed,
    )
    return StreamingDataLoader(
        batches,
        batches_done=_batches_taken(dm) if trainer else lambda: 0,
        collate_fn=padding_collator(dm),
        num_workers=dm.num_workers,
        persistent_workers=dm.num_workers > 0,
    )


# ------------------------------------------------------------------------------------------- dataloaders
def padding_collator(dm: "HFDataModule") -> PaddingCollator:
    """Pads each batch to its longest row (a multiple of 8 on GPUs, for tensor cores)."""
    spec = dm.label_spec
    on_gpu = bool(dm.trainer and dm.trainer.strategy.root_device.type == "cuda")
    return PaddingCollator(
        pad_token_id=dm.tokenizer.pad_token_id,
        pad_token_type_id=dm.tokenizer.pad_token_type_id,
        padding_side=dm.tokenizer.padding_side,
        # Tensor cores want lengths in multiples of 8; on CPUs exact lengths are cheapest.
        pad_to_multiple_of=dm.pad_to_multiple_of or (8 if on_gpu else None),
        label_dtype=torch.long if spec is None or spec.task == "single_label" else torch.float,
    )


def split_loader(dm: "HFDataModule", name: str, train: bool) -> DataLoader:
    """The loader of a tokenized split: length-grouped batches, this rank's share; the train loader resumes
    mid-epoch from the batches the training loop has taken."""
    dataset = dm.datasets[name]
    trainer = dm.trainer
    batch_size = dm.batch_size if train else dm.eval_batch_size
    sampler = LengthGroupedSampler(
        arrow_rows.column(dataset, "length").to_numpy(),
        batch_size,
        num_replicas=trainer.world_size if trainer else 1,
        rank=trainer.global_rank if trainer else 0,
        shuffle=train,
        group_by_length=dm.group_by_length,
        seed=dm.seed,
    )
    kwargs = {
        "batch_size": batch_size,
        "sampler": sampler,
        "collate_fn": padding_collator(dm),
        "num_workers": dm.num_workers,
        "persistent_workers": dm.num_workers > 0,
        "pin_memory": bool(trainer and trainer.strategy.root_device.type == "cuda"),
        # Its own generator: creating an iterator then draws no number from the global RNG, which would shift
        # the dropout masks of a resumed run against an uninterrupted one.
        "generator": torch.Generator().manual_seed(dm.seed),
    }
    dataset = dataset.select_columns([c for c in dataset.column_names if c != "length"])
    if train and trainer is not None:
        return ResumableDataLoader(dataset, batches_done=_batches_taken(dm), **kwargs)
    return DataLoader(dataset, **kwargs)


def _batches_taken(dm: "HFDataModule") -> Callable[[], int]:
    """Batches the training loop has taken this epoch; the loader's own count would include the prefetched ones."""
    return lambda: dm.trainer.fit_loop.epoch_loop.batch_progress.current.ready
