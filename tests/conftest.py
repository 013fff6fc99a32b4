"""Fixtures: a tiny BERT and tokenizer built from a config, data files written per test, and a CLI runner."""

import json
import os
from pathlib import Path

# Tests never touch the network. Set before transformers/datasets are imported: huggingface_hub reads it at import.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    BertForSequenceClassification,
    BertModel,
    DistilBertConfig,
    DistilBertForSequenceClassification,
    GPT2Config,
    GPT2ForSequenceClassification,
    PreTrainedTokenizerFast,
)

from modules.data.demo import NEGATIVE, POSITIVE, reviews, vocabulary, write_reviews, write_tiny_bert


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A 2-layer, hidden-32 BERT with a WordPiece vocabulary of the fixture words, saved with `save_pretrained`."""
    return write_tiny_bert(tmp_path_factory.mktemp("models") / "tiny-bert")


@pytest.fixture(scope="session")
def tiny_distilbert(tiny_model, tmp_path_factory) -> Path:
    """A DistilBERT-style model (its forward takes no `token_type_ids`) sharing the tiny BERT's tokenizer."""
    folder = tmp_path_factory.mktemp("models") / "tiny-distilbert"
    vocab_size = json.loads((tiny_model / "config.json").read_text())["vocab_size"]
    config = DistilBertConfig(
        vocab_size=vocab_size, dim=32, n_layers=2, n_heads=2, hidden_dim=64, max_position_embeddings=128
    )
    torch.manual_seed(0)
    DistilBertForSequenceClassification(config).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).write_bytes((tiny_model / name).read_bytes())
    return folder


@pytest.fixture(scope="session")
def tiny_model_no_dropout(tiny_model, tmp_path_factory) -> Path:
    """The tiny BERT with dropout off: runs that must match to the last bit whatever RNG each process holds."""
    folder = tmp_path_factory.mktemp("models") / "tiny-bert-no-dropout"
    folder.mkdir()
    for path in tiny_model.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    config = json.loads((folder / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, classifier_dropout=0.0)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


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


@pytest.fixture(scope="session")
def tiny_body(tiny_model, tmp_path_factory) -> Path:
    """The tiny BERT's body alone (no pooler, no head), as pretrained checkpoints ship, with the sentiment words'
    embeddings pushed apart along one direction: a stand-in for pretraining, so that frozen weights carry signal.

    Fine-tuning it builds the pooler and the classifier from scratch (`from_pretrained` reports both missing).
    """
    folder = tmp_path_factory.mktemp("models") / "tiny-body"
    full = BertForSequenceClassification.from_pretrained(tiny_model)
    body = BertModel(full.config, add_pooling_layer=False)
    body.load_state_dict({k: v for k, v in full.bert.state_dict().items() if not k.startswith("pooler.")})
    ids = {word: i for i, word in enumerate(vocabulary())}
    direction = torch.randn(full.config.hidden_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for words, sign in ((POSITIVE, 1.0), (NEGATIVE, -1.0)):
            body.embeddings.word_embeddings.weight[[ids[w] for w in words]] += sign * direction / direction.norm()
    body.save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).write_bytes((tiny_model / name).read_bytes())
    return folder


@pytest.fixture(scope="session")
def reviews_dir(tmp_path_factory) -> Path:
    """A learnable sentiment dataset in Hub layout (parquet, `neg`/`pos` ClassLabel): 400/100/100 rows."""
    return write_reviews(tmp_path_factory.mktemp("data") / "reviews", {"train": 400, "validation": 100, "test": 100})


@pytest.fixture
def review_rows():
    """Rows of the learnable review data as a list of dicts, for tests that write their own files."""

    def make(n: int, seed: int = 0) -> list[dict]:
        data = reviews(n, seed)
        return [dict(zip(data, values)) for values in zip(*data.values())]

    return make


@pytest.fixture(scope="session")
def topic_files(tmp_path_factory) -> dict:
    """Generated multi-label JSONL splits (tests/helpers.py `topic_rows`): 6 topics, `rare` absent from validation."""
    from helpers import write_topic_splits

    return write_topic_splits(tmp_path_factory.mktemp("data") / "topics")


@pytest.fixture(scope="session")
def topic_run(tiny_model, topic_files, tmp_path_factory) -> dict:
    """One multi-label `fit` on `topic_files`, shared: calibrated, per-label thresholds tuned, exported with ONNX.
    Returns `config` (the run's YAML: pass it with `--config` to test/predict/validate), `run_dir`, `export` and
    `files`. Tests must not change the run's checkpoints (copy one first)."""
    from helpers import run_dir, write_base_config
    from modules.cli.app import cli_main

    folder = tmp_path_factory.mktemp("topic-run")
    config = write_base_config(
        folder,
        tiny_model,
        trainer={"max_epochs": 8},
        model={"model_name_or_path": str(tiny_model), "learning_rate": 3e-3},
        data={"batch_size": 8, "data_files": topic_files, "label_column": "labels"},
        export={"enabled": True, "onnx": True},
    )
    cli_main(["fit", "--config", str(config)])
    return {"config": config, "run_dir": run_dir(folder), "export": run_dir(folder) / "hf_model", "files": topic_files}
