"""LoRA with peft: wrap a sequence classifier so that only low-rank adapters and the classification head train.

peft is an optional dependency (`pip install hf-lightning[lora]`), imported only when `--model.lora_r` is above 0.
"""

from collections.abc import Iterable

from torch import nn
from transformers import PreTrainedModel

from modules.errors import HFLightningError

# peft's per-architecture defaults (TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING) cover BERT, RoBERTa, GPT-2,
# Llama and many more, but not DistilBERT, whose attention projections have their own names.
_EXTRA_TARGET_MODULES = {"distilbert": ["q_lin", "v_lin"]}


def _peft():
    try:
        import peft
    except ImportError:
        raise HFLightningError(
            "--model.lora_r needs peft: `pip install hf-lightning[lora]` (or `pip install peft`), or set "
            "--model.lora_r 0 to fine-tune every weight."
        ) from None
    return peft


def check_lora_args(r: int, alpha: float, dropout: float) -> None:
    """Fail at instantiation, before any download, on values LoRA cannot use."""
    if r < 0:
        raise HFLightningError(f"--model.lora_r must be >= 0 (0 turns LoRA off, 8 or 16 is typical); got {r}.")
    if r and alpha <= 0:
        raise HFLightningError(f"--model.lora_alpha must be > 0 (2 x lora_r is typical); got {alpha}.")
    if not 0 <= dropout < 1:
        raise HFLightningError(f"--model.lora_dropout must be in [0, 1); got {dropout}.")


def default_target_modules(model_type: str) -> list[str] | None:
    """The layers peft adapts by default for an architecture (usually the query and value projections)."""
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as peft_defaults

    targets = peft_defaults.get(model_type) or _EXTRA_TARGET_MODULES.get(model_type)
    # A few entries are one regular expression rather than names: those are not a list of names to store.
    return list(targets) if isinstance(targets, list | tuple) else None


def head_modules(model: PreTrainedModel) -> list[str]:
    """The classification head: top-level modules with weights outside the pretrained body (`base_model_prefix`),
    e.g. `classifier` (BERT, RoBERTa), `pre_classifier` + `classifier` (DistilBERT), `score` (GPT-2)."""
    return [
        name
        for name, module in model.named_children()
        if name != model.base_model_prefix and any(True for _ in module.parameters())
    ]


def initialized_modules(loading_info: dict) -> list[str]:
    """Modules `from_pretrained` had to initialize at random (missing from, or of another shape than, the
    checkpoint), from its `output_loading_info`. They train with the head: frozen, they would stay random, and a
    reload would draw other random values than the run that trained the adapters on top of them."""
    keys = list(loading_info.get("missing_keys", ())) + [key[0] for key in loading_info.get("mismatched_keys", ())]
    return sorted({key.rsplit(".", 1)[0] for key in keys if "." in key})


def _linear_names(model: nn.Module) -> list[str]:
    from transformers.pytorch_utils import Conv1D

    return sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, nn.Linear | Conv1D)})


def apply_lora(
    model: PreTrainedModel,
    r: int,
    alpha: float,
    dropout: float,
    target_modules: list[str] | None,
    initialized: Iterable[str] = (),
) -> tuple[nn.Module, list[str]]:
    """Wrap `model` in a peft LoRA model; returns it and the target module names used.

    The base weights are frozen; the adapters on `target_modules`, the classification head and the modules in
    `initialized` train (peft's `modules_to_save` keeps a trainable copy of the head).
    """
    peft = _peft()
    model_type = model.config.model_type
    targets = target_modules or default_target_modules(model_type)
    if not targets:
        raise HFLightningError(
            f"--model.lora_target_modules: peft has no default for the '{model_type}' architecture. Name the "
            f"layers to adapt, e.g. --model.lora_target_modules '[q_proj, v_proj]'; this model's linear layers are "
            f"{_linear_names(model)}."
        )
    head = head_modules(model)
    names = [name for name, _ in model.named_modules()]
    unknown = [t for t in targets if not any(n == t or n.endswith(f".{t}") for n in names)]
    if unknown:
        raise HFLightningError(
            f"--model.lora_target_modules: {unknown} match no layer of this {model_type} model. Its linear layers "
            f"are {_linear_names(model)}; leave the flag unset for peft's default."
        )
    extra = [m for m in initialized if not any(m == h or m.startswith(f"{h}.") for h in head)]
    config = peft.LoraConfig(
        task_type=peft.TaskType.SEQ_CLS,
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=list(targets),
        modules_to_save=head + extra,
    )
    return peft.get_peft_model(model, config), list(targets)


def merge(model: nn.Module) -> PreTrainedModel:
    """A plain Hugging Face model with the adapters folded into the base weights (and the trained head in place)."""
    return model.merge_and_unload()


def parameter_counts(module: nn.Module) -> tuple[int, int]:
    """(trainable, all) parameter counts."""
    parameters = list(module.parameters())
    return sum(p.numel() for p in parameters if p.requires_grad), sum(p.numel() for p in parameters)


def check_trained_keys(trained: list[str], state_dict: dict) -> None:
    """A LoRA checkpoint must hold exactly the trained tensors: a missing adapter would silently stay untrained."""
    missing = [k for k in trained if k not in state_dict]
    unexpected = [k for k in state_dict if k not in set(trained)]
    if trained and (missing or unexpected):
        raise HFLightningError(
            f"the checkpoint does not fit this LoRA model: it lacks {len(missing)} trained tensors {missing[:3]} "
            f"and has {len(unexpected)} unknown ones {unexpected[:3]}. Use the --model.model_name_or_path and "
            "--model.lora_* values it was trained with."
        )
