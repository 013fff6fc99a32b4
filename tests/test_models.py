"""Architectures beyond BERT: a GPT-2-style decoder classifier whose tokenizer has no pad token."""

import json

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import GPT2Config, GPT2ForSequenceClassification, PreTrainedTokenizerFast

from helpers import read_metrics, run_dir, write_base_config
from main import cli_main
from modules.demo import vocabulary


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory):
    """A 2-layer GPT-2 classifier and a word-level tokenizer with an end-of-text token and, like GPT-2, no pad."""
    folder = tmp_path_factory.mktemp("models") / "tiny-gpt2"
    words = ["<|endoftext|>"] + [w for w in vocabulary() if not w.startswith("[")]
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<|endoftext|>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|endoftext|>", model_max_length=128)
    assert wrapped.pad_token is None
    wrapped.save_pretrained(folder)
    config = GPT2Config(vocab_size=len(words), n_embd=32, n_layer=2, n_head=2, n_positions=128)
    torch.manual_seed(0)
    GPT2ForSequenceClassification(config).save_pretrained(folder)
    return folder


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
