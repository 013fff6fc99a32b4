"""Streaming train data: equal batches on every rank of a ragged split, exact resume from a saved position."""

import csv
from itertools import islice

import pytest
from transformers import AutoTokenizer

from modules.data.datamodule import HFDataModule
from modules.data.labels import LabelSpec
from modules.data.streaming import StreamingBatches, open_stream
from modules.errors import HFLightningError


def _write(path, rows: list[dict]) -> str:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["text", "label"])
        writer.writeheader()
        writer.writerows(rows)
    return str(path)


def _batches(stream, tokenizer, buffer_size: int = 6) -> StreamingBatches:
    return StreamingBatches(
        stream, tokenizer, 32, "text", None, "label", LabelSpec("single_label", ("neg", "pos")), 3, buffer_size, True, 0
    )


def _ids(batch: list[dict]) -> list[int]:
    return [row["index"] for row in batch]


def test_resume_from_a_saved_position_gives_the_same_batches(tiny_model, review_rows, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    train = _write(tmp_path / "train.csv", review_rows(30))
    first = _batches(open_stream(None, None, train, 0, 1), tokenizer)
    reference = [_ids(b) for b in islice(iter(first), 25)]  # 30 rows of 3: 10 a pass, so two epochs and a half
    positions = dict(first.positions)
    assert len({tuple(b) for b in reference[:10]}) == 10 and sorted(sum(reference[:10], [])) == list(range(30))
    for taken in (4, 10, 17):
        resumed = _batches(open_stream(None, None, train, 0, 1), tokenizer)
        resumed.start = positions[taken]
        assert [_ids(b) for b in islice(iter(resumed), 25 - taken)] == reference[taken:]


def test_ragged_shards_never_run_dry(tiny_model, review_rows, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    train = _write(tmp_path / "train.csv", review_rows(7))  # rank 0 gets 4 rows, rank 1 gets 3
    counts = [len(list(islice(iter(_batches(open_stream(None, None, train, r, 2), tokenizer)), 12))) for r in (0, 1)]
    assert counts == [12, 12]


def test_streaming_without_label_names_fails_before_loading(tmp_path):
    files = {"train": str(tmp_path / "t.csv"), "validation": str(tmp_path / "v.csv")}
    with pytest.raises(HFLightningError, match="--data.label_names"):
        HFDataModule(data_files=files, streaming=True)
    with pytest.raises(HFLightningError, match="validation"):
        HFDataModule(data_files=files["train"], streaming=True, label_names=["neg", "pos"])
