"""`--model.num_layers`: which layers a smaller student keeps, that its export is a normal Hugging Face model, that a
checkpoint of it reloads without being cut twice, and the one-line errors for counts the model cannot take."""

import pytest
import torch
from transformers import (
    AlbertConfig,
    AlbertForSequenceClassification,
    AutoModelForSequenceClassification,
    BertConfig,
    BertForSequenceClassification,
)

from helpers import write_base_config
from modules.cli.app import cli_main
from modules.data.labels import LabelSpec
from modules.errors import HFLightningError
from modules.model import build
from modules.model.layers import kept_layers, layer_list
from modules.model.module import TransformerModule

SPEC = LabelSpec("single_label", ("neg", "pos"))


@pytest.fixture(scope="module")
def tiny_bert4(tmp_path_factory, tiny_model):
    """The tiny BERT's shape with 4 layers, so that keeping 2 has a choice to make."""
    folder = tmp_path_factory.mktemp("models") / "tiny-bert-4"
    config = BertConfig.from_pretrained(tiny_model, num_hidden_layers=4, num_labels=2)
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(folder)
    return folder


def _inputs(vocab_size: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {
        "input_ids": torch.randint(5, vocab_size, (3, 9), generator=generator),
        "attention_mask": torch.ones(3, 9, dtype=torch.long),
    }


def _assert_same_weights(kept: torch.nn.Module, source: torch.nn.Module) -> None:
    kept_state, source_state = kept.state_dict(), source.state_dict()
    assert kept_state.keys() == source_state.keys()
    assert all(torch.equal(kept_state[k], source_state[k]) for k in kept_state)


@pytest.mark.parametrize(
    ("depth", "num_layers", "expected"),
    [
        (12, 6, [0, 2, 4, 7, 9, 11]),  # DistilBERT's student of BERT-base
        (6, 3, [0, 3, 5]),
        (4, 2, [0, 3]),
        (6, 1, [0]),
        (6, 6, [0, 1, 2, 3, 4, 5]),  # all of them: a cut model is never cut again
    ],
)
def test_kept_layers_are_evenly_spaced_first_and_last_included(depth, num_layers, expected):
    assert kept_layers(depth, num_layers) == expected


def test_two_of_four_bert_layers_keep_their_weights_and_export_as_a_plain_model(tiny_bert4, tmp_path):
    source = AutoModelForSequenceClassification.from_pretrained(tiny_bert4)
    model, _ = build.from_name(str(tiny_bert4), SPEC, pretrained_weights=True, pad_token_id=0, num_layers=2)
    assert model.config.num_hidden_layers == 2 and len(model.bert.encoder.layer) == 2
    for kept, index in zip(model.bert.encoder.layer, [0, 3]):
        _assert_same_weights(kept, source.bert.encoder.layer[index])
    assert torch.equal(model.bert.embeddings.word_embeddings.weight, source.bert.embeddings.word_embeddings.weight)

    model.eval()
    model.save_pretrained(tmp_path / "student")
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "student")
    assert reloaded.config.num_hidden_layers == 2
    inputs = _inputs(model.config.vocab_size)
    with torch.no_grad():
        assert torch.equal(reloaded(**inputs).logits, model(**inputs).logits)
        assert not torch.equal(source(**inputs).logits, model(**inputs).logits)  # the cut changed the model


def test_distilbert_and_gpt2_layer_lists_are_found(tiny_distilbert, tiny_gpt2, tmp_path):
    source = AutoModelForSequenceClassification.from_pretrained(tiny_distilbert)
    model, _ = build.from_name(str(tiny_distilbert), SPEC, pretrained_weights=True, pad_token_id=0, num_layers=1)
    assert model.config.n_layers == 1 and len(model.distilbert.transformer.layer) == 1
    _assert_same_weights(model.distilbert.transformer.layer[0], source.distilbert.transformer.layer[0])
    model.save_pretrained(tmp_path / "distil")
    assert AutoModelForSequenceClassification.from_pretrained(tmp_path / "distil").config.n_layers == 1

    gpt2, _ = build.from_name(str(tiny_gpt2), SPEC, pretrained_weights=True, pad_token_id=0, num_layers=1)
    assert gpt2.config.n_layer == 1 and len(gpt2.transformer.h) == 1


def test_checkpoint_of_a_student_reloads_uncut_with_its_weights(tiny_bert4):
    """Export and `load_from_checkpoint` rebuild from `hf_config` (2 layers already); `--ckpt_path` rebuilds the
    architecture from the name: both give the student's keys and weights, not a second cut."""
    module = TransformerModule(
        model_name_or_path=str(tiny_bert4), num_layers=2, problem_type="single_label_classification"
    )
    module.hparams.label_names = list(SPEC.names)
    student, _ = build.from_name(str(tiny_bert4), SPEC, pretrained_weights=True, pad_token_id=0, num_layers=2)
    with torch.no_grad():  # weights a second cut would not reproduce
        for parameter in student.parameters():
            parameter.add_(torch.randn_like(parameter))
    module._set_model(student)
    checkpoint = {
        "hyper_parameters": dict(module.hparams),
        "hf_config": student.config.to_dict(),
        "state_dict": module.state_dict(),
    }

    exported = build.trained_model(checkpoint)
    assert exported.config.num_hidden_layers == 2
    assert exported.state_dict().keys() == student.state_dict().keys()
    assert all(torch.equal(v, student.state_dict()[k]) for k, v in exported.state_dict().items())

    architecture, _ = build.from_name(str(tiny_bert4), SPEC, pretrained_weights=False, pad_token_id=0, num_layers=2)
    architecture.load_state_dict(student.state_dict())  # strict: the same two layers, no more


def test_lora_checkpoint_takes_the_kept_pretrained_layers_not_the_first(tiny_bert4):
    source = AutoModelForSequenceClassification.from_pretrained(tiny_bert4)
    student, _ = build.from_name(str(tiny_bert4), SPEC, pretrained_weights=True, pad_token_id=0, num_layers=2)
    checkpoint = {"hyper_parameters": {}, "hf_config": student.config.to_dict()}
    rebuilt, _ = build.from_checkpoint(checkpoint, str(tiny_bert4), lora=True, num_layers=2)
    assert rebuilt.config.num_hidden_layers == 2
    _assert_same_weights(rebuilt.bert.encoder.layer[1], source.bert.encoder.layer[3])


@pytest.mark.parametrize(
    ("num_layers", "message"),
    [
        (0, r"^--model.num_layers 0: keep at least 1 layer \(leave it unset to keep every layer\)\.$"),
        (-1, r"^--model.num_layers -1: keep at least 1 layer"),
        (5, r"^--model.num_layers 5: the model has 4 layers; choose 1\.\.4\.$"),
    ],
)
def test_counts_the_model_cannot_take_are_refused_on_construction(tiny_bert4, num_layers, message):
    with pytest.raises(HFLightningError, match=message):
        TransformerModule(model_name_or_path=str(tiny_bert4), num_layers=num_layers)


def test_architecture_without_a_layer_list_is_named(tmp_path):
    folder = tmp_path / "tiny-albert"  # ALBERT shares one layer group across its depth: nothing to cut
    config = AlbertConfig(
        vocab_size=50, embedding_size=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64,
    )  # fmt: skip
    AlbertForSequenceClassification(config).save_pretrained(folder)
    with pytest.raises(HFLightningError, match=r"cannot find the layer list of the albert architecture"):
        TransformerModule(model_name_or_path=str(folder), num_layers=1)
    with pytest.raises(HFLightningError, match=r"layer list of the albert"):
        layer_list(AlbertForSequenceClassification(config))


def test_cli_refuses_a_count_above_the_depth_before_training(tmp_path, tiny_model, reviews_dir):
    base = write_base_config(tmp_path, tiny_model, data={"dataset": str(reviews_dir)})
    with pytest.raises(HFLightningError, match=r"^--model.num_layers 3: the model has 2 layers; choose 1\.\.2\.$"):
        cli_main(["fit", "--config", str(base), "--model.num_layers", "3"])
    assert not (tmp_path / "logs").exists()  # nothing ran: no run folder
