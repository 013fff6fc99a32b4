"""The one exception type for bad input: its message names the problem and the fix."""


class HFLightningError(ValueError):
    """Raised for bad user input (missing file, wrong column, unknown label, unreachable model...).

    `main.py` prints it as a single `error: ...` line and exits with status 2, so users see the fix, not a traceback.
    """
