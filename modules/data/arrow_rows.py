"""Row checks and label encoding on Arrow columns, so preparing N rows never builds N-element Python lists."""

import ctypes
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset
from lightning.pytorch import Callback

if TYPE_CHECKING:  # labels.py imports this module
    from modules.data.labels import LabelSpec


def column(split: Dataset, name: str) -> pa.ChunkedArray:
    """The split's column as Arrow (respecting a `select`/`filter` indices mapping), without a Python copy."""
    return split.with_format("arrow").select_columns([name])[:][name]


CHUNK_ROWS = 65_536  # rows per Arrow compute call: a copy made along the way (trimmed text, flattened ids) stays small


def chunks(values: pa.ChunkedArray) -> Iterator[tuple[int, pa.ChunkedArray]]:
    """`(offset, zero-copy slice of CHUNK_ROWS rows)` pairs covering `values` in order. The file pages a scan has
    read are handed back every few slices and at the end (`release_mapped_pages`), so a scan of a column larger
    than memory holds a few slices of it, not all it has read."""
    rows = CHUNK_ROWS
    for i, start in enumerate(range(0, len(values), rows)):
        yield start, values.slice(start, rows)
        if i % 8 == 7:
            release_mapped_pages()
    release_mapped_pages()


def release_mapped_pages() -> None:
    """Unmap the pages this process has read from memory-mapped Arrow files (the datasets cache); Linux only.

    Reading a memory-mapped column counts every page read in the process's resident memory for as long as the file
    stays mapped, although the pages are the file's and the kernel's page cache holds them anyway.
    `madvise(MADV_DONTNEED)` on a read-only mapping drops them from this process only: a later read maps them again
    from the page cache (or the file). Writable mappings are never touched."""
    if _LIBC is None:
        return
    try:
        with open("/proc/self/maps") as maps:
            regions = [line.split(maxsplit=5) for line in maps]
    except OSError:
        return
    for fields in regions:
        if len(fields) == 6 and fields[1] in ("r--p", "r--s") and fields[5].rstrip().endswith(".arrow"):
            start, end = (int(address, 16) for address in fields[0].split("-"))
            _LIBC.madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), _MADV_DONTNEED)


class ReleaseMappedPages(Callback):
    """`release_mapped_pages` every `every_n_batches` training batches and when training ends.

    Batches are read at random from the memory-mapped tokenized cache, so without this the process's resident memory
    grows by every page of it that training has touched (on 1M demo rows, +2 MB a step, +80 MB in 40 steps), and the
    end-of-fit checkpoint and export come on top of it. Dropping them costs a minor page fault when a page is read
    again. Batches read in DataLoader worker processes are mapped there, not here."""

    def __init__(self, every_n_batches: int = 10) -> None:
        self.every_n_batches = every_n_batches

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:  # noqa: ANN001
        if (batch_idx + 1) % self.every_n_batches == 0:
            release_mapped_pages()

    def on_train_end(self, trainer, pl_module) -> None:  # noqa: ANN001
        release_mapped_pages()


def _load_libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return libc


_MADV_DONTNEED = 4  # Linux's value on every architecture
_LIBC = _load_libc()


def blank_text_mask(split: Dataset, text_columns: list[str]) -> np.ndarray:
    """True where any text column is missing or only whitespace."""
    blank = np.zeros(len(split), dtype=bool)
    for name in text_columns:
        for start, values in chunks(column(split, name)):
            if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
                values = pc.cast(values, pa.string())
            empty = pc.fill_null(pc.equal(pc.utf8_trim_whitespace(values), ""), True)
            blank[start : start + len(values)] |= empty.to_numpy(zero_copy_only=False)
    return blank


def is_scalar(values: pa.ChunkedArray) -> bool:
    """Strings, integers, floats and booleans: the label kinds handled here (lists and ClassLabel ids are ints)."""
    kind = values.type
    return (
        pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
        or pa.types.is_integer(kind)
        or pa.types.is_floating(kind)
        or pa.types.is_boolean(kind)
    )


def missing_label_mask(values: pa.ChunkedArray, spec: "LabelSpec") -> np.ndarray:
    """True for None/NaN labels and, for single-label ids, the Hub's -1 (unlabeled row)."""
    missing = pc.is_null(values, nan_is_null=True)
    if spec.task == "single_label" and pa.types.is_integer(values.type):
        missing = pc.or_(missing, pc.fill_null(pc.equal(values, -1), False))
    return missing.to_numpy(zero_copy_only=False)


def encode_labels(
    values: pa.ChunkedArray, spec: "LabelSpec", where: Callable[[int], str], rows: np.ndarray
) -> np.ndarray:
    """Class ids (single-label) or floats (regression) for the labelled rows. `rows` maps each value back to its row
    index in the split; `where(index)` names that row in errors (its file's line when it has one)."""
    if spec.task == "regression":
        return pc.cast(values, pa.float32()).to_numpy(zero_copy_only=False).astype(np.float64)
    if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        ids = pc.index_in(values, value_set=pa.array(spec.names, values.type)).to_numpy(zero_copy_only=False)
        unknown = np.flatnonzero(np.isnan(ids)) if ids.dtype.kind == "f" else np.array([], dtype=int)
        if len(unknown):
            _raise_for(values, int(unknown[0]), spec, where, rows)
        return ids.astype(np.int64)
    numbers = values.to_numpy(zero_copy_only=False)
    ids = numbers.astype(np.int64)
    bad = np.flatnonzero((ids != numbers) | (ids < 0) | (ids >= spec.num_labels))
    if len(bad):
        _raise_for(values, int(bad[0]), spec, where, rows)
    return ids


def _raise_for(
    values: pa.ChunkedArray, row: int, spec: "LabelSpec", where: Callable[[int], str], rows: np.ndarray
) -> None:
    """Raise the per-row path's error (`LabelSpec.label_id`) for the first row the vectorized check rejected."""
    spec.label_id(values[row].as_py(), where(int(rows[row])))
    raise AssertionError(f"label {values[row].as_py()!r} was rejected here but is a valid id")


def distinct_values(values: pa.ChunkedArray) -> list:
    """The column's distinct non-missing values, as Python objects (bounded by the number of classes)."""
    present = pc.drop_null(pc.if_else(pc.is_nan(values), None, values) if pa.types.is_floating(values.type) else values)
    return pc.unique(present).to_pylist()


def label_counts(labels: pa.ChunkedArray, spec: "LabelSpec") -> list[float]:
    """Rows per class (single-label) or positives per label (multi-label); empty for regression."""
    if spec.task == "single_label":
        counts = np.bincount(labels.to_numpy(zero_copy_only=False), minlength=spec.num_labels)
        return [float(c) for c in counts[: spec.num_labels]]
    if spec.task == "multi_label":
        hot = pc.list_flatten(labels).to_numpy(zero_copy_only=False).reshape(-1, spec.num_labels)
        return [float(c) for c in hot.sum(axis=0)]
    return []
