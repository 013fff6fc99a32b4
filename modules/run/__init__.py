"""Run control: where a run's files live and how `best`/`last` are found (`paths`), checkpoints that survive kills
and interruptions (`checkpoints`), graceful stops on SIGTERM and Ctrl-C (`interrupts`), progress output
(`progress`), the RNG state that makes a resumed run match an uninterrupted one (`rng`), and the `check` command
before a long run (`check`, `cost`) with the precision probe and guard (`machine`).
"""

from modules.run.checkpoints import AtomicCheckpointIO, RunCheckpoint
from modules.run.rng import RNGState

__all__ = ["AtomicCheckpointIO", "RNGState", "RunCheckpoint"]
