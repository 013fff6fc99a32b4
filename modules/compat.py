"""Every private member of Lightning, transformers and torch that hf-lightning touches, reached through this module.

An upgrade may rename or drop any of them without notice; `missing_members()` names the ones an installed version
lacks, and tests/test_compat.py fails on each. The members, and why no public API does:

Lightning (2.6)
- `Trainer._signal_connector.received_sigterm`: the flag Lightning checks after every batch to stop gracefully and
  raise `SIGTERMException`. Setting it is how a stop requested by Ctrl-C or agreed across DDP ranks takes the same
  path as SIGTERM (`trainer.should_stop` would instead end the epoch normally, and run validation first).
- `_SignalConnector._sigterm_notifier_fn`: Lightning's SIGTERM handler broadcasts from inside the handler, which
  deadlocks DDP ranks signalled mid-step (see modules/runs/interrupts.py); replaced for the duration of `fit`.
- `_FitLoop._combined_loader`: reset so that a resumed run rebuilds the training loader after the checkpoint's loop
  state is restored (`estimated_stepping_batches` builds it too early for a mid-epoch resume).
- `ModelCheckpoint._monitor_candidates`, `_should_skip_saving_checkpoint`, `_save_last_checkpoint`,
  `_should_save_on_train_epoch_end`, `_last_global_step_saved`: `RunCheckpoint` refreshes `last.ckpt` at every epoch
  end and every N steps with Lightning's own naming, linking and skip rules, which have no public entry points
  (Lightning rewrites `last.ckpt` only when a top-k file was saved in the same step).
- `LightningModule._trainer`: whether a module is attached to a Trainer; `module.trainer` raises when it is not, and
  the model is also built and loaded on its own (`load_from_checkpoint`, export).

jsonargparse (4.x, an argparse subclass)
- `ArgumentParser._actions`: the arguments a parser holds. LightningCLI adds `--ckpt_path` with `Trainer.fit`'s
  docstring (`hpc`, `registry`), not this project's `best`/`last`; argparse has no public way to change the help of
  an argument once added.

transformers (5.x)
- `PretrainedConfig._attn_implementation`: which attention kernel a model runs; read to decide whether a speed-up
  applies and to restore it (`PreTrainedModel.set_attn_implementation` is the public setter, with no getter).
- `PreTrainedModel._supports_attention_backend`: whether a model accepts a registered attention function.

datasets (5.x)
- `Dataset._fingerprint`: the hash `datasets` names a dataset's cache files by (it has no public getter). Distillation
  keys the cache of the teacher's scores, and of the perturbed copies, by the fingerprints of the rows they were
  computed from (`new_fingerprint` of `Dataset.map`), so they are reused exactly while those rows stay the same.

torch (2.6+)
- `nn.Module._forward_hooks`, `_forward_pre_hooks`, `torch.nn.modules.module._global_forward_hooks`: a projection
  folded into another computation must not have hooks that would then never run (torch has no public "has hooks").
- `Tensor._version`: the in-place version counter, which tells whether a kept gradient buffer changed since its norm
  was taken.
- `Tensor._indices()`, `Tensor._values()`: a sparse gradient's rows without coalescing it (`indices()` coalesces
  first: a sort the kept embedding gradient does not need).
"""

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class Member:
    """A private member: `name` on the object that `owner` builds (a class, module or instance)."""

    library: str
    owner: str  # how it is reached, for the message
    name: str
    find_owner: Callable[[], Any]


def _trainer() -> Any:
    from lightning.pytorch import Trainer

    return Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)


def _model_checkpoint() -> type:
    from lightning.pytorch.callbacks import ModelCheckpoint

    return ModelCheckpoint


def _lightning_module() -> type:
    from lightning.pytorch import LightningModule

    return LightningModule


def _config() -> Any:
    from transformers import PretrainedConfig

    return PretrainedConfig()


def _pretrained_model() -> type:
    from transformers import PreTrainedModel

    return PreTrainedModel


def _dataset() -> Any:
    from datasets import Dataset

    return Dataset.from_dict({"text": ["a"]})


MEMBERS: tuple[Member, ...] = (
    Member("lightning", "Trainer", "_signal_connector", _trainer),
    Member("lightning", "Trainer._signal_connector", "received_sigterm", lambda: _trainer()._signal_connector),
    Member("lightning", "Trainer._signal_connector", "_sigterm_notifier_fn", lambda: _trainer()._signal_connector),
    Member("lightning", "Trainer.fit_loop", "_combined_loader", lambda: _trainer().fit_loop),
    Member("lightning", "ModelCheckpoint", "_monitor_candidates", _model_checkpoint),
    Member("lightning", "ModelCheckpoint", "_should_skip_saving_checkpoint", _model_checkpoint),
    Member("lightning", "ModelCheckpoint", "_save_last_checkpoint", _model_checkpoint),
    Member("lightning", "ModelCheckpoint", "_should_save_on_train_epoch_end", _model_checkpoint),
    Member("lightning", "ModelCheckpoint()", "_last_global_step_saved", lambda: _model_checkpoint()()),
    Member("lightning", "LightningModule()", "_trainer", lambda: _lightning_module()()),
    Member(
        "jsonargparse", "ArgumentParser()", "_actions", lambda: importlib.import_module("jsonargparse").ArgumentParser()
    ),
    Member("transformers", "PretrainedConfig()", "_attn_implementation", _config),
    Member("transformers", "PreTrainedModel", "_supports_attention_backend", _pretrained_model),
    Member("datasets", "Dataset()", "_fingerprint", lambda: _dataset()),
    Member("torch", "nn.Linear()", "_forward_hooks", lambda: nn.Linear(1, 1)),
    Member("torch", "nn.Linear()", "_forward_pre_hooks", lambda: nn.Linear(1, 1)),
    Member("torch", "torch.nn.modules.module", "_global_forward_hooks", lambda: nn.modules.module),
    Member("torch", "Tensor", "_version", lambda: torch.zeros(1)),
    Member("torch", "Tensor", "_indices", lambda: torch.Tensor),
    Member("torch", "Tensor", "_values", lambda: torch.Tensor),
)


def missing_members() -> list[str]:
    """`library: owner.name` of every listed member the installed versions lack (empty when all are there)."""
    missing = []
    for member in MEMBERS:
        try:
            present = hasattr(member.find_owner(), member.name)
        except AttributeError:  # the way to the owner is gone itself
            present = False
        if not present:
            missing.append(f"{member.library}: {member.owner}.{member.name}")
    return missing


def installed_versions() -> dict[str, str]:
    """The versions the members were looked up in, for messages."""
    libraries = ("lightning", "jsonargparse", "transformers", "datasets", "torch")
    return {name: importlib.import_module(name).__version__ for name in libraries}


# ------------------------------------------------------------------------------------------------ jsonargparse
def set_argument_help(parser: Any, dest: str, text: str) -> bool:
    """Replace the help of the argument stored at `dest`; False when the parser has none."""
    actions = [action for action in parser._actions if action.dest == dest]
    for action in actions:
        action.help = text
    return bool(actions)


# ------------------------------------------------------------------------------------------------ Lightning
def request_graceful_stop(trainer: Any) -> None:
    """Make Lightning stop after the current batch as on SIGTERM (`SIGTERMException`, `on_exception` hooks)."""
    trainer._signal_connector.received_sigterm = True


def graceful_stop_requested(trainer: Any) -> bool:
    return bool(trainer._signal_connector.received_sigterm)


def replace_sigterm_handler(trainer: Any, handler: Callable[[int, Any], None] | None) -> None:
    """Use `handler` instead of Lightning's SIGTERM notifier when `fit` registers its handlers; None restores it."""
    connector = trainer._signal_connector
    if handler is not None:
        connector._sigterm_notifier_fn = handler
    elif "_sigterm_notifier_fn" in vars(connector):
        del connector._sigterm_notifier_fn


def rebuild_train_loader(trainer: Any) -> None:
    """Let the fit loop build the training loader again (and so restore its position from a checkpoint)."""
    trainer.fit_loop._combined_loader = None


def last_global_step_saved(checkpoint: Any) -> int:
    return checkpoint._last_global_step_saved


def monitor_candidates(checkpoint: Any, trainer: Any) -> dict:
    return checkpoint._monitor_candidates(trainer)


def save_last_if_due(checkpoint: Any, trainer: Any) -> None:
    """Write `last.ckpt` with Lightning's naming and linking, unless this step is saved already (or no save is due)."""
    if checkpoint.save_last and not checkpoint._should_skip_saving_checkpoint(trainer):
        checkpoint._save_last_checkpoint(trainer, checkpoint._monitor_candidates(trainer))


def saves_on_train_epoch_end(checkpoint: Any, trainer: Any) -> bool:
    return checkpoint._should_save_on_train_epoch_end(trainer)


# --------------------------------------------------------------------------------------------- transformers
def attention_implementation(config: Any) -> str | None:
    return config._attn_implementation


def supports_attention_backend(model: Any) -> bool:
    return bool(model._supports_attention_backend)


# --------------------------------------------------------------------------------------------------- torch
def has_forward_hooks(module: nn.Module) -> bool:
    """Whether calling `module` would run any forward (pre-)hook, its own or a global one."""
    return bool(module._forward_hooks or module._forward_pre_hooks or nn.modules.module._global_forward_hooks)


def version(tensor: torch.Tensor) -> int:
    """The tensor's in-place version counter."""
    return tensor._version


def sparse_rows(grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row indices and row values of a sparse COO gradient, uncoalesced (rows may repeat)."""
    return grad._indices()[0], grad._values()


def dataset_fingerprint(dataset: Any) -> str:
    """The hash `datasets` keys a dataset's cache files by."""
    return dataset._fingerprint


def attached_trainer(module: Any) -> Any:
    """The module's Trainer, or None when it is used on its own (`module.trainer` raises then)."""
    return module._trainer
