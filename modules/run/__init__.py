"""The old name of `modules.runs`, kept so configs and saved runs that name `modules.run.RunCheckpoint` still load."""

from modules.runs import AtomicCheckpointIO, RNGState, RunCheckpoint

__all__ = ["AtomicCheckpointIO", "RNGState", "RunCheckpoint"]
