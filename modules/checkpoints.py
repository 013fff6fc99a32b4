"""Find the best or last checkpoint of the most recent `fit` of a config, so a later command can use it."""

import os
import re
import shutil
import warnings
from pathlib import Path
from weakref import proxy

import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException

from modules.errors import HFLightningError


def checkpoint_search_root(trainer_config: dict) -> Path:
    """The folder a config's checkpoints land under: a ModelCheckpoint `dirpath`, else the logger's run root."""
    for callback in _as_list(trainer_config.get("callbacks")):
        if isinstance(callback, dict) and "Checkpoint" in str(callback.get("class_path", "")):
            dirpath = (callback.get("init_args") or {}).get("dirpath")
            if dirpath:
                return Path(dirpath)
    root = Path(trainer_config.get("default_root_dir") or ".")
    for logger in _as_list(trainer_config.get("logger")):
        if isinstance(logger, dict):
            init_args = logger.get("init_args") or {}
            if str(logger.get("class_path", "")).endswith("MLFlowLogger"):
                return _mlflow_root(init_args, root)
            save_dir = init_args.get("save_dir") or init_args.get("root_dir") or root
            name = init_args.get("name", "lightning_logs")
            return Path(save_dir) / (name or "")
    return root / "lightning_logs"


def _mlflow_root(init_args: dict, default_root_dir: Path) -> Path:
    """`<save dir>/<experiment id>`: where Lightning puts an MLflow run's checkpoints (`<run id>/checkpoints`).

    The save dir is the file store's folder, or `default_root_dir` with a database tracking URI; the experiment id
    is looked up by name in the tracking store.
    """
    from mlflow.tracking import MlflowClient

    uri = init_args.get("tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI")
    uri = uri or f"file:{init_args.get('save_dir') or './mlruns'}"
    name = init_args.get("experiment_name") or "lightning_logs"
    experiment = MlflowClient(uri).get_experiment_by_name(name)
    if experiment is None:
        raise HFLightningError(
            f"--ckpt_path: the MLflow experiment {name!r} does not exist in {uri}. Run `fit` with this config first, "
            "or pass the checkpoint's path."
        )
    save_dir = Path(uri.removeprefix("file:")) if uri.startswith("file:") else default_root_dir
    return save_dir / experiment.experiment_id


def find_checkpoint(which: str, root: Path) -> Path:
    """Resolve `best` or `last` to a file under `root`, from the run whose `last*.ckpt` was written most recently."""
    candidates = sorted(root.rglob("last*.ckpt"), key=lambda p: p.stat().st_mtime, reverse=True)
    candidates = candidates or sorted(root.rglob("*.ckpt"), key=lambda p: p.stat().st_mtime, reverse=True)
    if not candidates:
        raise HFLightningError(
            f"--ckpt_path {which}: no checkpoint found under {root}/. Run `fit` with this config first, "
            "or pass the checkpoint's path."
        )
    newest = candidates[0]
    if which == "last":
        return newest
    best = best_model_path(newest)
    if best is None or not Path(best).is_file():
        raise HFLightningError(
            f"--ckpt_path best: {newest} records no best checkpoint (ModelCheckpoint with a `monitor` saves one); "
            "pass --ckpt_path last or a path."
        )
    return Path(best)


def best_model_path(checkpoint: Path) -> str | None:
    """The `best_model_path` a ModelCheckpoint recorded in `checkpoint` (memory-mapped: weights are not read)."""
    state = load_checkpoint(checkpoint, mmap=True)
    for key, value in state.get("callbacks", {}).items():
        if "Checkpoint" in key.split("{")[0] and value.get("best_model_path"):
            return value["best_model_path"]
    return None


def load_checkpoint(path: str | Path, mmap: bool = False) -> dict:
    """`torch.load` a Lightning checkpoint safely (`weights_only`), with a one-line error for a bad file."""
    path = Path(path)
    if not path.is_file():
        raise HFLightningError(f"checkpoint {path} does not exist: check --ckpt_path.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as error:  # truncated zip, not a checkpoint, unsafe pickle: all unusable the same way
        raise HFLightningError(f"checkpoint {path} is corrupt or not a checkpoint ({type(error).__name__}).") from None


def run_version(checkpoint: Path) -> int | None:
    """N when `checkpoint` lies in `.../version_N/checkpoints/`, so later commands log into that run's folder."""
    match = re.fullmatch(r"version_(\d+)", checkpoint.parent.parent.name)
    return int(match.group(1)) if match and checkpoint.parent.name == "checkpoints" else None


def log_folder(trainer) -> Path:
    """This command's own run folder, the one that holds its `checkpoints/`, `config.yaml` and Hugging Face export.

    TensorBoard and CSV: the logger's `log_dir`. Other loggers (MLflow, ...) have no local folder of their own:
    Lightning's ModelCheckpoint then writes to `<save_dir or default_root_dir>/<name>/<version>` (for MLflow
    `<default_root_dir>/<experiment id>/<run id>`), and so do we. No logger: `default_root_dir`.
    Call it on every rank: it broadcasts from rank 0, where the logger knows its name and version.
    """
    logger = trainer.loggers[0] if trainer.loggers else None
    if logger is None or isinstance(logger, TensorBoardLogger | CSVLogger):
        return Path(trainer.log_dir)  # `default_root_dir` without a logger
    folder = None
    if trainer.is_global_zero:
        version = logger.version if isinstance(logger.version, str) else f"version_{logger.version}"
        folder = str(Path(logger.save_dir or trainer.default_root_dir, str(logger.name), version))
    return Path(trainer.strategy.broadcast(folder))


def run_folder(trainer) -> Path:
    """Where a command's outputs go: the folder of the run whose checkpoint it loaded, else its own `log_folder`.

    Call it on every rank (see `log_folder`).
    """
    if trainer.ckpt_path:
        checkpoint = Path(trainer.ckpt_path)
        if checkpoint.parent.name == "checkpoints":
            return checkpoint.parent.parent
    return log_folder(trainer)


def _as_list(value: object) -> list:
    if value is None or isinstance(value, bool):
        return []
    return value if isinstance(value, list) else [value]


class RunCheckpoint(ModelCheckpoint):
    """`ModelCheckpoint` for runs that get interrupted: same arguments, three differences.

    - `last.ckpt` always holds the latest epoch. Lightning 2.6 rewrites it only when a top-k checkpoint was saved in
      the same step, so after an epoch that did not improve the monitored metric, `--ckpt_path last` would resume
      from an older epoch.
    - A graceful stop (SIGTERM, or Ctrl-C once: see `modules/interrupts.py`) writes `last.ckpt` at the step reached;
      `--ckpt_path last` continues from there (mid-epoch too: the training loader is resumable).
    - Files are written next to their final name and renamed into place, so a kill at any moment (SIGKILL, OOM
      killer) leaves every `.ckpt` whole. Lightning stages the bytes in the system temp folder and *moves* them,
      which is a plain copy when that folder is on another file system.

    Args:
        last_every_n_train_steps: Also refresh `last.ckpt` every N optimizer steps (with `save_last`), apart from
            the top-k choice: on machines that may vanish without warning (spot instances, SIGKILL), at most N steps
            are lost. None: at epoch ends (and graceful stops) only.
        **kwargs: `ModelCheckpoint`'s arguments.
    """

    def __init__(self, *args, last_every_n_train_steps: int | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if last_every_n_train_steps is not None and last_every_n_train_steps < 1:
            raise HFLightningError(f"last_every_n_train_steps must be >= 1, got {last_every_n_train_steps}.")
        self.last_every_n_train_steps = last_every_n_train_steps

    def load_state_dict(self, state_dict: dict) -> None:
        # A resumed run logs into a new version folder when its logger cannot append (CSVLogger), so `dirpath`
        # changes and Lightning forgets the top-k: the resumed run would then call its first epoch "best" even when
        # an earlier one was better. The run is the same one, so keep its top-k while those files exist.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The dirpath has changed")
            super().load_state_dict(state_dict)
        best_k = {path: score for path, score in state_dict.get("best_k_models", {}).items() if os.path.isfile(path)}
        if state_dict.get("dirpath", self.dirpath) != self.dirpath and best_k:
            self.best_k_models = best_k
            self.best_model_score = state_dict["best_model_score"]
            self.kth_best_model_path = state_dict.get("kth_best_model_path", "")
            self.kth_value = state_dict.get("kth_value", self.kth_value)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        every = self.last_every_n_train_steps
        if every and trainer.global_step % every == 0:
            self._save_last_if_missed(trainer)

    def setup(self, trainer, pl_module, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage == "fit" and trainer.is_global_zero and self.dirpath and os.path.isdir(self.dirpath):
            for leftover in Path(self.dirpath).glob("*.partial"):  # from a run killed while writing
                shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._save_last_if_missed(trainer)

    def on_validation_end(self, trainer, pl_module) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._save_last_if_missed(trainer)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        super().on_exception(trainer, pl_module, exception)  # `save_on_exception=True` still works as documented
        # Only a graceful stop: it is raised between steps, when weights, optimizer and counters agree. Any other
        # exception may have struck mid-update; the checkpoints already on disk are the safe ones then.
        if not isinstance(exception, SIGTERMException) or trainer.state.fn != "fit" or trainer.sanity_checking:
            return
        if self._last_global_step_saved == trainer.global_step and self.last_model_path:
            path = self.last_model_path  # this step is on disk already
        else:
            path = self.format_checkpoint_name(self._monitor_candidates(trainer), self.CHECKPOINT_NAME_LAST)
            self.last_model_path = path
            self._save_checkpoint(trainer, path)
        rank_zero_info(f"Stopped at step {trainer.global_step}: saved {path}. Resume with --ckpt_path last.")

    def _save_last_if_missed(self, trainer) -> None:
        # `_should_skip_saving_checkpoint` is also true when this step was saved already (top-k did it).
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def _save_checkpoint(self, trainer, filepath: str) -> None:
        partial = f"{filepath}.partial"
        trainer.save_checkpoint(partial, self.save_weights_only)  # collective; rank 0 writes
        if trainer.is_global_zero:
            _replace(partial, filepath)
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.after_save_checkpoint(proxy(self))


def _replace(partial: str, final: str) -> None:
    """Move a fully written checkpoint (a file, or a folder of shards) to its final name."""
    if os.path.isdir(partial):
        if os.path.isdir(final):
            shutil.rmtree(final)
        os.replace(partial, final)
        return
    with open(partial, "rb") as f:
        os.fsync(f.fileno())  # the bytes are on disk before the name points at them
    os.replace(partial, final)  # atomic within one file system
