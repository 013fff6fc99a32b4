"""Length-aware sampling: batches of similar-length rows waste little compute on padding, on one or many ranks.

The sampler subclasses `DistributedSampler`, so Lightning leaves it in place under DDP instead of injecting its own.
Each rank gets whole batches (batch i goes to rank i % world_size), every rank gets the same number of training
batches, and evaluation sees each row exactly once.
"""

import math
from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import DistributedSampler


class LengthGroupedSampler(DistributedSampler):
    """Yield this rank's row indices so that consecutive `batch_size` chunks are batches of similar length.

    Training (`shuffle=True`): shuffle all rows, sort by length inside mega-batches of `mega_batch_size` batches,
    cut batches, shuffle the batch order; reshuffled each epoch from `seed + epoch`. With `group_by_length=False`
    the rows are only shuffled. The batch count is padded to a multiple of the world size by repeating batches from
    the start, so all ranks run the same number of steps. Evaluation (`shuffle=False`): rows sorted longest first,
    no padding, no duplicates.

    Args:
        lengths: Token count of each row.
        batch_size: Rows per batch on each rank.
        num_replicas: World size.
        rank: This process's global rank.
        shuffle: Training order (True) or evaluation order (False).
        group_by_length: Sort by length inside mega-batches (training only).
        seed: Base seed of the per-epoch shuffle; the same on every rank.
        mega_batch_size: Batches per sorting window: larger groups lengths better, smaller keeps more randomness.
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
        self.lengths = torch.as_tensor(lengths)
        self.batch_size = batch_size
        self.num_replicas = num_replicas
        self.rank = rank
        self.shuffle = shuffle
        self.group_by_length = group_by_length
        self.seed = seed
        self.mega_batch_size = mega_batch_size
        self.epoch = 0
        self.drop_last = False

    def batches(self) -> list[list[int]]:
        """All batches of this epoch across ranks, in order; batch i belongs to rank i % num_replicas."""
        n = len(self.lengths)
        if not self.shuffle:
            order = torch.argsort(self.lengths, descending=True, stable=True).tolist()
            return [order[i : i + self.batch_size] for i in range(0, n, self.batch_size)]
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(n, generator=generator)
        if self.group_by_length:
            window = self.batch_size * self.mega_batch_size
            chunks = [order[i : i + window] for i in range(0, n, window)]
            order = torch.cat([c[torch.argsort(self.lengths[c], descending=True, stable=True)] for c in chunks])
        order = order.tolist()
        full = [order[i : i + self.batch_size] for i in range(0, n - n % self.batch_size, self.batch_size)]
        batch_order = torch.randperm(len(full), generator=generator).tolist()
        batches = [full[i] for i in batch_order]
        if n % self.batch_size:
            batches.append(order[n - n % self.batch_size :])  # the short batch goes last so batch cuts stay aligned
        padded = math.ceil(len(batches) / self.num_replicas) * self.num_replicas
        # Fill with full batches; the short batch stays the last batch of its own rank.
        extra = [full[i % len(full)] if full else batches[0] for i in range(padded - len(batches))]
        return batches + extra

    def __iter__(self) -> Iterator[int]:
        for batch in self.batches()[self.rank :: self.num_replicas]:
            yield from batch

    def __len__(self) -> int:
        return sum(len(b) for b in self.batches()[self.rank :: self.num_replicas])
