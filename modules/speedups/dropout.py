"""Faster dropout for CPU training: masks cut from 16-bit random lanes, and attention whose dropout uses them.

torch's CPU dropout draws one Bernoulli sample per element (`bernoulli_`): about a sixth of a MiniLM training step on
2 cores. SDPA with dropout leaves its fused kernel for the math one, which draws the same way and upcasts bf16 to fp32.
Here each 64-bit random word gives four elements' masks, and the words come from numpy's PCG64DXSM generator (~4x the
speed of torch's mt19937 `random_`), seeded for each mask by one draw of torch's default generator: `seed_everything`
and the checkpointed torch RNG state govern every mask. Same expectation as torch's fp32 dropout: the keep probability
is quantised to 1/65536 and kept elements are scaled by exactly its inverse. Masks are in the data's dtype, applied as
products: torch's bool kernels (`where`, `masked_fill`) are among its slowest on CPU.
"""

from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from transformers import AttentionInterface, PreTrainedModel
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from modules import compat

ATTENTION = "hf_lightning_cpu"  # the name under which transformers finds `attention`
_LANES = 65536  # 16-bit lanes of a 64-bit random word
_SIGNED = {2: torch.int16, 4: torch.int32, 8: torch.int64}  # floating masks are built as the integers of their bits
# SDPA options the plain attention below does not implement: such calls go to SDPA as they are.
_SDPA_ONLY = ("softcap", "sliding_window", "position_bias", "s_aux", "sinks")


def keep_mask(shape: torch.Size, p: float, dtype: torch.dtype = torch.bool, kept: float = 1.0) -> torch.Tensor:
    """Mask where an element is kept with probability 1 - p (quantised to 1/65536): True, or `kept` in a floating
    `dtype` (0 elsewhere). torch's CPU kernels that take a bool tensor (`where`, `masked_fill`, a product) run ~6x
    slower than a product with a mask of the data's own dtype: 490 against 76 us on a (32, 30, 384) bf16 activation."""
    n, keep = shape.numel(), _keep_lanes(p)
    if keep == _LANES:  # p below 1/131072 rounds to 0 (and 65536 lanes would not fit the int16 comparison)
        return torch.full(shape, True if dtype == torch.bool else kept, dtype=dtype)
    seed = int(torch.randint(0, 2**62, ()))  # one draw of torch's generator: seeding and checkpoints govern the mask
    lanes = np.random.PCG64DXSM(seed).random_raw((n + 3) // 4).view(np.int16)[:n]  # uniform over [-32768, 32767]
    mask = np.less(lanes, keep - _LANES // 2)  # numpy's compare: ~6x torch's here
    if dtype == torch.bool:
        return torch.from_numpy(mask).view(shape)
    # `kept`'s bit pattern where kept, 0 elsewhere, made by numpy (torch's bool-to-float cast is another slow kernel). A
    # positive float's pattern is a positive signed integer of the same width.
    pattern = torch.tensor([kept], dtype=dtype).view(_SIGNED[dtype.itemsize]).numpy()
    return torch.from_numpy(np.multiply(mask, pattern, dtype=pattern.dtype)).view(dtype).view(shape)


def _keep_lanes(p: float) -> int:
    return max(1, round((1 - p) * _LANES))


def lane_dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """`F.dropout` with lane masks; the identity in eval mode or with p == 0."""
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return x * 0.0
    # Plain differentiable ops, no autograd.Function: a Python backward would let Lightning's SIGTERM handler run inside
    # the backward pass, where its DDP broadcast deadlocks against the other ranks' gradient all-reduce. The mask is in
    # x's dtype (a bool one would send the product, forward and backward, to torch's slow bool kernels).
    scale = _LANES / _keep_lanes(p)
    if x.dtype in (torch.float32, torch.float64):  # x * scale multiplies by the scale in x's dtype: one product
        return x * keep_mask(x.shape, p, x.dtype, scale)
    # bf16/fp16: the exact 0/1 product, then the scale as a Python float, applied at full precision. (torch's CPU
    # dropout multiplies bf16 by the scale rounded to bf16, 1/0.9 to 1.109: every kept element 0.16% low.)
    return x * keep_mask(x.shape, p, x.dtype) * scale


class LaneDropout(nn.Dropout):
    """`nn.Dropout` with lane masks (same `p`, no state): swapped in for the model's dropouts while training on CPU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return lane_dropout(x, self.p, self.training)


def masked_scores(scores: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Attention scores with a transformers mask applied: bool (SDPA's, True = attend) or additive (eager's)."""
    if attention_mask is None:
        return scores
    if attention_mask.dtype == torch.bool:
        # Added as 0 / finfo.min (not -inf: no NaN on an empty row): the same probabilities and gradients as
        # `masked_fill`, whose bool kernels, forward and backward, run ~6x slower than an addition on the scores (the
        # mask has one head, not all). Only a row with no key to attend would pass gradient to its scores; such rows are
        # padding positions, whose outputs nothing reads, so that gradient is 0.
        additive = torch.zeros(attention_mask.shape, dtype=scores.dtype, device=scores.device)
        return scores + additive.masked_fill_(~attention_mask, torch.finfo(scores.dtype).min)
    return scores + attention_mask[..., : scores.shape[-1]]


def attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """transformers' SDPA attention, except where it trains on CPU: there, dropout uses lane masks.

    query/key/value: (batch, heads, length, head_dim). Returns (batch, length, heads, head_dim) as SDPA does. On GPU,
    in evaluation, and for fp32 or fp16 training without dropout this is SDPA itself. With dropout, or when bf16
    attention needs gradients, it is transformers' eager attention: the two products in the input dtype (bf16 under
    bf16-mixed, where SDPA's math kernel would upcast them to fp32), dropout on the probabilities. The softmax runs in
    the scores' dtype: torch's CPU kernel accumulates bf16 in fp32 and rounds once, the same probabilities as an fp32
    softmax cast back to bf16 (to an ulp), without two casts each way.
    """
    sdpa_only = any(kwargs.get(k) is not None for k in _SDPA_ONLY)
    if query.device.type != "cpu" or sdpa_only or not _as_products(query, dropout):
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, is_causal=is_causal, **kwargs
        )
    groups = getattr(module, "num_key_value_groups", 1)
    key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    q_length, kv_length = query.shape[2], key.shape[2]
    is_causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    if attention_mask is None and is_causal and q_length > 1:  # what SDPA's is_causal does (upper-left aligned)
        attention_mask = torch.ones(q_length, kv_length, dtype=torch.bool, device=query.device).tril()
    scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
    scores = torch.matmul(query * scaling, key.transpose(2, 3))  # (batch, heads, q_length, kv_length)
    scores = masked_scores(scores, attention_mask)
    weights = lane_dropout(torch.softmax(scores, dim=-1).to(value.dtype), dropout)
    output = torch.matmul(weights, value)
    return output.transpose(1, 2).contiguous(), None


def _as_products(query: torch.Tensor, dropout: float) -> bool:
    """Whether `attention` runs as plain products: with dropout, or when bf16 attention needs gradients.

    SDPA's CPU backward in bf16 is the slowest part of a step without attention dropout: forward and backward of
    MiniLM's (32, 12, 30, 32) heads take 17.7 ms with SDPA and 3.9 ms as products (75 and 29 ms at length 128). In
    fp32 the two are close (3.1 and 1.9 ms at length 30, 23.8 and 28.2 at 128) and in fp16 SDPA is ahead: both keep it.
    """
    backward = torch.is_grad_enabled() and query.requires_grad
    return dropout != 0.0 or (query.dtype == torch.bfloat16 and backward)


AttentionInterface.register(ATTENTION, attention)
AttentionMaskInterface.register(ATTENTION, sdpa_mask)  # the masks SDPA gets: bool, True = attend, None when no padding


def use_lane_dropout(model: PreTrainedModel) -> Callable[[], None]:
    """Swap lane dropout into `model` (its `nn.Dropout` modules, and its attention when that is SDPA); returns undo."""
    swapped = []
    for parent in model.modules():
        for name, child in parent.named_children():
            if type(child) is nn.Dropout:
                swapped.append((parent, name, child))
                setattr(parent, name, LaneDropout(child.p, child.inplace).train(child.training))
    attention_before = compat.attention_implementation(model.config)
    if attention_before == "sdpa" and compat.supports_attention_backend(model):
        model.set_attn_implementation(ATTENTION)

    def undo() -> None:
        for parent, name, child in swapped:
            setattr(parent, name, child.train(getattr(parent, name).training))
        if compat.attention_implementation(model.config) == ATTENTION:
            model.set_attn_implementation(attention_before)

    return undo
