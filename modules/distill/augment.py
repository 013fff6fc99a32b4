"""More texts for the teacher to label: perturbed copies of the train rows (Tang et al., 2019, "Distilling
Task-Specific Knowledge from BERT into Simple Neural Networks", section 3.2). A small student learns the teacher's
function from its scores on many inputs near the data, not only on the train rows themselves.
"""

import hashlib
import json
import random
from collections.abc import Sequence

from datasets import Dataset

from modules import compat

MASK_RATE = 0.1  # each word replaced by the mask token (dropped without one)
NGRAM_RATE = 0.25  # then, single texts: only a random n-gram of the words kept
LONGEST_NGRAM = 5
VERSION = 1  # part of the cache key: bump when the perturbation changes


def perturb(text: str, rng: random.Random, mask_token: str | None, ngram: bool) -> str:
    """One perturbed copy of `text`: words masked at `MASK_RATE`, then (with `ngram`) at `NGRAM_RATE` only a
    random run of 1-`LONGEST_NGRAM` words kept. Never empty: a text whose words all went keeps its first."""
    words = text.split()
    kept = [mask_token if rng.random() < MASK_RATE else word for word in words]
    kept = [w for w in kept if w is not None]
    if ngram and kept and rng.random() < NGRAM_RATE:
        n = rng.randint(1, min(LONGEST_NGRAM, len(kept)))
        start = rng.randint(0, len(kept) - n)
        kept = kept[start : start + n]
    return " ".join(kept) or (words[0] if words else text)


def augmented(rows: Dataset, text_columns: Sequence[str], copies: int, seed: int, mask_token: str | None) -> Dataset:
    """`copies` perturbed copies of each row's text columns (pairs: both texts masked, kept whole), as a dataset of
    those columns only; the same `seed` gives the same copies, and `datasets` caches them beside `rows`."""
    single = len(text_columns) == 1

    def copy_rows(batch: dict, indices: list[int]) -> dict:
        out: dict[str, list[str]] = {column: [] for column in text_columns}
        for j, i in enumerate(indices):
            rng = random.Random(seed * 1_000_003 + i)  # per row: the copies do not depend on the batching
            for _ in range(copies):
                for column in text_columns:
                    out[column].append(perturb(batch[column][j], rng, mask_token, single))
        return out

    key = hashlib.sha256(
        json.dumps([compat.dataset_fingerprint(rows), list(text_columns), copies, seed, mask_token, VERSION]).encode()
    ).hexdigest()[:32]
    return rows.map(
        copy_rows,
        batched=True,
        with_indices=True,
        remove_columns=rows.column_names,
        new_fingerprint=key,
        desc="Perturbed copies for the teacher",
    )
