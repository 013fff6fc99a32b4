"""hf-lightning: fine-tune Hugging Face transformers for text classification from one YAML file.

python main.py fit --config configs/bert.yaml
python main.py test --config configs/bert.yaml --ckpt_path best
python main.py serve logs/bert/version_0/hf_model

The one door: every command (`python main.py --help` lists them) is dispatched from the table in
modules/cli/commands.py. The `hf-lightning` console script is this same `main`.
"""

import importlib
import sys

from modules.cli.commands import COMMANDS, LIGHTNING_COMMANDS
from modules.cli.fast_path import answer_without_lightning, top_level_help
from modules.cli.plain_parser import program
from modules.cli.suggest import did_you_mean


def main(argv: list[str] | None = None) -> None:
    """Run `COMMAND ARGS...`; bad input prints one `error:` line and exits with status 2."""
    argv = sys.argv[1:] if argv is None else argv
    prog = program()  # `main.py` or `hf-lightning`, in every help and error line
    # The top-level --help and a misspelled key answer in well under a second, before Lightning's imports.
    answer_without_lightning(argv, prog)
    if not argv:
        sys.stderr.write(f"{top_level_help(prog)}\nerror: name a command\n")
        sys.exit(2)
    command = argv[0]
    if command.startswith("-"):  # `--config x.yaml fit ...`: LightningCLI's own root options come first
        _run(LIGHTNING_COMMANDS[0], argv)
    if command not in COMMANDS:
        sys.stderr.write(
            f"error: unknown command {command!r}{did_you_mean(command, COMMANDS, prefix='')} "
            f"(`{prog} --help` lists the commands)\n"
        )
        sys.exit(2)
    _run(command, argv if command in LIGHTNING_COMMANDS else argv[1:])


def _run(command: str, args: list[str]) -> None:
    module, function = COMMANDS[command][1].split(":")
    getattr(importlib.import_module(module), function)(args)
    sys.exit(0)


if __name__ == "__main__":
    main()
