"""The last layer for the first token only (speedups/first_token.py): the full layer's logits and gradients."""

import pickle
from copy import deepcopy
from unittest import mock

import pytest
import torch
from transformers import (
    AttentionInterface,
    BertConfig,
    BertForSequenceClassification,
    DistilBertConfig,
    DistilBertForSequenceClassification,
    ElectraConfig,
    ElectraForSequenceClassification,
    RobertaConfig,
    RobertaForSequenceClassification,
)
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from modules.speedups import first_token
from modules.speedups.dropout import use_lane_dropout
from modules.speedups.first_token import first_token_last_layer
from modules.speedups.fused_projections import fuse_qkv_projections

SIZES = {"hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 32}


def _model(kind: str, attention: str = "sdpa", dropout: float = 0.0) -> torch.nn.Module:
    torch.manual_seed(0)
    config_class, model_class = {
        "bert": (BertConfig, BertForSequenceClassification),
        "roberta": (RobertaConfig, RobertaForSequenceClassification),
        "electra": (ElectraConfig, ElectraForSequenceClassification),
    }[kind]
    extra = {"embedding_size": 16} if kind == "electra" else {}
    config = config_class(vocab_size=97, num_labels=3, **SIZES, **extra)
    config.hidden_dropout_prob = config.attention_probs_dropout_prob = dropout
    config._attn_implementation = attention
    model = model_class(config).train()
    with torch.no_grad():  # biases start at zero: give them values, so that a term they enter cannot go unchecked
        for name, parameter in model.named_parameters():
            if name.endswith("bias"):
                parameter.normal_(0.0, 0.5)
    return model


def _logits_and_grads(model, ids, mask, autocast: bool = False) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        logits = model(input_ids=ids, attention_mask=mask).logits
    (logits.float() * torch.arange(1.0, 4.0)).sum().backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    return logits, grads


def _inputs(padded: bool) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(5, 97, (3, 9), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    if padded:  # rows of 9, 6 and 2 tokens
        mask[1, 6:] = mask[2, 2:] = 0
        ids = ids.masked_fill(mask == 0, 1)
    return ids, mask


@pytest.mark.parametrize("kind", ["bert", "roberta", "electra"])
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("padded", [True, False])
def test_same_logits_and_gradients_as_the_full_last_layer(kind, attention, padded):
    model = _model(kind, attention)
    ids, mask = _inputs(padded)
    keys = list(model.state_dict())
    expected_logits, expected_grads = _logits_and_grads(model, ids, mask)
    undo = first_token_last_layer(model)
    assert undo is not None
    shapes = []
    hook = model.base_model.encoder.layer[-1].register_forward_hook(lambda m, i, o: shapes.append(o.shape))
    spy = mock.patch.object(first_token, "_first_query_attention", wraps=first_token._first_query_attention)
    with spy as folded:
        logits, grads = _logits_and_grads(model, ids, mask)
    hook.remove()
    assert shapes == [torch.Size([3, 1, 16])]  # the last layer ran for position 0 only
    assert folded.call_count == 1  # with key and value folded into the query (no projection of every token)
    torch.testing.assert_close(logits, expected_logits, rtol=1e-5, atol=1e-6)
    assert grads.keys() == expected_grads.keys()
    for name, grad in expected_grads.items():
        torch.testing.assert_close(grads[name], grad, rtol=1e-5, atol=1e-6, msg=name)
    assert list(model.state_dict()) == keys
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids, attention_mask=mask).logits, expected_logits.detach())
    undo()
    assert "forward" not in vars(model.base_model.encoder.layer[-1])


class _WrappedLinear(torch.nn.Linear):
    """A Linear subclass, as LoRA and quantized layers are: its weights may not say all it does."""


def test_projections_that_are_more_than_their_weights_run_as_modules():
    model = _model("bert")
    attention = model.base_model.encoder.layer[-1].attention.self
    wrapped = _WrappedLinear(16, 16)
    wrapped.load_state_dict(attention.value.state_dict())
    attention.value = wrapped
    ids, mask = _inputs(padded=True)
    expected_logits, expected_grads = _logits_and_grads(model, ids, mask)
    first_token_last_layer(model)
    calls = []
    wrapped.register_forward_hook(lambda m, i, o: calls.append(i[0].shape))
    with mock.patch.object(first_token, "_first_query_attention") as folded:
        logits, grads = _logits_and_grads(model, ids, mask)
    assert not folded.called and calls == [torch.Size([3, 9, 16])]  # the module ran, on every position
    torch.testing.assert_close(logits, expected_logits, rtol=1e-5, atol=1e-6)
    for name, grad in expected_grads.items():
        torch.testing.assert_close(grads[name], grad, rtol=1e-5, atol=1e-6, msg=name)


def test_attention_dropout_applies_to_the_folded_attention():
    """A dropped probability is dropped from both the mix of hidden states and the value bias's weight."""
    model = _model("bert")
    layer = model.base_model.encoder.layer[-1]
    ids, mask = _inputs(padded=True)
    drop = torch.tensor([1.0, 0.0, 2.0, 2.0, 0.0, 1.0, 1.0, 2.0, 0.0])  # kept x2, dropped, kept as it is

    class Dropped(torch.nn.Module):
        def forward(self, weights: torch.Tensor) -> torch.Tensor:
            return weights * drop

    with torch.no_grad():
        hidden = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[-2]
        attention = layer.attention.self
        attention.dropout = Dropped()
        # the full layer's attention, for position 0, with the same multipliers on its probabilities
        q = attention.query(hidden[:, :1]).view(3, 1, 2, 8).transpose(1, 2)
        k = attention.key(hidden).view(3, 9, 2, 8).transpose(1, 2)
        v = attention.value(hidden).view(3, 9, 2, 8).transpose(1, 2)
        scores = (q @ k.transpose(2, 3)) * attention.scaling
        scores = scores.masked_fill(mask[:, None, None, :] == 0, torch.finfo(scores.dtype).min)
        reference = (torch.softmax(scores, -1) * drop) @ v
        folded = first_token._first_query_attention(attention, hidden[:, :1], hidden, mask[:, None, None, :] == 1)
    torch.testing.assert_close(folded, reference.transpose(1, 2).reshape(3, 1, 16), rtol=1e-5, atol=1e-6)


def test_with_the_cpu_speedups_under_bf16_autocast():
    """Together with fused projections and lane dropout's attention (no dropout, so draws do not matter)."""
    model = _model("bert")
    ids, mask = _inputs(padded=True)
    expected_logits, expected_grads = _logits_and_grads(model, ids, mask, autocast=True)
    undo = [use_lane_dropout(model), fuse_qkv_projections(model), first_token_last_layer(model)]
    assert model.config._attn_implementation == "hf_lightning_cpu"
    logits, grads = _logits_and_grads(model, ids, mask, autocast=True)
    torch.testing.assert_close(logits, expected_logits, rtol=2e-2, atol=2e-2)
    for name, grad in expected_grads.items():
        torch.testing.assert_close(grads[name], grad, rtol=5e-2, atol=5e-3, msg=name)
    for u in reversed(undo):
        u()
    assert model.config._attn_implementation == "sdpa"


def test_dropout_stays_on_in_training_and_off_in_evaluation():
    """With dropout on, train-mode logits vary from call to call; eval-mode ones equal the full layer's."""
    model = _model("bert", dropout=0.5)
    ids, mask = _inputs(padded=True)
    first_token_last_layer(model)
    draws = torch.stack([model(input_ids=ids, attention_mask=mask).logits for _ in range(2)])
    assert not torch.equal(draws[0], draws[1])
    model.eval()
    full = _model("bert", dropout=0.5).eval()
    with torch.no_grad():
        torch.testing.assert_close(
            model(input_ids=ids, attention_mask=mask).logits, full(input_ids=ids, attention_mask=mask).logits
        )


def test_models_it_does_not_cover_are_left_as_they_are():
    config = DistilBertConfig(vocab_size=97, dim=16, n_layers=2, n_heads=2, hidden_dim=32)
    assert first_token_last_layer(DistilBertForSequenceClassification(config)) is None
    decoder = _model("bert")
    decoder.base_model.encoder.layer[-1].is_decoder = True
    assert first_token_last_layer(decoder) is None
    model = _model("bert")
    assert first_token_last_layer(model) is not None
    assert first_token_last_layer(model) is None  # applied once


def test_other_attention_kernels_and_cross_attention_run_the_full_layer():
    model = _model("bert")
    first_token_last_layer(model)
    layer = model.base_model.encoder.layer[-1]
    hidden = torch.randn(3, 9, 16)
    assert layer(hidden, None).shape == (3, 1, 16)
    assert layer(hidden, None, torch.randn(3, 4, 16)).shape == (3, 9, 16)  # encoder states given: as it was
    AttentionInterface.register("test_other_kernel", sdpa_attention_forward)
    layer.attention.self.config._attn_implementation = "test_other_kernel"
    assert layer(hidden, None).shape == (3, 9, 16)
    layer.attention.self.config._attn_implementation = "sdpa"


def test_the_model_pickles_and_deep_copies():
    model = _model("bert")
    first_token_last_layer(model)
    ids, mask = _inputs(padded=True)
    model.eval()
    for copy in (pickle.loads(pickle.dumps(model)), deepcopy(model)):
        assert copy.base_model.encoder.layer[-1].forward.args[0] is copy.base_model.encoder.layer[-1]
        with torch.no_grad():
            torch.testing.assert_close(
                copy(input_ids=ids, attention_mask=mask).logits, model(input_ids=ids, attention_mask=mask).logits
            )
