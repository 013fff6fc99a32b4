"""Stops during `fit` (SIGTERM, Ctrl-C) happen after the current step, on every rank at the same step.

Lightning turns SIGTERM into a stop at the next batch boundary, but Ctrl-C into an exception raised wherever the
process happens to be (mid optimizer step included), after which no checkpoint is safe to write. A first Ctrl-C here
requests the SIGTERM-style stop; a second one interrupts at once, as before.

Lightning 2.6's SIGTERM handler also broadcasts from inside the signal handler under DDP. Python runs a handler
between two bytecodes of the main thread, so a rank signalled in the middle of its forward pass enters that broadcast
while another rank waits in the backward's gradient all-reduce: both wait for ever (a py-spy dump of such a hang shows
rank 0 in `broadcast` under Lightning's SIGTERM notifier and rank 1 in `_engine_run_backward`). Here the handlers
only note the request; after each training batch, where all ranks stand at the same point, an any-rank reduction
turns it into Lightning's stop flag on every rank at once. The Lightning members this needs are in modules/compat.py.
"""

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from lightning.pytorch import Callback, Trainer
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException

from modules import compat

log = logging.getLogger(__name__)


class _StopRequests(Callback):
    """Holds this process's stop request; under DDP, shares it with all ranks after every training batch."""

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer
        self.requested = False

    def request(self) -> None:
        """Called from a signal handler: no collective, no blocking."""
        if self.trainer.world_size > 1:
            self.requested = True
        else:
            compat.request_graceful_stop(self.trainer)  # the flag Lightning checks after every batch

    def _share(self, trainer: Trainer) -> None:
        if trainer.world_size > 1 and trainer.strategy.reduce_boolean_decision(self.requested, all=False):
            compat.request_graceful_stop(trainer)

    # Training batches only: every rank runs the same number of them, while validation splits may leave one rank a
    # batch more. A stop requested during validation happens after the next training step.
    def on_train_batch_end(self, trainer: Trainer, *args: Any) -> None:
        self._share(trainer)


@contextmanager
def stop_gracefully(trainer: Trainer) -> Iterator[None]:
    """Inside the block, SIGTERM or a first SIGINT asks `trainer` to stop after this step (on all ranks); a Ctrl-C stop
    then surfaces as `KeyboardInterrupt` (exit status 130), not as Lightning's `SIGTERMException`."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be installed from the main thread
        return
    stops = _StopRequests(trainer)
    previous = signal.getsignal(signal.SIGINT)
    requested = False

    def request_stop(signum, frame) -> None:
        nonlocal requested
        if requested:
            signal.signal(signal.SIGINT, previous)
            raise KeyboardInterrupt
        requested = True
        stops.request()
        rank_zero_info("\nCtrl-C: stopping after this step and saving a checkpoint (press again to abort now).")

    def notify_sigterm(signum, frame) -> None:
        # Lightning's SIGTERM notifier without its broadcast: note the request, pass the signal on once to the
        # processes this one launched (the other ranks).
        log.info(f"[rank: {trainer.global_rank}] Received SIGTERM: {signum}")
        first = not (stops.requested or compat.graceful_stop_requested(trainer))
        stops.request()
        if first and trainer.strategy.launcher is not None:
            trainer.strategy.launcher.kill(signum)

    compat.replace_sigterm_handler(trainer, notify_sigterm)  # read when `fit` registers its handlers
    trainer.callbacks.append(stops)
    signal.signal(signal.SIGINT, request_stop)
    try:
        yield
    except SIGTERMException:
        if requested:
            raise KeyboardInterrupt from None
        raise
    finally:
        signal.signal(signal.SIGINT, previous)
        trainer.callbacks.remove(stops)
        compat.replace_sigterm_handler(trainer, None)
