"""Library messages a user cannot act on, filtered where they are emitted (by logger name or warning text and module),
so that every line left in a run's output means something."""

import logging
import warnings


class _DropMessages(logging.Filter):
    def __init__(self, *starts: str) -> None:
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.starts)


def quiet_library_noise() -> None:
    """Idempotent: adds each filter once."""
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropMessages) for f in rank_zero.filters):
        # Lightning's advertisements for its cloud products (litlogger, litmodels), printed on every run.
        rank_zero.addFilter(_DropMessages("💡 Tip: For seamless cloud"))
    # Lightning's own call of a torch API it has not caught up with (lightning 2.6 with torch 2.13).
    warnings.filterwarnings(
        "ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", module=r"lightning\.pytorch\.utilities"
    )
