"""Long documents: split each into overlapping windows of `max_length` tokens, and fold window logits back into one
row of logits per document (mean; max for multi-label), so metrics and predictions count documents, not windows.

The one home of window aggregation: evaluation (`gather` in modules/decisions/outputs.py), `predict`'s writer
(`WindowTotals`, filled batch by batch) and the server (`aggregate_windows`) all fold windows here. Light on purpose
(torch, transformers): the server imports it, so Lightning and datasets are imported only inside `warn_truncated`,
which training calls.
"""

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from modules.errors import HFLightningError


def check_stride(stride: int, max_length: int) -> None:
    """Windows overlap by `stride` tokens; they must still move forward, so the stride is below `max_length`."""
    if not 0 <= stride < max_length // 2:
        raise HFLightningError(
            f"--data.stride {stride} must be at least 0 and below half of --data.max_length ({max_length // 2}); "
            "lower --data.stride or raise --data.max_length."
        )


def window_stride(stride: int | None, max_length: int) -> int:
    """The overlap of windows of `max_length` tokens: `stride`, or a quarter of `max_length` when None; checked."""
    stride = max_length // 4 if stride is None else stride
    check_stride(stride, max_length)
    return stride


def encode_windows(
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str],
    max_length: int,
    stride: int,
    pairs: list[str] | None = None,
) -> dict[str, list]:
    """Tokenize `texts` into windows of at most `max_length` tokens that overlap by `stride` tokens.

    Returns the model inputs, one row per window, plus `document`: the index in `texts` each window comes from
    (windows of one document are consecutive). A text that fits is one window, exactly as with truncation. With
    `pairs`, the first text is windowed and each window carries the whole second one (`only_first`).
    """
    check_stride(stride, max_length)
    encoded = tokenizer(
        texts,
        pairs,
        truncation="only_first" if pairs is not None else True,
        max_length=max_length,
        stride=stride,
        return_overflowing_tokens=True,
    )
    document = encoded.pop("overflow_to_sample_mapping")
    return {**{key: list(value) for key, value in encoded.items()}, "document": list(document)}


def truncated_share(lengths: list[int], max_length: int) -> float:
    """The share of rows whose untruncated token length exceeds `max_length`: what truncation would cut."""
    return sum(length > max_length for length in lengths) / len(lengths) if lengths else 0.0


def warn_truncated(lengths: np.ndarray, max_length: int, name: str) -> float:
    """Warn once for split `name` with the share of rows that fill `max_length` (cut off, or exactly full).

    `lengths` are the token lengths after truncation, so a row at `max_length` is an upper bound on the truncated
    rows. No warning when no row reaches it. Returns the share.
    """
    from lightning.pytorch.utilities import rank_zero_warn

    from modules.data.stats import reached_share

    share = reached_share(lengths, max_length)
    if share > 0:
        rank_zero_warn(
            f"{share:.1%} of the {name} rows reach --data.max_length {max_length} tokens (longer texts are cut off "
            "there); raise --data.max_length if the end of a text matters."
        )
    return share


class WindowTotals:
    """Running per-document totals of window logits: each label's sum (max for multi-label) and the window count.

    Windows may come in any order and any number of batches (`add`); `logits()` gives each document's mean (max for
    multi-label). A document of one window gets its own logits back unchanged. Under DDP, ranks reduce `totals` with
    SUM (MAX for multi-label) and `counts` with SUM before `logits()`.

    Args:
        documents: How many documents the windows come from (indices 0..documents-1).
        multi_label: Max over a document's windows (a label present anywhere is present) instead of the mean (the
            document's evidence averaged for a single-label decision or a regression value).
    """

    def __init__(self, documents: int, multi_label: bool = False) -> None:
        self.documents, self.multi_label = documents, multi_label
        self.totals: torch.Tensor | None = None  # (documents, num_labels), allocated by the first `add`
        self.counts = torch.zeros(documents, dtype=torch.int32)

    def add(self, logits: torch.Tensor, document: torch.Tensor) -> None:
        """Fold `(windows, num_labels)` logits whose windows belong to `document` (`(windows,)` indices) in."""
        if logits.shape[0] != document.shape[0]:
            raise ValueError(f"{logits.shape[0]} window logits but {document.shape[0]} document indices")
        if self.totals is None:
            shape, start = (self.documents, *logits.shape[1:]), float("-inf") if self.multi_label else 0.0
            self.totals = torch.full(shape, start, dtype=logits.dtype, device=logits.device)
        document = document.to(self.totals.device).long()
        index = document.view(-1, *[1] * (logits.dim() - 1)).expand_as(logits)
        # scatter_reduce, not index_reduce (a beta API that warns): the same sum, in the same order, as index_add.
        self.totals.scatter_reduce_(0, index, logits, reduce="amax" if self.multi_label else "sum")
        self.counts.index_add_(0, document.to(self.counts.device), torch.ones_like(document, dtype=torch.int32))

    def logits(self) -> torch.Tensor:
        """`(documents, num_labels)` logits: the mean of each document's windows (max for multi-label)."""
        if self.totals is None:
            raise ValueError("no windows were added")
        if self.multi_label:
            return self.totals
        return self.totals / self.counts.to(self.totals.device).unsqueeze(-1)


def aggregate_windows(logits: torch.Tensor, document: torch.Tensor, multi_label: bool = False) -> torch.Tensor:
    """One row of logits per document from one row per window (`WindowTotals` in one go).

    Args:
        logits: `(windows, num_labels)` logits of every window.
        document: `(windows,)` document index of each window, 0..documents-1, every document present.
        multi_label: take each label's max over the windows instead of the mean.

    Returns:
        `(documents, num_labels)` logits, row `d` for document `d`. A server that windows a request with
        `encode_windows` calls this on the model's window logits to answer once per document.
    """
    if logits.shape[0] != document.shape[0]:
        raise ValueError(f"{logits.shape[0]} window logits but {document.shape[0]} document indices")
    if not document.numel():
        return logits.new_zeros((0, *logits.shape[1:]))
    totals = WindowTotals(int(document.max()) + 1, multi_label)
    totals.add(logits, document)
    return totals.logits()
