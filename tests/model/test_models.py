"""Architectures beyond BERT: a GPT-2-style decoder classifier whose tokenizer has no pad token."""

import json

import pytest

from helpers import read_metrics, run_dir, write_base_config
from modules.cli.app import cli_main

pytestmark = pytest.mark.e2e  # trains end to end: `make test-fast` skips it


def test_decoder_only_classifier_fits_and_tests(tmp_path, tiny_gpt2, reviews_dir):
    base = write_base_config(
        tmp_path, tiny_gpt2, data={"dataset": str(reviews_dir)}, trainer={"max_epochs": 3}, export={"enabled": True}
    )
    cli = cli_main(["fit", "--config", str(base)])
    assert cli.datamodule.tokenizer.pad_token == "<|endoftext|>"  # set from EOS, the usual fix
    assert cli.model.model.config.pad_token_id == 0  # the model finds each row's last real token through it
    cli_main(["test", "--config", str(base), "--ckpt_path", "best"])
    assert read_metrics(run_dir(tmp_path) / "test_metrics.json")["test_acc"] > 0.8
    exported = json.loads((run_dir(tmp_path) / "hf_model" / "config.json").read_text())
    assert exported["pad_token_id"] == 0 and exported["id2label"] == {"0": "neg", "1": "pos"}
