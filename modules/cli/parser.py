"""LightningCLI's parser with our error lines: a bad flag or value is one `error:` line with a did-you-mean, exit 2."""

import argparse
import re
import sys
from typing import Any, NoReturn

from jsonargparse import DefaultHelpFormatter
from lightning.pytorch.cli import LightningArgumentParser

from modules import compat
from modules.cli.commands import LIGHTNING_COMMANDS
from modules.cli.suggest import did_you_mean

CKPT_PATH_HELP = (
    "A checkpoint file, or `best` / `last`: the best (by the checkpoint callback's monitor, val_loss in the recipes) "
    "or the last checkpoint of this config's most recent `fit` (found under its logger's run folder). `fit` resumes "
    "from it; validate, test and predict use its weights, and with no data set but a file, its model and labels."
)


class HelpFormatter(argparse.RawDescriptionHelpFormatter, DefaultHelpFormatter):
    """jsonargparse's help, with the description's lines (the examples) kept as written."""


class ArgumentParser(LightningArgumentParser):
    """LightningCLI's parser; a bad flag or value prints the error and where to find the options, not the usage."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # `--model.learning_rat 0.01` must not silently set learning_rate: a shortened flag is an unknown flag.
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def add_method_arguments(self, *args: Any, **kwargs: Any) -> list[str]:
        # Not a group of its own: its title would be the Trainer method's docstring, cut off mid-sentence.
        added = super().add_method_arguments(*args, **{**kwargs, "as_group": False})
        compat.set_argument_help(self, "ckpt_path", CKPT_PATH_HELP)  # Lightning's text: hpc/registry, not best/last
        return added

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error:
            super().error(message, ex)
        parser = getattr(ex, "subcommand_parser", None) or self
        prog = parser.prog.replace(" [options]", "")
        hint = _did_you_mean(message, parser)
        first, *rest = message.splitlines() or [""]
        details = "".join(f"{line}\n" for line in rest)
        sys.stderr.write(f"error: {first}{hint}\n{details}(`{prog} --help` lists the options)\n")
        sys.exit(2)


def _did_you_mean(message: str, parser: LightningArgumentParser) -> str:
    """` (did you mean --model.learning_rate?)` for the first unknown flag or key in `message` close to a known one."""
    unknown = (
        re.findall(r"--([\w.]+)", message.split("unrecognized arguments:", 1)[-1]) if "unrecognized" in message else []
    )
    unknown += re.findall(r"""(?:[Kk]ey|option) ['"]([\w.]+)['"]""", message)
    if not unknown:
        return ""
    try:
        keys = parser.get_defaults().keys()
    except Exception:  # defaults that cannot be computed: no suggestion, the error itself still prints
        return ""
    # The root parser's keys carry the subcommand (`fit.model.learning_rate`); flags and config keys do not.
    known = {key.split(".", 1)[1] if key.split(".", 1)[0] in LIGHTNING_COMMANDS else key for key in keys}
    return did_you_mean(unknown[0], known)
