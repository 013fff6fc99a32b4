"""The answers given before Lightning is imported: top-level --help and unknown keys, from the code's own signatures."""

import inspect
import subprocess
import sys

import pytest
from lightning.pytorch import Trainer

from helpers import ROOT
from modules.cli.commands import LIGHTNING_COMMANDS
from modules.cli.fast_path import answer_without_lightning, section_keys
from modules.data import HFDataModule
from modules.model import TransformerModule
from modules.outputs.export import HFExport
from modules.outputs.predictions import PredictionWriter
from modules.outputs.report import TestReport


@pytest.mark.parametrize(
    "section, cls",
    [
        ("trainer", Trainer),
        ("model", TransformerModule),
        ("data", HFDataModule),
        ("export", HFExport),
        ("predictions", PredictionWriter),
        ("report", TestReport),
    ],
)
def test_keys_read_from_source_match_the_signatures(section, cls):
    assert section_keys(section) == set(inspect.signature(cls.__init__).parameters) - {"self"}


def test_subcommands_match_the_cli():
    from modules.cli.app import HFLightningCLI

    assert set(LIGHTNING_COMMANDS) == set(HFLightningCLI.subcommands())


def test_misspelled_flag_is_one_line_with_a_suggestion(capsys):
    with pytest.raises(SystemExit) as exit_info:
        answer_without_lightning(["fit", "--config", "configs/demo.yaml", "--model.learnin_rate", "0.1"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: unrecognized arguments: --model.learnin_rate (did you mean --model.learning_rate?)",
        "(`main.py fit --help` lists the options)",
    ]


def test_misspelled_config_key_names_the_file(tmp_path, capsys):
    config = tmp_path / "typo.yaml"
    config.write_text("trainer:\n  max_epochs: 1\ndata:\n  batch_sze: 8\n")
    with pytest.raises(SystemExit):
        answer_without_lightning(["test", "-c", str(config)])
    assert f"error: {config}: `test` has no option 'data.batch_sze' (did you mean --data.batch_size?)" in (
        capsys.readouterr().err
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["fit", "--config", "configs/demo.yaml", "--model.learning_rate=0.1", "--trainer.callbacks+=X"],
        ["fit", "--trainer.logger.init_args.name", "x", "--ckpt_pth", "best"],  # not ours to judge: the full parser's
        ["fit", "--model.learnin_rate", "0.1", "--help"],
        ["fit", "--config", "no/such/file.yaml"],
    ],
)
def test_anything_else_falls_through_to_the_full_parser(argv):
    assert answer_without_lightning(argv) is None


def test_top_level_help_imports_no_lightning():
    result = subprocess.run(
        [sys.executable, "-X", "importtime", str(ROOT / "main.py"), "--help"], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0 and "fit       Train" in result.stdout
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines()}
    assert "yaml" in imported and not {"lightning", "torch", "transformers", "datasets"} & imported
