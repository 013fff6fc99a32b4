"""The one door (main.py, modules/cli/commands.py): every command behind `main.py` and the `hf-lightning` script,
each with a working `--help` and one `error:` line, exit status 2, for bad input."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from main import main
from modules.cli.commands import COMMANDS

EVERY_COMMAND = ["fit", "validate", "test", "predict", "check", "tune", "serve", "export", "demo"]


def test_top_level_help_lists_every_command_on_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert list(COMMANDS) == EVERY_COMMAND
    for name in EVERY_COMMAND:
        lines = [line for line in out.splitlines() if line.split()[:1] == [name]]
        assert lines == [f"  {name:<10}{COMMANDS[name][0]}"], name


def test_unknown_command_is_one_error_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["exprot", "last.ckpt", "out"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: unknown command 'exprot' (did you mean export?) (`main.py --help` lists the commands)"
    ]


@pytest.mark.parametrize(
    ("argv", "first_line"),
    [
        (["tune", "--config", "x.yaml"], "the following arguments are required: --search, --n_trials, --study_name"),
        (["tune", "--config", "x.yaml", "--search", "s.yaml", "--n_trials", "0", "--study_name", "s"], None),
        (["export", "x.ckpt", "out", "--quantise"], "unrecognized arguments: --quantise (did you mean --quantize?)"),
        (
            ["export", "no/such.ckpt", "out"],
            "no/such.ckpt does not exist: pass a checkpoint (.ckpt) or an hf_model/ export folder",
        ),
        (["export", "last.ckpt", "out", "--quantize"], "--quantize quantizes the ONNX export: add --onnx"),
        (["export", "last.ckpt"], "name the folder to export last.ckpt to: `export CHECKPOINT OUTPUT_DIR`"),
        (["export", "last.ckpt", "out"], "checkpoint last.ckpt is corrupt or not a checkpoint"),
        (["demo", "out", "extra"], "unrecognized arguments: extra"),
    ],
)
def test_bad_input_of_a_plain_command_is_one_error_line(argv, first_line, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a bad command writes nothing: only the file made here stays
    (tmp_path / "last.ckpt").write_text("not a checkpoint")
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.splitlines()
    if first_line is None:  # an error the command finds after parsing, before any work
        assert len(err) == 1 and err[0].startswith("error: --n_trials must be >= 1")
    else:
        assert len(err) == 2 and err[0].startswith(f"error: {first_line}")
        assert err[1] == f"(`main.py {argv[0]} --help` lists the options)"
    assert [path.name for path in tmp_path.iterdir()] == ["last.ckpt"]


def test_export_adds_onnx_files_to_an_export_folder(tiny_model, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    from modules.outputs.onnx import OnnxLogits

    folder = shutil.copytree(tiny_model, tmp_path / "hf_model")
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(folder)])  # a folder holds a model already: only ONNX can be added
    assert exit_info.value.code == 2 and "--onnx" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(folder), "--onnx"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"Exported ONNX to {folder / 'model.onnx'}"
    logits = OnnxLogits(folder)({"input_ids": [[2, 7, 3]], "attention_mask": [[1, 1, 1]]})
    assert logits.shape == (1, 2)


def _console_script() -> Path | None:
    """The script `pip install -e .` put beside this interpreter (else on PATH), or None."""
    beside = Path(sys.executable).parent / "hf-lightning"
    found = beside if beside.is_file() else shutil.which("hf-lightning")
    return Path(found) if found else None


@pytest.mark.skipif(_console_script() is None, reason="the hf-lightning script is not installed (pip install -e .)")
def test_installed_console_script_answers_help_for_every_command(tmp_path):
    # One process per command, all at once; from another folder, as users run an installed command.
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    runs = {
        name: subprocess.Popen(
            [str(_console_script()), *name.split(), "--help"],
            cwd=tmp_path,
            env=env if name else {**env, "PYTHONPROFILEIMPORTTIME": "1"},  # the top-level help: what it imports
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ["", *EVERY_COMMAND]
    }
    results = {name: (process, *process.communicate(timeout=300)) for name, process in runs.items()}
    for name, (process, out, err) in results.items():
        assert process.returncode == 0, f"hf-lightning {name} --help: {err[-2000:]}"
        usage = out.split("\n", 1)[0]
        assert usage.startswith("usage: hf-lightning ") and name in usage, usage
    # The top-level help is the fast path's, as with main.py: Lightning is never imported.
    imported = {line.split("|")[-1].strip() for line in results[""][2].splitlines()}
    assert "modules.cli.fast_path" in imported and not {"lightning", "torch"} & imported
