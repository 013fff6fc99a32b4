"""Keeping fewer of a pretrained model's layers (`--model.num_layers`): DistilBERT's student initialisation, for any
architecture whose blocks sit in one `nn.ModuleList`, leaving a normal, smaller Hugging Face model."""

from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from modules.errors import HFLightningError

FLAG = "--model.num_layers"


def check_num_layers(num_layers: int | None) -> None:
    """Refuse a layer count below 1 (the model's depth is checked once its config is read: `kept_layers`)."""
    if num_layers is not None and num_layers < 1:
        raise HFLightningError(f"{FLAG} {num_layers}: keep at least 1 layer (leave it unset to keep every layer).")


def layer_count(config: PretrainedConfig) -> int:
    """The number of blocks `config` describes. `num_hidden_layers` reads GPT-2's `n_layer` and DistilBERT's
    `n_layers` too, through the config's `attribute_map`."""
    count = getattr(config, "num_hidden_layers", None)
    if not isinstance(count, int):
        raise HFLightningError(
            f"{FLAG}: the {config.model_type} config holds no layer count (`num_hidden_layers`), so its layers "
            "cannot be cut; leave --model.num_layers unset for this architecture."
        )
    return count


def kept_layers(depth: int, num_layers: int) -> list[int]:
    """The indices of the `num_layers` layers kept out of `depth`: evenly spaced, the first and the last included,
    rounded half up. DistilBERT's student kept layers 0, 2, 4, 7, 9, 11 of BERT-base's 12, which is this rule: the
    first layer still reads the embeddings it was trained on, the last still feeds the pooler and head the
    pretraining shaped. One layer keeps the first (it is the one whose input is unchanged). All layers keep all."""
    check_num_layers(num_layers)
    if num_layers > depth:
        raise HFLightningError(f"{FLAG} {num_layers}: the model has {depth} layers; choose 1..{depth}.")
    if num_layers == 1:
        return [0]
    steps = num_layers - 1  # index i * (depth - 1) / steps, rounded half up, in integers
    return [(2 * i * (depth - 1) + steps) // (2 * steps) for i in range(num_layers)]


def set_layer_count(config: PretrainedConfig, indices: list[int]) -> None:
    """Make `config` describe only the layers at `indices`: the count, and per-layer lists where the config has them."""
    depth = layer_count(config)
    per_layer = getattr(config, "layer_types", None)  # e.g. sliding/full attention per layer in decoder configs
    if isinstance(per_layer, list) and len(per_layer) == depth:
        config.layer_types = [per_layer[i] for i in indices]
    config.num_hidden_layers = len(indices)


def layer_list(model: PreTrainedModel) -> tuple[nn.Module, str]:
    """The module holding the base model's blocks and the attribute name of their `nn.ModuleList` (BERT/RoBERTa
    `encoder.layer`, DistilBERT `transformer.layer`, GPT-2 `h`): the one outermost ModuleList as long as the config's
    layer count."""
    depth = layer_count(model.config)
    base = model.base_model
    found = [name for name, m in base.named_modules() if isinstance(m, nn.ModuleList) and len(m) == depth and name]
    outermost = [n for n in found if not any(n.startswith(f"{other}.") for other in found)]
    if len(outermost) != 1:
        raise HFLightningError(
            f"{FLAG}: cannot find the layer list of the {model.config.model_type} architecture "
            f"({type(model).__name__}): no single list of its {depth} blocks. Leave --model.num_layers unset for it."
        )
    parent, _, attribute = outermost[0].rpartition(".")
    return base.get_submodule(parent), attribute


def keep_layers(model: PreTrainedModel, num_layers: int | None) -> list[int]:
    """Keep `num_layers` evenly spaced layers of `model` (in place, see `kept_layers`) and set its config's count to
    match, so `save_pretrained` writes a model `from_pretrained` loads as is. None keeps every layer. Returns the
    kept indices; keeping as many layers as the model has changes nothing, so a cut model is never cut twice."""
    depth = layer_count(model.config)
    if num_layers is None:
        return list(range(depth))
    indices = kept_layers(depth, num_layers)
    parent, attribute = layer_list(model)
    layers = getattr(parent, attribute)
    setattr(parent, attribute, nn.ModuleList(layers[i] for i in indices))
    for position, layer in enumerate(getattr(parent, attribute)):
        for module in layer.modules():  # attention caches are indexed by the layer's position
            if isinstance(getattr(module, "layer_idx", None), int):
                module.layer_idx = position
    set_layer_count(model.config, indices)
    return indices
