"""Length-aware, resumable sampling: batches of similar-length rows waste little compute on padding, on one or many
ranks, and a run resumed mid-epoch continues the epoch's data order where it stopped.

The sampler subclasses `DistributedSampler`, so Lightning leaves it in place under DDP instead of injecting its own.
"""

from collections.abc import Callable, Iterator, Sequence

import torch
from torch.utils.data import DataLoader, DistributedSampler


class LengthGroupedSampler(DistributedSampler):
    """Yield this rank's row indices so that consecutive `batch_size` chunks are batches of similar length.

    Training (`shuffle=True`) works on global batches of `batch_size * num_replicas` rows: shuffle all rows, sort by
    length inside mega-batches of `mega_batch_size` global batches, cut global batches, shuffle their order; each
    global batch is then split into one contiguous part per rank. So one process with batch 32 and two with batch 16
    see the same global batches in the same order, and every rank runs the same number of steps. Reshuffled each
    epoch from `seed + epoch`. With `group_by_length=False` the rows are only shuffled. Evaluation (`shuffle=False`):
    rows sorted longest first, batch i on rank i % num_replicas, no padding, no duplicates.

    Args:
        lengths: Token count of each row.
        batch_size: Rows per batch on each rank.
        num_replicas: World size.
        rank: This process's global rank.
        shuffle: Training order (True) or evaluation order (False).
        group_by_length: Sort by length inside mega-batches (training only).
        seed: Base seed of the per-epoch shuffle; the same on every rank.
        mega_batch_size: Global batches per sorting window: larger groups lengths better, smaller keeps more
            randomness.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        num_replicas: int = 1,
        rank: int = 0,
        shuffle: bool = True,
        group_by_length: bool = True,
        seed: int = 0,
        mega_batch_size: int = 50,
    ) -> None:
        # No super().__init__: it needs the dataset only for its length, which `lengths` gives.
        self.lengths = torch.tensor(lengths)  # a copy: a read-only Arrow-backed array cannot back a tensor
        self.batch_size = batch_size
        self.num_replicas = num_replicas
        self.rank = rank
        self.shuffle = shuffle
        self.group_by_length = group_by_length
        self.seed = seed
        self.mega_batch_size = mega_batch_size
        self.epoch = 0
        self.drop_last = False
        self._resume: tuple[int, int] | None = None  # (epoch, batches already trained in it)

    def global_batches(self) -> list[list[int]]:
        """This epoch's training batches across all ranks, in order (each `batch_size * num_replicas` rows, the
        last one possibly shorter)."""
        n, size = len(self.lengths), self.batch_size * self.num_replicas
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(n, generator=generator)
        if self.group_by_length:
            window = size * self.mega_batch_size
            chunks = [order[i : i + window] for i in range(0, n, window)]
            order = torch.cat([c[torch.argsort(self.lengths[c], descending=True, stable=True)] for c in chunks])
        order = order.tolist()
        full = [order[i : i + size] for i in range(0, n - n % size, size)]
        batches = [full[i] for i in torch.randperm(len(full), generator=generator).tolist()]
        if n % size:
            short = order[n - n % size :]
            # Every rank needs a row: borrow from the start when fewer rows than ranks are left.
            short += order[: max(0, self.num_replicas - len(short))]
            batches.append(short)  # last, so each rank's batches stay aligned to `batch_size`
        return batches

    def rank_batches(self) -> list[list[int]]:
        """This rank's batches of this epoch, in order."""
        if not self.shuffle:
            order = torch.argsort(self.lengths, descending=True, stable=True).tolist()
            batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
            return batches[self.rank :: self.num_replicas]
        parts = []
        for batch in self.global_batches():
            if len(batch) == self.batch_size * self.num_replicas:
                start = self.rank * self.batch_size
                parts.append(batch[start : start + self.batch_size])
            else:  # the short last batch: near-equal parts
                parts.append([int(i) for i in torch.tensor_split(torch.tensor(batch), self.num_replicas)[self.rank]])
        return parts

    def resume_at(self, epoch: int, batches_done: int) -> None:
        """Skip the first `batches_done` batches the next time epoch `epoch` is iterated (a mid-epoch resume)."""
        self._resume = (epoch, batches_done)

    def __iter__(self) -> Iterator[int]:
        batches = self.rank_batches()
        if self._resume is not None and self.shuffle:
            epoch, done = self._resume
            if epoch == self.epoch:
                batches = batches[done:]
            self._resume = None
        for batch in batches:
            yield from batch

    def __len__(self) -> int:
        # The whole epoch, also when resuming inside it: Lightning counts the batches already done itself.
        return sum(len(b) for b in self.rank_batches())


class ResumableDataLoader(DataLoader):
    """A training `DataLoader` whose position is saved in checkpoints, so a mid-epoch resume continues the epoch.

    Lightning stores `state_dict()` in the checkpoint and calls `load_state_dict()` before iterating again. The
    position is the number of batches the training loop has taken (`batches_done`, a callable reading Lightning's
    progress counter), not the number fetched: workers and Lightning's prefetch read ahead.
    """

    def __init__(self, *args, batches_done: Callable[[], int], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._batches_done = batches_done

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.sampler.epoch, "batches_done": int(self._batches_done())}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self.sampler.resume_at(state_dict["epoch"], state_dict["batches_done"])
