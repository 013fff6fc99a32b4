"""The parser of every command LightningCLI does not run (tune, export, demo, serve): argparse, named as the user
typed it (`main.py tune`, `hf-lightning tune`), and any bad input is one `error:` line with exit status 2, as
LightningCLI's commands answer (modules/cli/parser.py).
"""

import argparse
import sys
from pathlib import Path
from typing import Any, NoReturn

from modules.cli.suggest import did_you_mean

CONSOLE_SCRIPT = "hf-lightning"


def program() -> str:
    """The door as the user typed it: `hf-lightning` (the console script), else `main.py` (also for the old
    `python -m modules...` aliases, whose help then shows the one documented form)."""
    name = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    return CONSOLE_SCRIPT if name == CONSOLE_SCRIPT else "main.py"


class PlainParser(argparse.ArgumentParser):
    """argparse for `main.py COMMAND`: `prog` is `<program> COMMAND`; an error is one line plus where the options are.

    Args:
        command: The command's name in `main.py`'s table (modules/cli/commands.py).
        **kwargs: argparse.ArgumentParser's own (description, formatter_class, ...), but not `prog`.
    """

    def __init__(self, command: str, **kwargs: Any) -> None:
        # `--quant` must not silently mean --quantize: the LightningCLI commands refuse shortened flags too.
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(prog=f"{program()} {command}", **kwargs)

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"error: {message}{self._did_you_mean(message)}\n(`{self.prog} --help` lists the options)\n")
        sys.exit(2)

    def _did_you_mean(self, message: str) -> str:
        """` (did you mean --quantize?)` for the first unrecognized flag close to one of this parser's."""
        if not message.startswith("unrecognized arguments: "):
            return ""
        first = message.removeprefix("unrecognized arguments: ").split()[0]
        if not first.startswith("--"):
            return ""
        known = {option[2:] for action in self._actions for option in action.option_strings if option[:2] == "--"}
        return did_you_mean(first[2:].split("=", 1)[0], known)
