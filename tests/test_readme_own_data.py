"""The README's "Your own data" commands, run as written on generated CSV files with the tiny model."""

import csv
import re
import shlex
import subprocess
import sys

import pytest

from helpers import ROOT
from modules.cli.app import cli_main


def _own_data_commands() -> list[str]:
    section = (ROOT / "README.md").read_text().split("## Your own data", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.DOTALL).group(1)
    return [line for line in block.splitlines() if line.strip()]


def _write_csv(path, rows: list[dict]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


@pytest.mark.e2e
def test_readme_own_data_walkthrough(tmp_path, tiny_model, review_rows, monkeypatch):
    names = ["negative", "positive"]
    (tmp_path / "mydata").mkdir()
    for seed, (split, n) in enumerate({"train": 200, "validation": 40, "test": 40}.items()):
        rows = [{"review": r["text"], "sentiment": names[r["label"]]} for r in review_rows(n, seed)]
        _write_csv(tmp_path / "mydata" / f"{split}.csv", rows)
    new = [{"id": f"r{i}", "review": r["text"]} for i, r in enumerate(review_rows(5, 9))]
    _write_csv(tmp_path / "mydata" / "new.csv", new)
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "own_data.yaml").write_text((ROOT / "configs" / "own_data.yaml").read_text())
    monkeypatch.chdir(tmp_path)  # the commands run from a checkout: relative paths as a user has them

    commands = _own_data_commands()
    assert [shlex.split(c)[2] for c in commands[:3]] == ["fit", "test", "predict"]
    # The only additions: the offline tiny model, one epoch, no progress bar.
    extra = ["--model.model_name_or_path", str(tiny_model), "--trainer.max_epochs", "1"]
    extra += ["--trainer.enable_progress_bar", "false"]
    for command in commands[:3]:
        cli_main(shlex.split(command)[2:] + extra)

    run = tmp_path / "logs" / "own_data" / "version_0"
    assert (run / "test_metrics.json").is_file()
    with (tmp_path / "preds.csv").open() as f:
        predictions = list(csv.DictReader(f))
    assert [p["review"] for p in predictions] == [r["review"] for r in new]
    assert {p["prediction"] for p in predictions} <= set(names)
    assert {"prob_negative", "prob_positive"} <= set(predictions[0])

    pipeline_command = commands[3]
    assert pipeline_command.startswith("python -c ")
    result = subprocess.run(
        [sys.executable, *shlex.split(pipeline_command)[1:]], capture_output=True, text=True, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert re.search(r"'label': '(negative|positive)'", result.stdout), result.stdout
