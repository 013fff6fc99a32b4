"""Arrow row checks scan a column in slices: the answers do not depend on where the slices fall."""

import pytest
from datasets import Dataset
from transformers import AutoConfig, AutoTokenizer

from modules.data import arrow_rows
from modules.data.preprocess import check_token_ids, check_unknown_tokens
from modules.errors import HFLightningError


@pytest.mark.parametrize("chunk_rows", [1, 2, 3, 100])
def test_blank_text_mask_is_the_same_for_any_slice_size(chunk_rows, monkeypatch):
    monkeypatch.setattr(arrow_rows, "CHUNK_ROWS", chunk_rows)
    split = Dataset.from_dict({"a": ["x", " ", None, "y", "z", "\t"], "b": ["p", "q", "r", "", "s", "t"]})
    assert arrow_rows.blank_text_mask(split, ["a", "b"]).tolist() == [False, True, True, True, False, True]
    # A `select` (indices mapping) is followed, not the table underneath.
    assert arrow_rows.blank_text_mask(split.select([4, 1, 0]), ["a"]).tolist() == [False, True, False]


@pytest.mark.parametrize("chunk_rows", [1, 2, 100])
def test_token_checks_see_every_slice(chunk_rows, monkeypatch, tiny_model):
    monkeypatch.setattr(arrow_rows, "CHUNK_ROWS", chunk_rows)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    texts = ["a wonderful film", "the plot was dull", "zorblax quimby frandle"]  # the unknown words come last
    encoded = Dataset.from_dict({"input_ids": tokenizer(texts)["input_ids"]})
    with pytest.warns(UserWarning, match="unknown to the tokenizer"):
        rate = check_unknown_tokens(encoded, texts, tokenizer)
    assert rate == pytest.approx(3 / 10)
    config = AutoConfig.from_pretrained(tiny_model)
    too_big = Dataset.from_dict({"input_ids": [[1, 2], [3], [config.vocab_size + 5, 4]]})
    with pytest.raises(HFLightningError, match=f"token id {config.vocab_size + 5}"):
        check_token_ids(too_big, "train", config, "tok", "model")
    check_token_ids(too_big.select([0, 1]), "train", config, "tok", "model")  # the selected rows only


def test_released_file_pages_read_back_the_same(tmp_path):
    Dataset.from_dict({"text": [f"row {i}" if i % 7 else " " for i in range(5000)]}).save_to_disk(tmp_path / "d")
    split = Dataset.load_from_disk(tmp_path / "d")  # memory-mapped, as the datasets cache is
    first = arrow_rows.blank_text_mask(split, ["text"])  # releases the pages it read
    arrow_rows.release_mapped_pages()
    assert arrow_rows.blank_text_mask(split, ["text"]).tolist() == first.tolist()
    assert first.sum() == len(range(0, 5000, 7)) and split[4999]["text"] == "row 4999"
