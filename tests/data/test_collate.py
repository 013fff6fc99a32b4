"""PaddingCollator: each batch padded to its own longest row, on the side the tokenizer asks for."""

import torch

from modules.data.collate import PaddingCollator

ROWS = [
    {"input_ids": [2, 7, 3], "attention_mask": [1, 1, 1], "token_type_ids": [0, 0, 0], "index": 4, "labels": 1},
    {"input_ids": [2, 3], "attention_mask": [1, 1], "token_type_ids": [0, 0], "index": 9, "labels": 0},
]


def test_right_padding_to_longest_row():
    batch = PaddingCollator(pad_token_id=0, pad_token_type_id=5)(ROWS)
    assert batch["input_ids"].tolist() == [[2, 7, 3], [2, 3, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["token_type_ids"].tolist() == [[0, 0, 0], [0, 0, 5]]
    assert batch["index"].tolist() == [4, 9] and batch["labels"].dtype == torch.long
    assert batch["input_ids"].dtype == batch["attention_mask"].dtype == torch.long


def test_left_padding_multiple_of_and_float_labels():
    rows = [{k: v for k, v in r.items() if k != "token_type_ids"} for r in ROWS]
    rows = [{**r, "labels": [0.0, 1.0]} for r in rows]
    batch = PaddingCollator(pad_token_id=1, padding_side="left", pad_to_multiple_of=4, label_dtype=torch.float)(rows)
    assert batch["input_ids"].tolist() == [[1, 2, 7, 3], [1, 1, 2, 3]]
    assert "token_type_ids" not in batch
    assert batch["labels"].dtype == torch.float and batch["labels"].shape == (2, 2)


def test_unlabeled_rows_have_no_labels():
    rows = [{k: v for k, v in r.items() if k != "labels"} for r in ROWS]
    assert "labels" not in PaddingCollator(pad_token_id=0)(rows)
