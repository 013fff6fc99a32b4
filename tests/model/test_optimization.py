"""The optimizer's schedule and parameter groups, checked as numbers on a tiny module without training."""

from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch import LightningModule

from modules.model.optimization import configure_adamw, parameter_groups, warmup_then_linear_decay


class _Tiny(LightningModule):
    """An embedding, a LayerNorm and a linear head: the parameter kinds of a transformer classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.embeddings = torch.nn.Embedding(10, 4)
        self.norm = torch.nn.LayerNorm(4)
        self.head = torch.nn.Linear(4, 2)


def _adamw_of(module: LightningModule, total_steps: int, warmup_ratio: float) -> dict:
    # What configure_adamw reads from the trainer: the step count, no resume, no fp16 loss scaler.
    trainer = SimpleNamespace(estimated_stepping_batches=total_steps, ckpt_path=None, precision_plugin=object())
    module.trainer = trainer
    return configure_adamw(module, learning_rate=1e-3, weight_decay=0.01, warmup_ratio=warmup_ratio)


def test_schedule_factor_at_its_turning_points():
    factor = warmup_then_linear_decay(total_steps=10, warmup_steps=4)
    assert factor(0) == pytest.approx(1 / 5)  # first step: 1/(warmup+1), never 0
    assert factor(3) == pytest.approx(4 / 5)  # last warmup step
    assert factor(4) == pytest.approx(1.0)  # end of warmup: the full learning rate
    assert factor(7) == pytest.approx(0.5)  # halfway through the 6 decay steps
    assert factor(9) == pytest.approx(1 / 6)  # last step
    assert factor(10) == 0.0 and factor(12) == 0.0  # past the end: 0, never negative


def test_schedule_without_warmup_starts_at_the_full_rate():
    factor = warmup_then_linear_decay(total_steps=8, warmup_steps=0)
    assert [factor(s) for s in (0, 4, 7)] == pytest.approx([1.0, 0.5, 1 / 8])


def test_configured_scheduler_steps_the_learning_rate_per_optimizer_step():
    answer = _adamw_of(_Tiny(), total_steps=20, warmup_ratio=0.25)  # 5 warmup steps, 15 decay steps
    optimizer, scheduler = answer["optimizer"], answer["lr_scheduler"]["scheduler"]
    assert answer["lr_scheduler"]["interval"] == "step"
    rates = []
    for _ in range(20):
        decayed, not_decayed = (group["lr"] for group in optimizer.param_groups)
        assert decayed == not_decayed  # one schedule for both groups
        rates.append(decayed)
        optimizer.step()
        scheduler.step()
    assert rates[0] == pytest.approx(1e-3 / 6)
    assert rates[5] == pytest.approx(1e-3)  # end of warmup
    assert rates[5 + 15 // 2] == pytest.approx(1e-3 * 8 / 15)  # halfway through decay (step 12: 8 of 15 steps left)
    assert rates[19] == pytest.approx(1e-3 / 15)  # the last step
    assert optimizer.param_groups[0]["lr"] == 0.0  # after it


def test_biases_and_layernorm_weights_are_not_decayed_everything_else_is():
    module = _Tiny()
    decay, no_decay = parameter_groups(module.parameters(), weight_decay=0.01)
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in module.named_parameters()}
    assert sorted(names[id(p)] for p in decay["params"]) == ["embeddings.weight", "head.weight"]
    assert sorted(names[id(p)] for p in no_decay["params"]) == ["head.bias", "norm.bias", "norm.weight"]


def test_frozen_parameters_are_left_out_and_none_is_in_both_groups():
    module = _Tiny()
    module.embeddings.weight.requires_grad_(False)
    groups = _adamw_of(module, total_steps=4, warmup_ratio=0.0)["optimizer"].param_groups
    grouped = [id(p) for group in groups for p in group["params"]]
    trainable = [id(p) for p in module.parameters() if p.requires_grad]
    assert len(grouped) == len(set(grouped))  # no parameter in both groups
    assert sorted(grouped) == sorted(trainable)  # every trainable parameter, and no frozen one
    assert id(module.embeddings.weight) not in grouped
    assert [g["weight_decay"] for g in groups] == [0.01, 0.0]
