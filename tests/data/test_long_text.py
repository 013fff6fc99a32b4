"""Windows of long documents and the per-document aggregation of their logits (modules/data/long_text.py)."""

import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import AutoConfig, AutoTokenizer

from helpers import read_metrics, run_dir, write_base_config
from modules.cli.app import cli_main
from modules.data.datamodule import HFDataModule
from modules.data.demo import long_reviews, write_reviews
from modules.data.long_text import (
    WindowTotals,
    aggregate_windows,
    encode_windows,
    truncated_share,
    warn_truncated,
)
from modules.errors import HFLightningError
from modules.outputs.export import export_checkpoint


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


def test_single_label_and_regression_windows_average_and_multi_label_takes_the_max():
    logits = torch.tensor([[1.0, -2.0, 0.5], [3.0, 0.0, -0.5], [2.0, 4.0, 1.0]])
    document = torch.tensor([0, 0, 0])
    assert torch.allclose(aggregate_windows(logits, document), torch.tensor([[2.0, 2.0 / 3, 1.0 / 3]]))
    assert torch.equal(aggregate_windows(logits, document, multi_label=True), torch.tensor([[3.0, 4.0, 1.0]]))
    values = torch.tensor([[0.25], [1.75], [-3.0]])  # regression: one column, a document's mean value
    assert torch.equal(aggregate_windows(values, torch.tensor([1, 0, 1])), torch.tensor([[1.75], [-1.375]]))


def test_a_document_of_one_window_keeps_its_logits_exactly():
    logits = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    document = torch.arange(5)
    assert torch.equal(aggregate_windows(logits, document), logits)
    assert torch.equal(aggregate_windows(logits, document, multi_label=True), logits)


@pytest.mark.parametrize("multi_label", [False, True], ids=["mean", "max"])
def test_aggregation_ignores_window_order_and_batching(multi_label):
    generator = torch.Generator().manual_seed(1)
    logits = torch.randint(-8, 8, (12, 3), generator=generator).float() / 4  # exact in fp32, whatever the sum order
    document = torch.tensor([0, 1, 2, 0, 1, 3, 0, 2, 1, 3, 0, 2])
    whole = aggregate_windows(logits, document, multi_label)
    order = torch.randperm(12, generator=generator)
    assert torch.equal(aggregate_windows(logits[order], document[order], multi_label), whole)
    totals = WindowTotals(4, multi_label)  # predict's writer: batches of windows in any order
    for part in order.split(5):
        totals.add(logits[part], document[part])
    assert torch.equal(totals.logits(), whole) and totals.counts.tolist() == [4, 3, 3, 2]


def test_predict_folds_windows_without_a_beta_warning():
    totals = WindowTotals(2, multi_label=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # index_reduce warned "is in beta" once per process
        totals.add(torch.tensor([[1.0], [2.0], [0.5]]), torch.tensor([0, 0, 1]))
    assert totals.logits().tolist() == [[2.0], [0.5]]


def test_warn_truncated_gives_the_share_and_stays_quiet_when_nothing_is_cut():
    with pytest.warns(UserWarning, match=r"50\.0% of the train rows reach --data.max_length 8"):
        assert warn_truncated(np.array([3, 8, 5, 8]), max_length=8, name="train") == 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert warn_truncated(np.array([3, 7]), max_length=8, name="train") == 0.0


@pytest.mark.e2e
def test_chunk_learns_what_lies_past_max_length_and_answers_once_per_document(tiny_model, tmp_path, monkeypatch):
    # The one sentiment word of each document sits after 30 neutral ones: windows of 16 tokens see it, a truncated
    # text never does. Trained and scored through the CLI: fit, test (per document), predict (one row per document).
    data = write_reviews(tmp_path / "long", {"train": 200, "validation": 50, "test": 100}, long_reviews)
    test = pd.read_parquet(data / "data" / "test-00000-of-00001.parquet")
    accuracy = {}
    for mode in ("truncate", "chunk"):
        root = tmp_path / mode
        base = write_base_config(
            root, tiny_model, trainer={"max_epochs": 5}, model={"learning_rate": 3e-3},
            data={"dataset": str(data), "max_length": 16, "long_text": mode, "stride": 4, "batch_size": 32},
        )  # fmt: skip
        cli_main(["fit", "--config", str(base)])
        cli_main(["test", "--config", str(base), "--ckpt_path", "last"])
        accuracy[mode] = read_metrics(run_dir(root) / "test_metrics.json")["test_acc"]
    assert accuracy["truncate"] < 0.65 and accuracy["chunk"] >= 0.9, accuracy
    output = tmp_path / "predictions.csv"
    cli_main(["predict", "--config", str(tmp_path / "chunk" / "base.yaml"), "--ckpt_path", "last",
              "--predictions.output_path", str(output)])  # fmt: skip
    rows = pd.read_csv(output)
    assert rows["text"].tolist() == test["text"].tolist()  # one row per document, in input order
    assert (rows["prediction"] == test["label"].map({0: "neg", 1: "pos"})).mean() == pytest.approx(accuracy["chunk"])
    # From the checkpoint alone, the windows are the run's: the same predictions.
    test[["text"]].to_csv(tmp_path / "new.csv", index=False)
    monkeypatch.chdir(tmp_path)
    checkpoint = str(run_dir(tmp_path / "chunk") / "checkpoints" / "last.ckpt")
    cli_main(["predict", "--ckpt_path", checkpoint, "--data.predict_file", "new.csv",
              "--predictions.output_path", "alone.csv", "--trainer.logger", "false"])  # fmt: skip
    assert pd.read_csv(tmp_path / "alone.csv")["prediction"].tolist() == rows["prediction"].tolist()
    # The export keeps how the run read long texts, for `serve`, and its length limit, in the tokenizer.
    folder = export_checkpoint(checkpoint, tmp_path / "hf_model")
    config = AutoConfig.from_pretrained(folder)
    assert (config.hf_lightning_long_text, config.hf_lightning_stride) == ("chunk", 4)
    assert AutoTokenizer.from_pretrained(folder).model_max_length == 16


def test_chunk_with_streaming_is_refused(tmp_path):
    with pytest.raises(HFLightningError, match="drop --data.streaming"):
        HFDataModule(data_files={"train": "a.csv", "validation": "b.csv"}, streaming=True, label_names=["a", "b"],
                     long_text="chunk")  # fmt: skip
