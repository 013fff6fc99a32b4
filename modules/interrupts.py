"""Ctrl-C during `fit` stops the way SIGTERM does: after the current step, with a checkpoint of the step reached.

Lightning turns SIGTERM into a stop at the next batch boundary, but Ctrl-C into an exception raised wherever the
process happens to be (mid optimizer step included), after which no checkpoint is safe to write. A first Ctrl-C here
requests the SIGTERM-style stop; a second one interrupts at once, as before.
"""

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from lightning.pytorch import Trainer
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException


@contextmanager
def stop_gracefully_on_ctrl_c(trainer: Trainer) -> Iterator[None]:
    """Inside the block, a first SIGINT asks `trainer` to stop after this step; the stop then surfaces as
    `KeyboardInterrupt` (exit status 130), not as Lightning's `SIGTERMException`."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be installed from the main thread
        return
    previous = signal.getsignal(signal.SIGINT)
    requested = False

    def request_stop(signum, frame) -> None:
        nonlocal requested
        if requested:
            signal.signal(signal.SIGINT, previous)
            raise KeyboardInterrupt
        requested = True
        # The flag Lightning's own SIGTERM handler sets; the training loop checks it after every batch (and
        # broadcasts rank 0's under DDP, so all ranks stop at the same step).
        trainer._signal_connector.received_sigterm = True
        rank_zero_info("\nCtrl-C: stopping after this step and saving a checkpoint (press again to abort now).")

    signal.signal(signal.SIGINT, request_stop)
    try:
        yield
    except SIGTERMException:
        if requested:
            raise KeyboardInterrupt from None
        raise
    finally:
        signal.signal(signal.SIGINT, previous)
