"""Fused query/key/value projections (speedups/fused_projections.py): three matmuls' outputs and gradients."""

from unittest import mock

import pytest
import torch
from torch import nn
from transformers import BertConfig, BertForSequenceClassification

from modules.speedups.fused_projections import fuse_qkv_projections


def _model() -> BertForSequenceClassification:
    torch.manual_seed(0)
    config = BertConfig(vocab_size=97, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32)
    config.hidden_dropout_prob = config.attention_probs_dropout_prob = 0.0
    return BertForSequenceClassification(config).train()


def _grads(model, ids, autocast: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        logits = model(input_ids=ids, attention_mask=(ids > 3).long()).logits
    logits.float().square().sum().backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad()
    return logits, grads


@pytest.mark.parametrize("autocast", [False, True])
def test_same_outputs_and_gradients_as_separate_projections(autocast):
    ids = torch.randint(0, 97, (3, 7), generator=torch.Generator().manual_seed(1))
    model = _model()
    keys = list(model.state_dict())
    expected = _grads(model, ids, autocast)
    undo = fuse_qkv_projections(model)
    assert undo is not None
    calls, linear = [], nn.functional.linear
    with mock.patch(
        "torch.nn.functional.linear", side_effect=lambda x, w, b=None: calls.append(w.shape) or linear(x, w, b)
    ):
        logits, grads = _grads(model, ids, autocast)
    assert calls.count(torch.Size([48, 16])) == 2  # one (3 x 16) x 16 product per layer, not three
    tolerance = {"rtol": 2e-2, "atol": 2e-2} if autocast else {"rtol": 1e-5, "atol": 1e-6}
    torch.testing.assert_close(logits, expected[0], **tolerance)
    for name, grad in expected[1].items():
        torch.testing.assert_close(grads[name], grad, **tolerance, msg=name)
    assert list(model.state_dict()) == keys  # parameters and checkpoint keys untouched
    undo()
    assert all("forward" not in vars(m) for m in model.modules())
    torch.testing.assert_close(_grads(model, ids, autocast)[0], expected[0], rtol=1e-5, atol=1e-6)


def test_a_projection_called_on_another_input_computes_its_own():
    """Cross-attention-like use: key and value on other states than query's, or out of turn."""
    torch.manual_seed(0)
    layer = nn.Module()
    layer.query, layer.key, layer.value = (nn.Linear(8, 8) for _ in range(3))
    assert fuse_qkv_projections(layer) is not None
    x, other = torch.randn(2, 8), torch.randn(2, 8)
    q = layer.query(x)
    torch.testing.assert_close(layer.key(other), nn.functional.linear(other, layer.key.weight, layer.key.bias))
    torch.testing.assert_close(layer.value(x), nn.functional.linear(x, layer.value.weight, layer.value.bias))
    torch.testing.assert_close(q, nn.functional.linear(x, layer.query.weight, layer.query.bias))
    torch.testing.assert_close(layer.value(x), nn.functional.linear(x, layer.value.weight, layer.value.bias))


def test_not_applied_to_mismatched_or_wrapped_layers():
    layer = nn.Module()
    layer.query, layer.key, layer.value = nn.Linear(8, 8), nn.Linear(8, 8, bias=False), nn.Linear(8, 8)
    assert fuse_qkv_projections(layer) is None
    layer.key = nn.Sequential(nn.Linear(8, 8))  # e.g. a LoRA wrapper: not an nn.Linear
    assert fuse_qkv_projections(layer) is None
