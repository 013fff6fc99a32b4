"""Building the Hugging Face classifier: from a pretrained name or folder with the data's labels, from a checkpoint's
stored config (no download), and back out of a checkpoint as a plain model for export."""

import inspect

import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, PretrainedConfig, PreTrainedModel
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

from modules.data.labels import PROBLEM_TYPES, LabelSpec
from modules.data.preprocess import MODEL_INPUTS
from modules.data.sources import check_model_source
from modules.errors import HFLightningError
from modules.model.layers import check_num_layers, keep_layers, kept_layers, layer_count, layer_list, set_layer_count
from modules.model.lora import initialized_modules, merge
from modules.runs.record import RunRecord


def label_config(spec: LabelSpec) -> dict:
    """The config values that make a model predict `spec`'s labels (written into its config.json on export)."""
    if spec.task == "single_label" and spec.num_labels < 2:
        raise HFLightningError(f"single-label training needs at least 2 labels; the train split has {spec.names}.")
    return {
        "num_labels": spec.num_labels,
        "id2label": dict(enumerate(spec.names)),
        "label2id": {n: i for i, n in enumerate(spec.names)},
        "problem_type": PROBLEM_TYPES[spec.task],
    }


def accepted_inputs(model: PreTrainedModel) -> tuple[str, ...]:
    """The tokenizer outputs the Hugging Face model's `forward` takes (DistilBERT-style models take no
    `token_type_ids`). Ask the model itself: peft's wrapper takes **kwargs."""
    accepted = inspect.signature(model.forward).parameters
    return tuple(k for k in MODEL_INPUTS if k in accepted)


def pretrained(name: str, **config_values) -> tuple[PreTrainedModel, list[str]]:
    """The pretrained model (a new head where the labels differ), and the modules it initialized at random."""
    model, info = AutoModelForSequenceClassification.from_pretrained(
        name, ignore_mismatched_sizes=True, output_loading_info=True, **config_values
    )
    return model, initialized_modules(info)


def check_layers(name: str, num_layers: int | None) -> None:
    """Refuse a `--model.num_layers` the model cannot take, from its config alone (no weights are read): below 1,
    above its depth, or an architecture whose layer list is not found. A config that cannot be read yet (a Hub name
    not in the cache) is left to the build, which checks again."""
    check_num_layers(num_layers)
    if num_layers is None:
        return
    try:
        config = AutoConfig.from_pretrained(name)
    except (OSError, ValueError):
        return
    kept_layers(layer_count(config), num_layers)
    with torch.device("meta"):  # the module tree without memory or initialisation
        layer_list(AutoModelForSequenceClassification.from_config(config))


def from_name(
    name: str, spec: LabelSpec, pretrained_weights: bool, pad_token_id: int | None, num_layers: int | None = None
) -> tuple[PreTrainedModel, list[str]]:
    """The classifier `name` describes, for `spec`'s labels, in training mode, and the randomly initialized modules.

    Without `pretrained_weights` only the architecture is built (a checkpoint will supply every weight). `num_layers`
    keeps that many evenly spaced layers (modules/model/layers.py); the config then says so.
    """
    check_model_source(name, "--model.model_name_or_path")
    labels = label_config(spec)
    if pretrained_weights:
        model, initialized = pretrained(name, **labels)
        keep_layers(model, num_layers)  # before LoRA and speedups see the model
    else:
        config = AutoConfig.from_pretrained(name, **labels)
        if num_layers is not None:  # the checkpoint's weights are those of the kept layers
            set_layer_count(config, kept_layers(layer_count(config), num_layers))
        model, initialized = AutoModelForSequenceClassification.from_config(config), []
    model.train()  # from_pretrained returns eval mode, and Lightning does not switch it back: dropout would be off
    if model.config.pad_token_id is None:
        # Decoder-only classifiers find each row's last real token through the pad id.
        model.config.pad_token_id = pad_token_id if pad_token_id is not None else model.config.eos_token_id
    return model, initialized


def config_from_dict(config: dict) -> PretrainedConfig:
    """The model config a checkpoint's `hf_config` holds."""
    values = dict(config)
    return CONFIG_MAPPING[values.pop("model_type")].from_dict(values)


def from_checkpoint(
    checkpoint: dict, name: str, lora: bool, num_layers: int | None = None
) -> tuple[PreTrainedModel, list[str]]:
    """The model a checkpoint's `hf_config` describes, for a module loaded on its own, before its weights are loaded.

    A full checkpoint has every weight: an untrained model of that architecture and labels will do (no download;
    `hf_config` already has the kept layers' count, so nothing is cut again). A LoRA checkpoint holds only the
    trained tensors: the frozen rest comes from the pretrained weights of `name`, cut as `fit` cut them.
    """
    record = RunRecord.from_checkpoint(checkpoint)
    if record.hf_config is None:
        raise HFLightningError("the checkpoint holds no model config (`hf_config`): it was not written by `fit`.")
    config = config_from_dict(record.hf_config)
    if lora:
        check_model_source(name, "--model.model_name_or_path")
        if num_layers is None:
            return pretrained(name, config=config)
        # Read the pretrained weights at full depth, then keep the layers `fit` kept (not the first `num_layers`).
        full = AutoConfig.from_pretrained(name)
        config.num_hidden_layers = layer_count(full)
        if getattr(full, "layer_types", None) is not None:
            config.layer_types = full.layer_types
        model, initialized = pretrained(name, config=config)
        keep_layers(model, num_layers)
        return model, initialized
    return AutoModelForSequenceClassification.from_config(config), []


def trained_model(checkpoint: dict) -> PreTrainedModel:
    """The Hugging Face model a loaded checkpoint holds, as a plain model: LoRA adapters are merged in."""
    from modules.model.module import TransformerModule  # the module imports this file

    accepted = inspect.signature(TransformerModule.__init__).parameters  # LightningCLI also stores `_instantiator`
    hyper_parameters = RunRecord.from_checkpoint(checkpoint).hyper_parameters
    module = TransformerModule(**{k: v for k, v in hyper_parameters.items() if k in accepted})
    module.on_load_checkpoint(checkpoint)
    module.load_state_dict(checkpoint["state_dict"])
    return merge(module.model) if module.hparams.lora_r else module.model
