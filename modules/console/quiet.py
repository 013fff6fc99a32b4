"""Library messages a user cannot act on, filtered where they are emitted (by logger name or warning text and module),
so that every line left in a run's output means something."""

import logging
import re
import sys
import warnings

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class _DropMessages(logging.Filter):
    def __init__(self, *starts: str) -> None:
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.starts)


class _DropLines(logging.Filter):
    """Removes lines matching `pattern` from a multi-line message; the rest of the message still shows."""

    def __init__(self, pattern: str) -> None:
        super().__init__()
        self.pattern = re.compile(pattern)

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = "\n".join(line for line in record.msg.split("\n") if not self.pattern.match(line))
        return True


class _PlainText(logging.Filter):
    """Strips colour codes from messages written to a file (transformers colours its LOAD REPORT title even then)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and not sys.stderr.isatty():
            record.msg = _ANSI.sub("", record.msg)
        return True


class _NewHeadInOneLine(logging.Filter):
    """transformers' LOAD REPORT when the only missing weights are the new classification head (what fine-tuning a
    pretrained encoder always gives): one line saying so. Any other report (unexpected or mismatched weights, a
    missing encoder weight) still shows whole."""

    HEADS = ("classifier", "pre_classifier", "score")
    ROW = re.compile(r"^(\S+)\s*\|\s*([A-Z_]+)\s*\|")

    def filter(self, record: logging.LogRecord) -> bool:
        if not isinstance(record.msg, str) or "LOAD REPORT" not in record.msg:
            return True
        lines = _ANSI.sub("", record.msg).splitlines()
        title = re.match(r"^(\S+) LOAD REPORT from: (.*)$", lines[0].strip())
        rows = [m.groups() for m in map(self.ROW.match, lines[1:]) if m and m.group(1) != "Key"]
        if title and rows and all(status == "MISSING" and key.split(".")[0] in self.HEADS for key, status in rows):
            keys = ", ".join(sorted(key for key, _ in rows))
            record.msg = f"{title.group(1)} from {title.group(2)}: a new classification head ({keys}), trained by fit."
            record.args = ()
        return True


def _add_once(logger_name: str, log_filter: logging.Filter) -> None:
    logger = logging.getLogger(logger_name)
    if not any(type(f) is type(log_filter) for f in logger.filters):
        logger.addFilter(log_filter)


def quiet_library_noise() -> None:
    """Idempotent: adds each filter once."""
    # Lightning's advertisements for its cloud products (litlogger, litmodels), printed on every run; its note that
    # a model summary is configured, when it is our own plain one for log files (see `plain_output`); and its note
    # that the warmup schedule's length was counted from the train loader (an internal step of every fit).
    _add_once(
        "lightning.pytorch.utilities.rank_zero",
        _DropMessages(
            "💡 Tip: For seamless cloud",
            "Loading `train_dataloader` to estimate number of stepping batches.",
            "Trainer already configured with model summary callbacks: "
            "[<class 'modules.console.progress.PlainModelSummary'>]",
        ),
    )
    # FLOPs are counted only for a model with `example_input_array`; ours has none, so the total is always 0.
    _add_once("lightning.pytorch.callbacks.model_summary", _DropLines(r"(Total FLOPs: 0|0\s+Total Flops)\s*$"))
    # Local dataset folders with a README.md but no YAML header (ours, the user's): nothing to fix for training.
    _add_once("huggingface_hub.repocard", _DropMessages("Repo card metadata block was not found"))
    _add_once("transformers.modeling_utils", _PlainText())
    _add_once("transformers.modeling_utils", _NewHeadInOneLine())
    for message, module in _IGNORED_WARNINGS:
        warnings.filterwarnings("ignore", message=message, module=module)


# Warnings with nothing for the user to do, each by its message and the module that raises it (anything else shows).
_IGNORED_WARNINGS = [
    # Lightning's own call of a torch API it has not caught up with (lightning 2.6 with torch 2.13).
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", r"lightning\.pytorch\.utilities"),
    # `main.py` and the tuner hand LightningCLI its arguments on purpose (the door strips the command's own argv).
    (r"LightningCLI's args parameter is intended to run from within Python", r"lightning"),
    # The tuner's worker heartbeat (`heartbeat_interval`, `fail_stale_trials`), which it relies on: Optuna calls both
    # experimental at every use.
    (
        r"Argument ``heartbeat_interval`` is an experimental|optuna\.storages\._heartbeat\.fail_stale_trials ",
        r"optuna|modules\.tune",
    ),
    # Regression's Spearman correlation keeps each evaluation's predictions to rank them (a float per row): the
    # metric the run reports, not something the user can change.
    (r"Metric `SpearmanCorrcoef` will save all targets and predictions", r"torchmetrics"),
    # bf16/16-mixed: the summary's size estimate assumes 32-bit weights, which is what mixed precision keeps.
    (r"Precision .* is not supported by the model summary", r"lightning\.pytorch\.utilities\.model_summary"),
]


def plain_output() -> None:
    """Output to a file or pipe: no live progress bars of datasets, transformers or the Hub (each redraw of their
    bars is a carriage return in the file; the run's own `LogProgress` lines say how far it is)."""
    import datasets
    import huggingface_hub.utils
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    huggingface_hub.utils.disable_progress_bars()
