"""The last layer for the first token only (modules/first_token.py): the same logits and gradients as the full layer."""

import pickle
from copy import deepcopy

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

from modules.dropout import use_lane_dropout
from modules.first_token import first_token_last_layer
from modules.fused_projections import fuse_qkv_projections

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
    return model_class(config).train()


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
    logits, grads = _logits_and_grads(model, ids, mask)
    hook.remove()
    assert shapes == [torch.Size([3, 1, 16])]  # the last layer ran for position 0 only
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
