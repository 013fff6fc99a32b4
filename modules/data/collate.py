"""Dynamic padding: each batch is padded to its own longest row, not to `max_length`; and `logits_by_length`, which
scores texts in batches of similar length for the same reason."""

from collections.abc import Callable, Sequence

import numpy as np
import torch

# Padding value per tokenizer output; keys not listed here are not model inputs and are dropped.
_PAD_VALUES = {"input_ids": None, "attention_mask": 0, "token_type_ids": None}


class PaddingCollator:
    """Stack tokenized rows into tensors, padding each batch to its longest row.

    Rows hold the tokenizer's outputs (`input_ids`, `attention_mask`, optionally `token_type_ids`), an `index`
    (position in the split, so predictions can be put back in input order) and usually `labels`.

    Args:
        pad_token_id: Value that pads `input_ids`.
        pad_token_type_id: Value that pads `token_type_ids`.
        padding_side: "right" (BERT-style encoders) or "left" (tokenizers of decoder models that ask for it).
        pad_to_multiple_of: Round the padded length up to this multiple (8 helps GPU tensor cores); None for exact.
        label_dtype: `torch.long` for class ids, `torch.float` for regression and multi-label targets.
    """

    def __init__(
        self,
        pad_token_id: int,
        pad_token_type_id: int = 0,
        padding_side: str = "right",
        pad_to_multiple_of: int | None = None,
        label_dtype: torch.dtype = torch.long,
    ) -> None:
        self.pad_values = {**_PAD_VALUES, "input_ids": pad_token_id, "token_type_ids": pad_token_type_id}
        self.padding_side = padding_side
        self.pad_to_multiple_of = pad_to_multiple_of
        self.label_dtype = label_dtype

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        length = max(len(row["input_ids"]) for row in rows)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        batch: dict[str, torch.Tensor] = {}
        for key, pad in self.pad_values.items():
            if key not in rows[0]:
                continue
            # Rows copied into one numpy array: a tensor per row takes several times the host time, which a GPU step
            # (host-bound at these sizes) waits for.
            out = np.full((len(rows), length), pad, dtype=np.int64)  # (batch, padded length)
            for i, row in enumerate(rows):
                values = row[key]
                if self.padding_side == "left":
                    out[i, length - len(values) :] = values
                else:
                    out[i, : len(values)] = values
            batch[key] = torch.from_numpy(out)
        batch["index"] = torch.tensor([row["index"] for row in rows], dtype=torch.long)
        if "labels" in rows[0] and rows[0]["labels"] is not None:
            batch["labels"] = torch.tensor([row["labels"] for row in rows], dtype=self.label_dtype)
        if "teacher_logits" in rows[0]:  # distillation's soft targets (modules/distill)
            batch["teacher_logits"] = torch.from_numpy(np.array([row["teacher_logits"] for row in rows], np.float32))
        return batch


def logits_by_length(
    tokenizer,
    texts: Sequence[str],
    pairs: Sequence[str] | None,
    logits_of: Callable[[dict[str, np.ndarray]], np.ndarray],
    num_labels: int,
    batch_size: int,
    max_length: int | None = None,
    keys: Sequence[str] | None = None,
) -> np.ndarray:
    """Logits (rows x `num_labels`, float32) of `texts` (with their `pairs`), in input order, computed in batches of
    rows of similar length so that little padding is computed: each batch, padded by `tokenizer` as numpy arrays
    (its `keys` only, when given), goes to `logits_of`."""
    encoded = tokenizer(list(texts), list(pairs) if pairs is not None else None, truncation=True, max_length=max_length)
    keys = [k for k in (keys or list(encoded.keys())) if k in encoded]
    order = np.argsort([len(ids) for ids in encoded["input_ids"]], kind="stable")
    out = np.empty((len(order), num_labels), np.float32)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        batch = tokenizer.pad({k: [encoded[k][i] for i in rows] for k in keys}, return_tensors="np")
        out[rows] = logits_of(dict(batch))
    return out
