"""Faster dropout for CPU training: masks drawn from 15-bit random lanes, and attention whose dropout uses them.

torch's CPU dropout draws one Bernoulli sample per element (`bernoulli_`): about a sixth of a MiniLM training step on
2 cores. SDPA with dropout leaves its fused kernel for the math one, which draws the same way and upcasts bf16 to fp32.
Here one 64-bit draw of torch's generator gives four elements' masks: dropout forward and backward take about half
torch's time. Same expectation as torch's: the keep probability is quantised to 1/32768 and kept elements are scaled by
exactly its inverse. The draws come from torch's default generator: `seed_everything` and the checkpointed RNG state
govern them.
"""

from collections.abc import Callable

import torch
from torch import nn
from transformers import AttentionInterface, PreTrainedModel
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

ATTENTION = "hf_lightning_cpu"  # the name under which transformers finds `attention`
_LANES = 32768  # 15 bits: the top lane of torch's int64 `random_()` (values in [0, 2**63)) has only 15 uniform bits
# SDPA options the plain attention below does not implement: such calls go to SDPA as they are.
_SDPA_ONLY = ("softcap", "sliding_window", "position_bias", "s_aux", "sinks")


def keep_mask(shape: torch.Size, p: float) -> torch.Tensor:
    """Bool mask, True where an element is kept (probability 1 - p, quantised to 1/32768)."""
    n, keep = shape.numel(), _keep_lanes(p)
    if keep == _LANES:  # p below 1/65536 rounds to 0 (and 32768 would not fit the int16 comparison)
        return torch.ones(shape, dtype=torch.bool)
    bits = torch.empty((n + 3) // 4, dtype=torch.int64).random_()
    lanes = bits.view(torch.int16)[:n].bitwise_and_(_LANES - 1)
    return torch.lt(lanes, keep).view(shape)


def _keep_lanes(p: float) -> int:
    return max(1, round((1 - p) * _LANES))


def lane_dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """`F.dropout` with lane masks; the identity in eval mode or with p == 0."""
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return x * 0.0
    # Plain differentiable ops, no autograd.Function: a Python backward would let Lightning's SIGTERM handler run inside
    # the backward pass, where its DDP broadcast deadlocks against the other ranks' gradient all-reduce. The scale is a
    # Python float, applied at full precision as torch's dropout does (a bf16 mask tensor would round 1/0.9 to 1.109).
    return x * keep_mask(x.shape, p) * (_LANES / _keep_lanes(p))


class LaneDropout(nn.Dropout):
    """`nn.Dropout` with lane masks (same `p`, no state): swapped in for the model's dropouts while training on CPU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return lane_dropout(x, self.p, self.training)


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
    """transformers' SDPA attention, except that attention dropout on CPU uses lane masks.

    query/key/value: (batch, heads, length, head_dim). Returns (batch, length, heads, head_dim) as SDPA does. Without
    dropout (eval, or p == 0) or on GPU, this is SDPA itself. With dropout it is transformers' eager attention: the two
    products in the input dtype (bf16 under bf16-mixed, where SDPA's math kernel would upcast them to fp32), softmax in
    fp32, dropout on the probabilities.
    """
    if dropout == 0.0 or query.device.type != "cpu" or any(kwargs.get(k) is not None for k in _SDPA_ONLY):
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
    scores = torch.matmul(query * scaling, key.transpose(2, 3)).float()  # (batch, heads, q_length, kv_length)
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:  # True = attend; finfo.min rather than -inf: no NaN on an empty row
            scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
        else:
            scores = scores + attention_mask[..., :kv_length]
    weights = lane_dropout(torch.softmax(scores, dim=-1).to(value.dtype), dropout)
    output = torch.matmul(weights, value)
    return output.transpose(1, 2).contiguous(), None


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
    attention_before = model.config._attn_implementation
    if attention_before == "sdpa" and model._supports_attention_backend:
        model.set_attn_implementation(ATTENTION)

    def undo() -> None:
        for parent, name, child in swapped:
            setattr(parent, name, child.train(getattr(parent, name).training))
        if model.config._attn_implementation == ATTENTION:
            model.set_attn_implementation(attention_before)

    return undo
