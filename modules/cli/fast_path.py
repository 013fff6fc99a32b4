"""Answers that need no Lightning import: the top-level `--help`, and a misspelled option or config key.

Importing Lightning and building the full parser takes seconds; these answers take a fraction of one (measured in
benchmarks/README.md, "CLI start-up"). The keys are read from the `__init__` signatures' source (`ast`), so they cannot
drift from the code. Whatever this module is not sure about (values, top-level options, anything but a plain unknown
key) falls through to the full parser, which gives the same kind of error.
"""

import ast
import importlib.util
import sys
from pathlib import Path

import yaml

from modules.cli.commands import COMMANDS, DESCRIPTION, LIGHTNING_COMMANDS
from modules.cli.suggest import did_you_mean

# Each config section and the class whose `__init__` parameters are its keys, as `main.py` and LightningCLI add them.
_SECTIONS = {
    "trainer": ("lightning", "pytorch/trainer/trainer.py", "Trainer"),
    "model": ("modules", "model/module.py", "TransformerModule"),
    "data": ("modules", "data/datamodule.py", "HFDataModule"),
    "export": ("modules", "outputs/export.py", "HFExport"),
    "predictions": ("modules", "outputs/predictions.py", "PredictionWriter"),
    "report": ("modules", "outputs/report.py", "TestReport"),
}
# Keys inside a section that are not parameters but still belong to jsonargparse: leave them to the full parser.
_PASS_THROUGH = {"class_path", "init_args", "dict_kwargs"}


def answer_without_lightning(argv: list[str], prog: str = "main.py") -> None:
    """Print the top-level help (exit 0) or one `error:` line for an unknown key (exit 2); else return."""
    if argv in (["-h"], ["--help"]):
        print(top_level_help(prog))
        sys.exit(0)
    if (
        not argv
        or argv[0] not in LIGHTNING_COMMANDS
        or any(a in ("-h", "--help") or a.startswith("--print_config") for a in argv)
    ):
        return
    problem = unknown_key(argv[0], argv[1:])
    if problem:
        sys.stderr.write(f"error: {problem}\n(`{prog} {argv[0]} --help` lists the options)\n")
        sys.exit(2)


def top_level_help(prog: str) -> str:
    width = max(map(len, COMMANDS)) + 2
    commands = "\n".join(f"  {name:<{width}}{help_line}" for name, (help_line, _) in COMMANDS.items())
    return (
        f"usage: {prog} [-h] {{{','.join(COMMANDS)}}} ...\n\n{DESCRIPTION}\n\n"
        f"commands (`{prog} COMMAND --help` lists its options):\n{commands}\n\n"
        "options:\n"
        "  -h, --help            Show this help message and exit.\n"
    )


def unknown_key(subcommand: str, args: list[str]) -> str | None:
    """The error for the first `--section.key` flag or config-file key that no section's class takes, else None."""
    for i, arg in enumerate(args):
        if arg in ("-c", "--config") and i + 1 < len(args) or arg.startswith("--config="):
            path = args[i + 1] if "=" not in arg else arg.split("=", 1)[1]
            for key in _config_keys(path):
                hint = _hint(key)
                if hint is not None:
                    return f"{path}: `{subcommand}` has no option {key!r}{hint}"
        elif arg.startswith("--") and "." in arg:
            key = arg[2:].split("=", 1)[0].rstrip("+")
            hint = _hint(key)
            if hint is not None:
                return f"unrecognized arguments: {arg.split('=', 1)[0]}{hint}"
    return None


def section_keys(section: str) -> set[str] | None:
    """The parameter names of a section's class, from its source; None when they cannot be read for sure."""
    package, relative, class_name = _SECTIONS[section]
    spec = importlib.util.find_spec(package)  # a top-level package: found, not imported
    if spec is None or not spec.submodule_search_locations:
        return None
    source = Path(spec.submodule_search_locations[0]) / relative
    try:
        tree = ast.parse(source.read_text())
    except (OSError, SyntaxError):
        return None
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == class_name:
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name == "__init__":
                    arguments = item.args
                    if arguments.vararg or arguments.kwarg:
                        return None  # **kwargs: any key may be valid
                    return {a.arg for a in arguments.posonlyargs + arguments.args + arguments.kwonlyargs} - {"self"}
    return None


def _hint(key: str) -> str | None:
    """None when `key` is known or not ours to judge; else the ` (did you mean ...)` text (possibly empty)."""
    section, _, rest = key.partition(".")
    if section not in _SECTIONS or not rest:
        return None
    name = rest.split(".", 1)[0]
    known = section_keys(section)
    if known is None or name in known or name in _PASS_THROUGH or name.startswith("__"):
        return None
    return did_you_mean(name, known, prefix=f"--{section}.")


def _config_keys(path: str) -> list[str]:
    """`section.key` for each key of each known section in a YAML config; none when it cannot be read."""
    try:
        config = yaml.safe_load(Path(path).expanduser().read_text())
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return []
    if not isinstance(config, dict):
        return []
    return [
        f"{section}.{key}"
        for section, values in config.items()
        if section in _SECTIONS and isinstance(values, dict)
        for key in values
    ]
