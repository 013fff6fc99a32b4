"""Likely label errors (modules/decisions/label_issues.py): planted label flips rank first; `test` writes
`test_label_issues.csv` for a fitted multi-label run; regression and a missing cleanlab are refused at setup."""

import csv
import importlib.util
import json
from types import SimpleNamespace

import numpy as np
import pytest

from helpers import TOPICS
from modules.cli.app import cli_main
from modules.decisions.label_issues import LabelIssues, find_issues
from modules.errors import HFLightningError


def _confident(labels: np.ndarray, num_labels: int, seed: int) -> np.ndarray:
    """Softmax-like rows that put 0.75-0.95 on each row's class and spread the rest."""
    rng = np.random.default_rng(seed)
    top = rng.uniform(0.75, 0.95, len(labels))
    probabilities = np.repeat(((1 - top) / (num_labels - 1))[:, None], num_labels, axis=1)
    probabilities[np.arange(len(labels)), labels] = top
    return probabilities


def test_planted_single_label_flips_rank_first_most_contradicted_first():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 3, 90)
    probabilities = _confident(truth, 3, seed=1)
    given = truth.copy()
    flips = np.array([41, 7, 66])  # the given label's probability: lowest on row 41, so it ranks first
    given[flips] = (truth[flips] + 1) % 3
    probabilities[flips] = 0.0
    probabilities[flips, given[flips]] = [0.01, 0.03, 0.06]
    probabilities[flips, truth[flips]] = 0.93
    probabilities[flips, (truth[flips] + 2) % 3] = 1 - 0.93 - probabilities[flips, given[flips]]

    flagged, scores = find_issues(probabilities, given, multi_label=False)

    assert flagged.tolist() == [41, 7, 66]
    assert np.allclose(scores[flips], [0.01, 0.03, 0.06])  # self-confidence: the probability of the given label
    assert np.delete(scores, flips).min() >= 0.75


def test_planted_multi_label_flips_rank_first():
    rng = np.random.default_rng(0)
    truth = (rng.random((120, 4)) < 0.3).astype(int)
    truth[:, 3] = 1  # a label every row has: cleanlab refuses it as is
    probabilities = np.where(truth == 1, rng.uniform(0.8, 0.95, truth.shape), rng.uniform(0.02, 0.15, truth.shape))
    given = truth.copy()
    for row, flipped in ((5, [0]), (60, [0]), (99, [1, 2])):  # one label added or dropped; row 99: two labels
        given[row, flipped] = 1 - given[row, flipped]
        probabilities[row, flipped] = np.where(truth[row, flipped] == 1, 0.97, 0.03)  # the model is sure of the truth

    flagged, scores = find_issues(probabilities, given, multi_label=True)

    assert flagged[0] == 99
    assert set(flagged[:3].tolist()) == {5, 60, 99}
    assert np.delete(scores, [5, 60, 99]).min() > scores[[5, 60, 99]].max()


def _setup_args(task: str) -> tuple:
    spec = SimpleNamespace(task=task)
    trainer = SimpleNamespace(datamodule=SimpleNamespace(contract=SimpleNamespace(label_spec=spec)))
    return trainer, SimpleNamespace(task=task)


def test_regression_and_a_missing_cleanlab_are_refused_at_setup(monkeypatch):
    with pytest.raises(HFLightningError, match="classifiers, not regression"):
        LabelIssues(enabled=True).setup(*_setup_args("regression"), stage="test")
    LabelIssues(enabled=False).setup(*_setup_args("regression"), stage="test")  # off: nothing to refuse

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "cleanlab" else find_spec(name))
    with pytest.raises(HFLightningError, match=r"pip install hf-lightning\[quality\]"):
        LabelIssues(enabled=True).setup(*_setup_args("single_label"), stage="validate")
    with pytest.raises(HFLightningError, match="max_rows must be at least 1"):
        LabelIssues(enabled=True, max_rows=0)


def test_test_writes_the_likely_label_errors_of_a_multi_label_run(topic_run, capsys):
    cli_main(["test", "--config", str(topic_run["config"]), "--ckpt_path", "best", "--label_issues.enabled", "true"])

    path = topic_run["run_dir"] / "test_label_issues.csv"
    rows = _read(path)
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("Likely label errors")]
    assert printed == [f"Likely label errors: {len(rows)} of 300 test rows, written to {path}"]
    assert list(rows[0]) == ["index", "text", "given_label", "suggested_label", "given_probability",
                             "suggested_probability", "label_quality"]  # fmt: skip
    source = [json.loads(line) for line in open(topic_run["files"]["test"])]
    for row in rows:
        given = [name for name in row["given_label"].split(";") if name]
        assert row["text"] == source[int(row["index"])]["text"]
        assert sorted(given) == sorted(source[int(row["index"])]["labels"])
        assert [part.split("=")[0] for part in row["given_probability"].split(";") if part] == given
    quality = [float(row["label_quality"]) for row in rows]
    assert quality == sorted(quality) and 0 <= quality[0] < quality[-1] <= 1
    # The generated labels are noisy on purpose: a present label's cue word missing, an absent label's cue present.
    # The rows ranked first are those where the text contradicts the labels, far more often than the split's rows.
    contradicted = [_cues(r["text"]) != set(r["labels"]) for r in source]
    assert 20 <= len(rows) < 225
    first = np.mean([contradicted[int(row["index"])] for row in rows[:20]])
    assert first >= 0.6 > 1.5 * np.mean(contradicted)  # by chance, 12 of 20 would happen about 1% of the time


def _cues(text: str) -> set[str]:
    words = set(text.split())
    return {name for name, cue in TOPICS.items() if cue in words}


def _read(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))
