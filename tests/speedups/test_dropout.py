"""Lane dropout (speedups/dropout.py): torch's dropout statistics, exact gradients, and attention equal to SDPA's."""

import math
from unittest import mock

import pytest
import torch
from torch import nn
from transformers import BertConfig, BertForSequenceClassification
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from helpers import epoch_metrics, write_base_config
from modules.cli.app import cli_main
from modules.speedups.dropout import (
    ATTENTION,
    LaneDropout,
    attention,
    keep_mask,
    lane_dropout,
    masked_scores,
    use_lane_dropout,
)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_keep_mask_rate_and_independence(p):
    torch.manual_seed(0)
    n = 1_000_000
    kept = keep_mask(torch.Size([n]), p).float()
    sigma = math.sqrt(p * (1 - p) / n)
    assert abs(kept.mean().item() - (1 - p)) < 5 * sigma
    # Neighbours share a 64-bit draw: their masks must still be independent (P(both kept) = (1-p)^2), lane by lane.
    for lane in range(4):
        pairs = kept.view(-1, 4)
        both = (pairs[:, lane] * pairs[:, (lane + 1) % 4]).mean().item()
        assert abs(both - (1 - p) ** 2) < 5 * math.sqrt((1 - p) ** 2 / (n / 4)), lane
        assert abs(pairs[:, lane].mean().item() - (1 - p)) < 5 * math.sqrt(p * (1 - p) / (n / 4)), lane


def test_dropout_is_unbiased_and_its_gradient_uses_the_same_mask():
    torch.manual_seed(0)
    x = torch.randn(64, 128, 384, requires_grad=True)
    y = lane_dropout(x, 0.1)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.9) < 0.003
    scale = y[kept] / x[kept]
    assert torch.allclose(scale, torch.full_like(scale, 65536 / round(0.9 * 65536)))
    assert abs(y.sum().item() - x.sum().item()) < 0.01 * x.abs().sum().item()  # mean preserved
    y.backward(torch.ones_like(y))
    assert torch.equal(x.grad, torch.where(kept, scale[0], 0.0))


def test_dropout_keeps_dtype_and_seeded_draws():
    x = torch.randn(8, 16, dtype=torch.bfloat16)
    torch.manual_seed(3)
    a = lane_dropout(x, 0.3)
    torch.manual_seed(3)
    b = lane_dropout(x, 0.3)
    assert a.dtype == torch.bfloat16 and torch.equal(a, b)
    assert not torch.equal(a, lane_dropout(x, 0.3))  # the generator moved on
    assert torch.equal(lane_dropout(x, 0.3, training=False), x) and torch.equal(lane_dropout(x, 0.0), x)
    assert torch.equal(lane_dropout(x, 1.0), torch.zeros_like(x))
    assert torch.equal(lane_dropout(x, 1e-6), x)  # rounds to keep-all
    module = LaneDropout(0.3).eval()
    assert torch.equal(module(x), x)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32, torch.float64])
def test_masks_in_the_datas_dtype_keep_the_same_elements(dtype):
    """A floating mask holds `kept` where the bool mask of the same draw holds True, and 0 elsewhere."""
    shape = torch.Size([3, 50, 7])
    torch.manual_seed(5)
    kept = keep_mask(shape, 0.3)
    torch.manual_seed(5)
    ones = keep_mask(shape, 0.3, dtype)
    torch.manual_seed(5)
    scaled = keep_mask(shape, 0.3, dtype, kept=1 / 0.7)
    assert ones.dtype == scaled.dtype == dtype and ones.shape == scaled.shape == shape
    assert 0.6 < kept.float().mean().item() < 0.8
    assert torch.equal(ones, kept.to(dtype))
    assert torch.equal(scaled, torch.where(kept, torch.tensor(1 / 0.7, dtype=dtype), torch.tensor(0.0, dtype=dtype)))
    assert torch.equal(keep_mask(shape, 1e-6, dtype, kept=2.0), torch.full(shape, 2.0, dtype=dtype))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32, torch.float64])
def test_dropout_equals_the_bool_mask_reference_with_the_scale_at_full_precision(dtype):
    """Outputs and gradients bit for bit those of `where(mask, x, 0) * scale`, the scale a Python float: in bf16 not
    torch's CPU dropout, which multiplies by the scale rounded to bf16 (1/0.9 -> 1.109)."""
    x = torch.randn(4, 30, 24).to(dtype).requires_grad_()
    grad = torch.randn(4, 30, 24).to(dtype)
    torch.manual_seed(2)
    ours = lane_dropout(x, 0.1)
    (ours_grad,) = torch.autograd.grad(ours, x, grad)
    torch.manual_seed(2)
    reference = torch.where(keep_mask(x.shape, 0.1), x, 0.0) * (65536 / round(0.9 * 65536))
    (reference_grad,) = torch.autograd.grad(reference, x, grad)
    assert ours.dtype == dtype and torch.equal(ours, reference) and torch.equal(ours_grad, reference_grad)
    if dtype == torch.bfloat16:  # the bf16-rounded scale would give other values
        rounded = torch.tensor(65536 / round(0.9 * 65536), dtype=dtype).item()
        assert not torch.equal(ours[ours != 0], (x * rounded)[ours != 0])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_bool_attention_masks_give_masked_fills_probabilities_and_gradients(dtype):
    torch.manual_seed(0)
    scores = (4 * torch.randn(2, 3, 5, 5)).to(dtype).requires_grad_()
    mask = torch.rand(2, 1, 5, 5) > 0.4
    mask[..., 0] = True
    mask[1, 0, 2] = False  # a query that may attend to nothing: uniform probabilities, not NaN
    ours = torch.softmax(masked_scores(scores, mask), -1)
    reference = torch.softmax(scores.masked_fill(~mask, torch.finfo(dtype).min), -1)
    grad = torch.randn_like(ours)
    grad[1, :, 2] = 0  # as in a model: a position that attends nowhere is padding, whose output nothing reads
    assert torch.equal(ours, reference) and torch.equal(ours[1, :, 2], torch.full((3, 5), 0.2, dtype=dtype))
    masked = ~mask.expand_as(ours).clone()
    masked[1, :, 2] = False
    assert bool((ours[masked] == 0).all())
    assert torch.equal(*(torch.autograd.grad(p, scores, grad)[0] for p in (ours, reference)))


def _python_nodes(output: torch.Tensor) -> list[str]:
    """autograd.Function nodes (Python backward code) in the graph behind `output`."""
    found, stack, seen = [], [output.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if isinstance(node, torch.autograd.function.BackwardCFunction):
            found.append(type(node).__name__)
        stack.extend(next_node for next_node, _ in node.next_functions)
    return found


def test_backward_runs_no_python():
    """A Python backward lets Lightning's SIGTERM handler run mid-backward, where its DDP broadcast deadlocks."""
    x = torch.randn(4, 8, requires_grad=True)
    assert _python_nodes(lane_dropout(x, 0.1)) == []
    module = nn.Module()
    module.is_causal = False
    query, key, value = _qkv()
    assert _python_nodes(attention(module, query, key, value, None, dropout=0.1)[0]) == []


def _qkv():
    torch.manual_seed(0)
    return [torch.randn(2, 3, 5, 8, requires_grad=True) for _ in range(3)]


@pytest.mark.parametrize("causal", [False, True])
def test_attention_without_dropout_effect_matches_sdpa(causal):
    """p -> 0 on the dropout path is SDPA's math: same outputs and gradients, with a padding mask or causal."""
    module = nn.Module()
    module.is_causal = causal
    mask = None if causal else torch.ones(2, 1, 5, 5, dtype=torch.bool)
    if mask is not None:
        mask[0, ..., 3:] = False  # first row: the last two keys are padding
    query, key, value = _qkv()
    ours, _ = attention(module, query, key, value, mask, dropout=1e-9)
    ours.sum().backward()
    grads = [t.grad.clone() for t in (query, key, value)]
    for t in (query, key, value):
        t.grad = None
    reference, _ = sdpa_attention_forward(module, query, key, value, mask, dropout=0.0)
    reference.sum().backward()
    assert ours.shape == reference.shape == (2, 5, 3, 8)
    torch.testing.assert_close(ours, reference)
    for mine, theirs in zip(grads, (query.grad, key.grad, value.grad)):
        torch.testing.assert_close(mine, theirs)


@pytest.mark.parametrize(
    ("dtype", "grad", "products"),
    [(torch.bfloat16, True, True), (torch.bfloat16, False, False), (torch.float32, True, False)],
)
def test_attention_without_dropout_trains_bf16_as_products(dtype, grad, products):
    """p == 0: bf16 attention that needs gradients runs as products (SDPA's CPU backward in bf16 is ~4.5x slower), with
    SDPA's outputs and gradients; evaluation and fp32 training keep SDPA itself."""
    module = nn.Module()
    module.is_causal = False
    mask = torch.ones(2, 1, 5, 5, dtype=torch.bool)
    mask[1, ..., 4:] = False
    query, key, value = (t.detach().to(dtype).requires_grad_(grad) for t in _qkv())
    leaves = [t.detach().requires_grad_(grad) for t in (query, key, value)]
    with mock.patch("modules.speedups.dropout.sdpa_attention_forward", wraps=sdpa_attention_forward) as sdpa:
        ours, _ = attention(module, query, key, value, mask, dropout=0.0)
    assert sdpa.call_count == (0 if products else 1)
    reference, _ = sdpa_attention_forward(module, *leaves, mask)
    torch.testing.assert_close(ours, reference, rtol=2e-2, atol=2e-2)
    if grad:
        ours.float().square().sum().backward()
        reference.float().square().sum().backward()
        for mine, theirs in zip((query.grad, key.grad, value.grad), (t.grad for t in leaves)):
            torch.testing.assert_close(mine.float(), theirs.float(), rtol=5e-2, atol=5e-2)


def test_attention_dropout_drops_probabilities():
    module = nn.Module()
    module.is_causal = False
    query, key, value = _qkv()
    value = torch.eye(5).expand(2, 3, 5, 5)  # the output rows are then the attention probabilities themselves
    torch.manual_seed(0)
    probs, _ = attention(module, query, key, value, None, dropout=0.5)
    zeros = (probs == 0).float().mean().item()
    assert 0.35 < zeros < 0.65  # 150 probabilities, each dropped with probability 0.5
    kept = probs[probs != 0]
    reference, _ = sdpa_attention_forward(module, query, key, value, None, dropout=0.0)
    assert torch.allclose(kept, 2 * reference[probs != 0])


def test_use_lane_dropout_swaps_and_undoes():
    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32)
    model = BertForSequenceClassification(config).train()
    before = [name for name, m in model.named_modules() if type(m) is nn.Dropout]
    undo = use_lane_dropout(model)
    assert [name for name, m in model.named_modules() if isinstance(m, LaneDropout)] == before
    assert model.config._attn_implementation == ATTENTION
    ids = torch.randint(0, 50, (2, 6))
    model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    undo()
    assert [name for name, m in model.named_modules() if type(m) is nn.Dropout] == before
    assert model.config._attn_implementation == "sdpa"
    assert "attn" not in str(model.config.to_dict())  # nothing of it would reach a saved config


@pytest.mark.parametrize("fast", [True, False])
def test_fit_uses_lane_dropout_on_cpu_and_puts_torchs_back(fast, tiny_model, reviews_dir, tmp_path):
    """Through the CLI: training draws lane masks (unless switched off), learns, and leaves torch's dropout in place.

    The tiny model sits on a plateau for a seed-dependent number of epochs either way: seed 0 leaves it in 3 for both.
    """
    base = write_base_config(
        tmp_path,
        tiny_model,
        data={"dataset": str(reviews_dir)},
        trainer={"max_epochs": 3},
        model={"learning_rate": 1e-2},
    )
    with mock.patch("modules.speedups.dropout.keep_mask", wraps=keep_mask) as drawn:
        cli = cli_main(
            ["fit", "--config", str(base), "--model.fast_dropout", str(fast).lower(), "--seed_everything", "0"]
        )
    # 2 layers x (2 hidden + 1 attention) + embeddings + classifier = 8 dropouts per step
    assert drawn.call_count == (8 * cli.trainer.global_step if fast else 0)
    model = cli.model.model
    assert any(type(m) is nn.Dropout for m in model.modules())
    assert not any(isinstance(m, LaneDropout) for m in model.modules())
    assert model.config._attn_implementation == "sdpa"
    val_loss = epoch_metrics(tmp_path, "val_loss")
    assert val_loss[-1] < val_loss[0]
