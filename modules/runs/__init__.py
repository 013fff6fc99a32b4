"""Runs and their reliability: where a run's files live and how `best`/`last` are found (`paths`), checkpoints that
survive kills and interruptions (`checkpoints`), graceful stops on SIGTERM and Ctrl-C (`interrupts`), the RNG state
that makes a resumed run match an uninterrupted one (`rng`), what a checkpoint records about its run, read by every
consumer (`record`), and `HFTrainer`, every command's Trainer (`trainer`).
"""

from modules.runs.checkpoints import AtomicCheckpointIO, RunCheckpoint
from modules.runs.rng import RNGState

__all__ = ["AtomicCheckpointIO", "RNGState", "RunCheckpoint"]
