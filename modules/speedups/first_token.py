"""The last encoder layer computed for the first token only, in classifiers whose head reads nothing else.

BERT-family sequence classifiers (BERT's pooler, RoBERTa's and ELECTRA's classification heads) read the last layer's
output at position 0 ([CLS] / <s>) and nowhere else. The other positions of that layer cost a sixth of a 6-layer
model's matmuls and change no logit and no gradient. Here the last layer's queries, attention output, feed-forward and
residuals run on position 0. Its one query still attends to every position, with the key and value projections folded
into it (`_first_query_attention`): no key or value is projected, when the three projections are plain `nn.Linear`s
(LoRA's and other wrapped ones run as modules, on every position). The model's last hidden state is then
(batch, 1, hidden), and the last layer's attention weights are not recorded: meant for training and evaluating
classifiers, which read logits. Only that layer's `forward` changes: parameters, state_dict keys and checkpoints stay
as they are. Calls this does not cover (cross-attention, a cache, attention kernels other than SDPA/eager) run the
layer as it is.
"""

import functools
import sys
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from modules import compat
from modules.speedups.dropout import masked_scores

# Classifiers whose head reads position 0 of the last hidden state only, and whose layers are BERT's
# (attention.self.{query,key,value}, attention.output, intermediate, output).
FIRST_TOKEN_HEADS = (
    "BertForSequenceClassification",
    "RobertaForSequenceClassification",
    "XLMRobertaForSequenceClassification",
    "CamembertForSequenceClassification",
    "ElectraForSequenceClassification",
)
# Attention implementations that take a (batch, 1 or heads, q_length, kv_length) mask, so one query row slices it.
_MASK_4D = ("sdpa", "eager", "hf_lightning_cpu")


def _last_layer(model: nn.Module) -> nn.Module | None:
    classifier = next((m for m in model.modules() if type(m).__name__ in FIRST_TOKEN_HEADS), None)
    if not isinstance(classifier, PreTrainedModel):
        return None
    encoder = getattr(getattr(classifier, classifier.base_model_prefix, None), "encoder", None)
    layers = getattr(encoder, "layer", None)
    if not isinstance(layers, nn.ModuleList) or len(layers) == 0:
        return None
    layer = layers[-1]
    outer = getattr(layer, "attention", None)
    attention = getattr(outer, "self", None)
    parts = [getattr(attention, name, None) for name in ("query", "key", "value", "dropout")]
    parts += [getattr(outer, "output", None), getattr(layer, "intermediate", None), getattr(layer, "output", None)]
    if any(not isinstance(part, nn.Module) for part in parts) or not hasattr(attention, "attention_head_size"):
        return None
    if getattr(layer, "is_decoder", True) or getattr(layer, "chunk_size_feed_forward", 1) != 0:
        return None
    return layer


def _first_token_forward(
    layer: nn.Module,
    hidden_states: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    encoder_hidden_states: torch.Tensor | None = None,
    *args,
    **kwargs,
) -> torch.Tensor:
    """The layer's output at position 0: (batch, 1, hidden) from hidden_states (batch, length, hidden)."""
    attention = layer.attention.self
    implementation = compat.attention_implementation(attention.config)
    if (
        encoder_hidden_states is not None
        or args
        or any(kwargs.get(k) is not None for k in ("encoder_attention_mask", "cache", "past_key_values"))
        or implementation not in _MASK_4D
        or (attention_mask is not None and attention_mask.dim() != 4)
    ):
        return type(layer).forward(layer, hidden_states, attention_mask, encoder_hidden_states, *args, **kwargs)
    for name in ("encoder_attention_mask", "cache", "past_key_values"):
        kwargs.pop(name, None)
    batch, head_dim = hidden_states.shape[0], attention.attention_head_size
    first = hidden_states[:, :1]
    if attention_mask is not None:
        attention_mask = attention_mask[:, :, :1]  # the first query's row
    projections = [getattr(attention, name) for name in ("query", "key", "value")]
    heads = getattr(attention, "num_attention_heads", 0)
    if all(_plain(p) and p.out_features == heads * head_dim for p in projections):
        context = _first_query_attention(attention, first, hidden_states, attention_mask)
    else:  # wrapped projections (LoRA, quantized) run as modules: key and value on every position
        query = attention.query(first).view(batch, 1, -1, head_dim).transpose(1, 2)  # (batch, heads, 1, head_dim)
        key = attention.key(hidden_states).view(batch, -1, query.shape[1], head_dim).transpose(1, 2)
        value = attention.value(hidden_states).view(batch, -1, query.shape[1], head_dim).transpose(1, 2)
        eager = getattr(sys.modules[type(attention).__module__], "eager_attention_forward", None)
        interface = ALL_ATTENTION_FUNCTIONS.get_interface(implementation, eager)
        context, _ = interface(
            attention,
            query,
            key,
            value,
            attention_mask,
            dropout=attention.dropout.p if attention.training else 0.0,
            scaling=getattr(attention, "scaling", head_dim**-0.5),
            **kwargs,
        )
    attention_output = layer.attention.output(context.reshape(batch, 1, -1), first)
    return layer.output(layer.intermediate(attention_output), attention_output)


def _plain(linear: nn.Module) -> bool:
    """An `nn.Linear` whose weights say all it does: no subclass (LoRA, quantized) and no hooks to run."""
    return type(linear) is nn.Linear and not compat.has_forward_hooks(linear)


def _first_query_attention(
    attention: nn.Module, first: torch.Tensor, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None
) -> torch.Tensor:
    """Position 0's attention over all positions, (batch, 1, heads x head_dim), without projecting any key or value.

    For head h with query q: q . (W_k x_t + b_k) = (W_k^T q) . x_t + q . b_k, and sum_t p_t (W_v x_t + b_v) =
    W_v (sum_t p_t x_t) + (sum_t p_t) b_v. So each head scores the hidden states against one vector W_k^T q and
    projects one mix of them: heads x hidden multiply-adds per token instead of the key and value projections'
    2 x hidden^2 (on MiniLM 12 x 384 against 2 x 384^2). Same softmax, mask and dropout as the layer's attention.
    """
    batch, heads, head_dim = first.shape[0], attention.num_attention_heads, attention.attention_head_size
    hidden = hidden_states.shape[-1]
    key, value = attention.key, attention.value
    query = F.linear(first, attention.query.weight, attention.query.bias).view(batch, heads, head_dim)
    # Products batched over heads, then over the batch (a weight broadcast over the batch would be copied per row).
    folded = torch.bmm(query.transpose(0, 1), key.weight.reshape(heads, head_dim, hidden))  # W_k^T q: (heads, batch, D)
    scores = torch.bmm(folded.transpose(0, 1), hidden_states.transpose(1, 2))  # (batch, heads, length)
    if key.bias is not None:  # the same for every position (softmax drops it), kept so that b_k's gradient is as it was
        scores = scores + (query * key.bias.view(heads, head_dim)).sum(-1, keepdim=True)
    scores = scores.unsqueeze(2) * getattr(attention, "scaling", head_dim**-0.5)  # (batch, heads, 1, length)
    scores = masked_scores(scores, attention_mask)
    weights = attention.dropout(torch.softmax(scores, dim=-1)).squeeze(2)  # (batch, heads, length)
    mixed = torch.bmm(weights, hidden_states)  # sum_t p_t x_t: (batch, heads, hidden)
    context = torch.bmm(mixed.transpose(0, 1), value.weight.reshape(heads, head_dim, hidden).transpose(1, 2))
    context = context.transpose(0, 1)  # (batch, heads, head_dim)
    if value.bias is not None:  # dropout leaves sum_t p_t != 1
        context = context + weights.sum(-1, keepdim=True) * value.bias.view(heads, head_dim)
    return context.reshape(batch, 1, heads * head_dim)


def first_token_last_layer(model: nn.Module) -> Callable[[], None] | None:
    """Run `model`'s last encoder layer for position 0 only; returns undo, or None where the model is not covered."""
    layer = _last_layer(model)
    if layer is None or "forward" in vars(layer):
        return None
    # The class's forward is looked up on each fallback call: no bound method kept, so the model still pickles
    # (ddp_spawn) and deep-copies.
    layer.forward = functools.partial(_first_token_forward, layer)

    def undo() -> None:
        del layer.forward

    return undo
