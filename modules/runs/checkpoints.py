"""Checkpoints that survive kills and interruptions: atomic writes (`AtomicCheckpointIO`) and a `last.ckpt` that
always holds the latest step reached (`RunCheckpoint`)."""

import os
import shutil
import warnings
from pathlib import Path
from typing import Any
from weakref import proxy

from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException

from modules import compat
from modules.errors import HFLightningError

PARTIAL_SUFFIX = ".partial"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write each checkpoint next to its final name and rename it into place once its bytes are on disk.

    A kill at any moment (SIGKILL, the OOM killer, a full disk) then leaves every `.ckpt` whole: the previous file
    stays until the new one is complete. Lightning's own writer stages the bytes in the system temp folder and moves
    them, which is a plain copy when that folder is on another file system. Remote paths (`s3://`, ...) keep
    Lightning's writer: object stores replace objects whole. The CLI installs it unless the config names a
    CheckpointIO plugin of its own. Sharded FSDP and DeepSpeed checkpoints are folders their strategy writes itself.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None) -> None:
        if not isinstance(get_filesystem(path), LocalFileSystem):
            return super().save_checkpoint(checkpoint, path, storage_options)
        partial = f"{path}{PARTIAL_SUFFIX}"
        super().save_checkpoint(checkpoint, partial, storage_options)
        with open(partial, "rb") as f:
            os.fsync(f.fileno())  # the bytes are on disk before the name points at them
        os.replace(partial, path)  # atomic within one file system


class RunCheckpoint(ModelCheckpoint):
    """`ModelCheckpoint` for runs that get interrupted: same arguments, two differences.

    - `last.ckpt` always holds the latest epoch. Lightning 2.6 rewrites it only when a top-k checkpoint was saved in
      the same step, so after an epoch that did not improve the monitored metric, `--ckpt_path last` would resume
      from an older epoch.
    - A graceful stop (SIGTERM, or Ctrl-C once: see `modules/runs/interrupts.py`) writes `last.ckpt` at the step
      reached; `--ckpt_path last` continues from there (mid-epoch too: the training loader is resumable).

    Writes are atomic through `AtomicCheckpointIO`, which the CLI installs; leftovers of a write that was killed are
    removed when the next fit starts.

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
            compat.save_last_if_due(self, trainer)

    def setup(self, trainer, pl_module, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage == "fit" and trainer.is_global_zero and self.dirpath and os.path.isdir(self.dirpath):
            for leftover in Path(self.dirpath).glob(f"*{PARTIAL_SUFFIX}"):  # from a run killed while writing
                shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if compat.saves_on_train_epoch_end(self, trainer):
            compat.save_last_if_due(self, trainer)

    def on_validation_end(self, trainer, pl_module) -> None:
        super().on_validation_end(trainer, pl_module)
        if not compat.saves_on_train_epoch_end(self, trainer):
            compat.save_last_if_due(self, trainer)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        super().on_exception(trainer, pl_module, exception)  # `save_on_exception=True` still works as documented
        # Only a graceful stop: it is raised between steps, when weights, optimizer and counters agree. Any other
        # exception may have struck mid-update; the checkpoints already on disk are the safe ones then.
        if not isinstance(exception, SIGTERMException) or trainer.state.fn != "fit" or trainer.sanity_checking:
            return
        if compat.last_global_step_saved(self) == trainer.global_step and self.last_model_path:
            path = self.last_model_path  # this step is on disk already
        else:
            path = self.format_checkpoint_name(compat.monitor_candidates(self, trainer), self.CHECKPOINT_NAME_LAST)
            trainer.save_checkpoint(path, self.save_weights_only)  # collective; rank 0 writes
            self.last_model_path = path
            if trainer.is_global_zero:
                for logger in trainer.loggers:
                    logger.after_save_checkpoint(proxy(self))
        rank_zero_info(f"Stopped at step {trainer.global_step}: saved {path}. Resume with --ckpt_path last.")
