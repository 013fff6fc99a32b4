"""Windows of long documents and the per-document aggregation of their logits (modules/data/long_text.py)."""

import warnings

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from modules.data.long_text import aggregate_windows, encode_windows, truncated_share, warn_truncated
from modules.errors import HFLightningError


def test_a_long_text_becomes_overlapping_windows_and_a_short_one_stays_whole(tiny_model):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    words = tokenizer("great", add_special_tokens=False)["input_ids"]
    assert len(words) == 1
    long_text, short_text = " ".join(["great"] * 20), "great great"
    windows = encode_windows(tokenizer, [long_text, short_text], max_length=8, stride=2)

    assert windows["document"] == [0, 0, 0, 0, 0, 1]  # 20 tokens, windows of 6 moving by 4: 5 windows
    assert all(len(ids) <= 8 for ids in windows["input_ids"])
    assert windows["input_ids"][-1] == tokenizer(short_text)["input_ids"]  # untouched when it fits
    body = [ids[1:-1] for ids in windows["input_ids"][:5]]
    assert [len(ids) for ids in body] == [6, 6, 6, 6, 4]  # tokens 0-6, 4-10, 8-14, 12-18, 16-20
    assert sum(len(ids) for ids in body) - 2 * 4 == 20  # every token covered, the overlaps counted once


def test_stride_that_cannot_advance_is_refused_before_tokenizing(tiny_model):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    with pytest.raises(HFLightningError, match="--data.stride 4 must be .* below half of --data.max_length"):
        encode_windows(tokenizer, ["great"], max_length=8, stride=4)


def test_truncated_share_counts_rows_longer_than_max_length():
    assert truncated_share([3, 8, 9, 20], max_length=8) == 0.5
    assert truncated_share([], max_length=8) == 0.0


def test_window_logits_fold_into_one_row_per_document():
    logits = torch.tensor([[1.0, 0.0], [3.0, 2.0], [0.0, 5.0], [-1.0, -2.0]])
    document = torch.tensor([0, 0, 1, 1])
    assert torch.equal(aggregate_windows(logits, document), torch.tensor([[2.0, 1.0], [-0.5, 1.5]]))
    assert torch.equal(aggregate_windows(logits, document, multi_label=True), torch.tensor([[3.0, 2.0], [0.0, 5.0]]))
    with pytest.raises(ValueError, match="3 window logits but 4 document indices"):
        aggregate_windows(logits[:3], document)


def test_warn_truncated_gives_the_share_and_stays_quiet_when_nothing_is_cut():
    with pytest.warns(UserWarning, match=r"50\.0% of the train rows reach --data.max_length 8"):
        assert warn_truncated(np.array([3, 8, 5, 8]), max_length=8, name="train") == 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert warn_truncated(np.array([3, 7]), max_length=8, name="train") == 0.0
