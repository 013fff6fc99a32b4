"""Hyperparameter search (modules/tune/command.py): a shared study over the CLI, failures, pruning, best.yaml, kills,
and an objective other than the checkpoint's monitor."""

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from helpers import ROOT, write_base_config, write_topic_splits
from modules.cli.app import cli_main
from modules.errors import HFLightningError
from modules.tune.command import run
from modules.tune.search_space import load_search_space

optuna = pytest.importorskip("optuna")
pytestmark = pytest.mark.e2e  # trains end to end: `make test-fast` skips it


def _search(tmp_path: Path, space: dict) -> Path:
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(space))
    return path


def _args(
    tmp_path: Path,
    base: Path,
    search: Path,
    n_trials: int,
    *extra: str,
    pruning: str = "false",
    baseline: str = "false",
) -> list[str]:
    return [
        *("--config", str(base), "--search", str(search), "--n_trials", str(n_trials)),
        *("--study_name", "s", "--output_dir", str(tmp_path / "tune"), "--pruning", pruning, "--baseline", baseline),
        *extra,
    ]


def _study(tmp_path: Path):
    return optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'tune' / 'study.db'}")


@pytest.mark.parametrize("path", sorted(ROOT.glob("configs/search/*.yaml")), ids=lambda p: p.name)
def test_shipped_search_spaces_load(path):
    space = load_search_space(path)
    assert space and all(p.key.split(".")[0] in {"model", "data", "trainer"} for p in space)


def test_docs_show_the_shipped_search_space():
    shown = (ROOT / "docs" / "tune.md").read_text().split("The shipped `configs/search/lr.yaml`", 1)[1]
    shown = shown.split("```yaml\n", 1)[1].split("```", 1)[0]
    assert yaml.safe_load(shown) == yaml.safe_load((ROOT / "configs" / "search" / "lr.yaml").read_text())


@pytest.mark.parametrize(
    ("space", "names"),
    [
        ({"model.learning_rate": {"type": "float", "low": 1e-3}}, "model.learning_rate: missing ['high']"),
        ({"model.learning_rate": {"type": "float", "low": 0.0, "high": 1e-3, "log": True}}, "needs low > 0"),
        ({"model.learnig_rate": {"type": "float", "low": 1e-4, "high": 1e-3}}, "search key model.learnig_rate"),
        ({"data.batch_size": {"type": "categorical", "choices": [16, "many"]}}, "search key data.batch_size"),
        ({"lr": {"type": "float", "low": 1e-4, "high": 1e-3}}, "lr: not a CLI key"),
    ],
)
def test_bad_search_space_fails_before_any_trial_naming_the_key(space, names, tmp_path, tiny_model, reviews_dir):
    base = write_base_config(tmp_path, tiny_model, data={"dataset": str(reviews_dir)})
    with pytest.raises(HFLightningError, match=names.replace("[", r"\[").replace("]", r"\]")):
        run(_args(tmp_path, base, _search(tmp_path, space), 2))
    assert not (tmp_path / "tune" / "trials").exists()  # no trial ran


def test_failed_trial_is_recorded_and_best_yaml_reproduces_the_best(tmp_path, tiny_model, reviews_dir):
    # batch_size 0 parses (an int) but no DataLoader takes it: that trial fails with its error, the study goes on.
    base = write_base_config(tmp_path, tiny_model, data={"dataset": str(reviews_dir)}, trainer={"max_epochs": 1})
    space = {
        "data.batch_size": {"type": "categorical", "choices": [16, 0]},
        "model.learning_rate": {"type": "float", "low": 1e-3, "high": 5e-3, "log": True},
    }
    run(_args(tmp_path, base, _search(tmp_path, space), 4, "--sampler", "random", "--seed", "3"))
    trials = _study(tmp_path).trials
    assert [t.number for t in trials] == [0, 1, 2, 3]
    failed = [t for t in trials if t.state.name == "FAIL"]
    assert failed and all(t.params["data.batch_size"] == 0 and "batch_size" in t.user_attrs["error"] for t in failed)
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert complete and all(t.params["data.batch_size"] == 16 for t in complete)
    best = min(complete, key=lambda t: t.value)
    table = (tmp_path / "tune" / "trials.csv").read_text()
    assert table.count("\n") == 5  # header + 4 trials
    # Beside the objective (val_loss), the table shows the other metrics of each trial's best validation.
    assert "val_acc" in table.splitlines()[0]
    assert all(0 <= t.user_attrs["metrics"]["val_acc"] <= 1 for t in complete)
    # The best trial's config, run again, gives its metric.
    again = cli_main(["fit", "--config", str(tmp_path / "tune" / "best.yaml")])
    assert float(again.trainer.checkpoint_callback.best_model_score) == pytest.approx(best.value, abs=1e-6)


def test_pruned_trial_is_recorded_as_pruned(tmp_path, tiny_model, reviews_dir):
    # Random sampling with seed 6 draws 3e-3, 3e-3, then 1e-9: after its warm-up epoch, the third trial's val_loss is
    # far above the median of the first two at the same epoch, so the median pruner stops it.
    base = write_base_config(tmp_path, tiny_model, data={"dataset": str(reviews_dir)}, trainer={"max_epochs": 3})
    space = {"model.learning_rate": {"type": "categorical", "choices": [3e-3, 1e-9]}}
    extra = ["--sampler", "random", "--seed", "6", "--pruner_startup_trials", "2", "--pruner_warmup_epochs", "1"]
    run(_args(tmp_path, base, _search(tmp_path, space), 3, *extra, pruning="true"))
    trials = _study(tmp_path).trials
    assert [t.params["model.learning_rate"] for t in trials] == [3e-3, 3e-3, 1e-9]
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE", "PRUNED"]
    assert max(trials[2].intermediate_values) == 1  # stopped after epoch 1, not run to the end


@pytest.mark.parametrize(
    ("metric", "names"),
    [("val_acc", "a multi_label run never logs it"), ("val_f1_macr", "no fit logs it at validation")],
)
def test_a_metric_the_fit_never_logs_fails_before_any_trial(metric, names, tmp_path, tiny_model, topic_files):
    data = {"data_files": topic_files, "label_column": "labels"}
    base = write_base_config(tmp_path, tiny_model, data=data)
    search = _search(tmp_path, {"model.learning_rate": {"type": "float", "low": 1e-4, "high": 1e-3}})
    with pytest.raises(HFLightningError, match=f"--metric {metric}: {names}"):
        run(_args(tmp_path, base, search, 2, "--metric", metric))
    assert not (tmp_path / "tune" / "trials").exists()  # no trial ran


def _validations(run_dir: Path) -> list[dict[str, float]]:
    with (run_dir / "metrics.csv").open() as f:
        return [{k: float(v) for k, v in row.items() if v} for row in csv.DictReader(f) if row.get("val_loss")]


def test_metric_flag_optimizes_and_prunes_on_another_validation_metric(tmp_path, tiny_model):
    # Multi-label: maximize val_f1_macro while the checkpoint callback keeps the best val_loss. Small splits, and a
    # threshold under the commonest label's share, so that two short epochs give F1s above 0 that differ.
    data = {"data_files": write_topic_splits(tmp_path / "topics", (240, 80, 80)), "label_column": "labels"}
    model = {"model_name_or_path": str(tiny_model), "threshold": 0.3}
    decisions = {"calibrate": False, "tune_thresholds": False}  # what the objective reads does not need them
    base = write_base_config(tmp_path, tiny_model, data=data, model=model, decisions=decisions)
    space = {
        "model.learning_rate": {"type": "categorical", "choices": [3e-3, 1e-2]},
        "trainer.max_epochs": {"type": "int", "low": 1, "high": 2},
    }
    objective = ("--metric", "val_f1_macro", "--direction", "maximize")
    # Pruning on with the default 5 startup trials: both trials report to the pruner, neither is stopped.
    run(_args(tmp_path, base, _search(tmp_path, space), 2, *objective, "--sampler", "random", "--seed", "0",
              pruning="true"))  # fmt: skip
    study = _study(tmp_path)
    assert study.direction.name == "MAXIMIZE" and study.user_attrs["metric"] == "val_f1_macro"
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    for trial in study.trials:
        validations = _validations(Path(trial.user_attrs["run_dir"]))
        assert len(validations) == trial.params["trainer.max_epochs"]
        best = min(validations, key=lambda v: v["val_loss"])  # the best checkpoint's validation
        assert trial.value == pytest.approx(best["val_f1_macro"], abs=1e-6) and trial.value > 0
        assert trial.user_attrs["metrics"]["val_loss"] == pytest.approx(best["val_loss"], abs=1e-6)
        # The pruner watched the same metric, once per epoch.
        reported = [trial.intermediate_values[epoch] for epoch in sorted(trial.intermediate_values)]
        assert reported == pytest.approx([v["val_f1_macro"] for v in validations], abs=1e-6)
    # Another worker of the study with another objective is turned away before its first trial.
    with pytest.raises(HFLightningError, match="'s' maximizes val_f1_macro; this worker was given --metric val_loss"):
        run(_args(tmp_path, base, _search(tmp_path, space), 3, "--metric", "val_loss"))
    assert len(_study(tmp_path).trials) == 2


def _worker(tmp_path: Path, base: Path, search: Path, n_trials: int, *extra: str) -> subprocess.Popen:
    code = "import sys; from modules.tune.command import main; main(sys.argv[1:])"
    return subprocess.Popen(
        [sys.executable, "-c", code, *_args(tmp_path, base, search, n_trials, *extra, baseline="true")],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.slow
def test_two_workers_share_one_study_without_duplicates_or_losses(tmp_path, tiny_model, reviews_dir):
    base = write_base_config(tmp_path, tiny_model, data={"dataset": str(reviews_dir)}, trainer={"max_epochs": 1})
    search = _search(tmp_path, {"model.learning_rate": {"type": "float", "low": 1e-3, "high": 5e-3, "log": True}})
    workers = [_worker(tmp_path, base, search, 6, "--seed", str(seed)) for seed in (1, 2)]
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], [out[-3000:] for out in outputs]
    trials = _study(tmp_path).trials
    assert sorted(t.number for t in trials) == list(range(6))
    assert all(t.state.name == "COMPLETE" for t in trials)
    # Trial 0 is the config's own learning rate, queued once although both workers started at the same time.
    assert [t.number for t in trials if t.user_attrs.get("baseline")] == [0]
    assert trials[0].params == {"model.learning_rate": 3e-3}
    run_dirs = {t.user_attrs["run_dir"] for t in trials}
    assert len(run_dirs) == 6  # each trial in its own run folder
    assert all("Best: trial" in out for out in outputs)


def _trials_if_any(tmp_path: Path) -> list:
    import fcntl

    import sqlalchemy

    # Under the workers' own lock (modules/tune/command.py `_Claim`), so this poll never creates the storage's tables
    # while a worker does: both would, and one would fail.
    with open(tmp_path / "tune" / "study.db.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return _study(tmp_path).trials
        except (KeyError, sqlalchemy.exc.SQLAlchemyError):  # the worker has not created the study yet
            return []


@pytest.mark.slow
def test_killed_worker_trial_is_failed_and_the_other_finishes(tmp_path, tiny_model, reviews_dir):
    base = write_base_config(tmp_path, tiny_model, data={"dataset": str(reviews_dir)}, trainer={"max_epochs": 1})
    search = _search(tmp_path, {"model.learning_rate": {"type": "float", "low": 1e-3, "high": 5e-3, "log": True}})
    beat = ["--heartbeat_interval", "1", "--grace_period", "4"]
    # No epoch limit: the victim's first trial cannot finish before the kill, however fast the machine.
    victim = _worker(tmp_path, base, search, 3, *beat, "--trainer.max_epochs", "-1")
    db = tmp_path / "tune" / "study.db"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # until the victim's first trial is running
        if db.exists() and [t.state.name for t in _trials_if_any(tmp_path)] == ["RUNNING"]:
            break
        time.sleep(0.5)
    else:
        victim.kill()
        pytest.fail(f"the victim's first trial never ran: {victim.communicate()[0][-3000:]}")
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=60)
    survivor = _worker(tmp_path, base, search, 3, *beat, "--trainer.max_epochs", "1")
    output = survivor.communicate(timeout=600)[0]
    assert survivor.returncode == 0, output[-3000:]
    trials = _study(tmp_path).trials
    assert sorted(t.number for t in trials) == [0, 1, 2]
    assert trials[0].state.name == "FAIL" and trials[0].user_attrs["baseline"]  # killed: failed by the heartbeat check
    assert [t.state.name for t in trials[1:]] == ["COMPLETE", "COMPLETE"]
