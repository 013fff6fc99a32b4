"""Query, key and value projections of an attention layer computed as one matmul.

Attention layers project the same hidden states three times (`self.query(h)`, `self.key(h)`, `self.value(h)`). On CPU
one (tokens x 3*hidden) matmul runs faster than three (tokens x hidden) ones, and under bf16 autocast the hidden states
are cast to bf16 once instead of three times, and their three gradients come back as one. Only `forward` of the three
`nn.Linear` modules changes: their parameters, state_dict keys, hooks and checkpoints stay as they are. The first of
the three computes all three outputs from the concatenated weights; the other two hand back theirs when called, in
turn, on that same input tensor, and compute their own otherwise (cross-attention, hooks that change the input).
"""

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

# Names of the three projections in Hugging Face attention layers (BERT family; Llama, Mistral, Qwen and the like).
PROJECTION_NAMES = (("query", "key", "value"), ("q_proj", "k_proj", "v_proj"))


class _SharedInputProjections:
    """The fused forward of three Linears on one input: the first computes all, the next two take their share."""

    def __init__(self, linears: tuple[nn.Linear, nn.Linear, nn.Linear]) -> None:
        self.linears = linears
        self.sizes = [linear.out_features for linear in linears]
        self.pending: tuple[torch.Tensor, tuple[torch.Tensor, ...], int] | None = None  # (input, outputs, next index)

    def forward(self, index: int, x: torch.Tensor) -> torch.Tensor:
        pending, self.pending = self.pending, None
        if index == 0:
            weight = torch.cat([linear.weight for linear in self.linears])
            bias = self.linears[0].bias
            if bias is not None:
                bias = torch.cat([linear.bias for linear in self.linears])
            outputs = F.linear(x, weight, bias).split(self.sizes, dim=-1)
            self.pending = (x, outputs, 1)
            return outputs[0]
        if pending is not None and pending[0] is x and pending[2] == index:
            if index + 1 < len(self.linears):
                self.pending = (x, pending[1], index + 1)
            return pending[1][index]
        linear = self.linears[index]
        return F.linear(x, linear.weight, linear.bias)


def _fusable(linears: list[nn.Module]) -> bool:
    if any(type(linear) is not nn.Linear for linear in linears):  # LoRA, quantized and other wrapped layers: as is
        return False
    first = linears[0]
    return all(
        linear.in_features == first.in_features
        and (linear.bias is None) == (first.bias is None)
        and linear.weight.dtype == first.weight.dtype
        and linear.weight.device == first.weight.device
        and linear.weight.requires_grad == first.weight.requires_grad
        for linear in linears
    )


def fuse_qkv_projections(model: nn.Module) -> Callable[[], None] | None:
    """Compute each attention layer's query/key/value projections as one matmul; returns undo, or None if none fused."""
    fused = []
    for module in model.modules():
        for names in PROJECTION_NAMES:
            linears = [getattr(module, name, None) for name in names]
            if all(isinstance(linear, nn.Module) for linear in linears) and _fusable(linears):
                shared = _SharedInputProjections(tuple(linears))
                for index, linear in enumerate(linears):
                    linear.forward = functools.partial(shared.forward, index)
                    fused.append(linear)
    if not fused:
        return None

    def undo() -> None:
        for linear in fused:
            del linear.forward  # the instance attribute: nn.Linear.forward shows through again

    return undo
