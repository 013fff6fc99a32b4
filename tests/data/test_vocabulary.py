"""The unknown-token check: a tokenizer that does not know the data's words says so once, with the rate."""

import pytest
from datasets import Dataset
from transformers import AutoTokenizer

from modules.data.preprocess import check_unknown_tokens


def _encoded(tokenizer, texts: list[str]) -> Dataset:
    return Dataset.from_dict({"input_ids": tokenizer(texts)["input_ids"]})


def test_unknown_words_warn_with_rate_and_example(tiny_model):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    texts = ["zorblax quimby frandle", "a wonderful film"]
    with pytest.warns(UserWarning, match=r"50% of the training tokens are unknown .*'zorblax quimby frandle'"):
        rate = check_unknown_tokens(_encoded(tokenizer, texts), texts, tokenizer)
    assert rate == pytest.approx(3 / 6)  # 3 of 6 words; [CLS]/[SEP] not counted


def test_known_words_do_not_warn(tiny_model, recwarn):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    texts = ["a wonderful film", "the plot was dull and tedious"]
    assert check_unknown_tokens(_encoded(tokenizer, texts), texts, tokenizer) == 0.0
    assert not [w for w in recwarn if "unknown to the tokenizer" in str(w.message)]
