"""Loggers: TensorBoard (the default), CSV and MLflow each record val_loss, and `test --ckpt_path best` finds the fit's
checkpoint with each. MLflow runs twice in a row in the same folder (Lightning #20184)."""

import json

import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from helpers import ROOT, read_metrics, run_dir, write_base_config
from modules.cli.app import cli_main

pytestmark = pytest.mark.e2e  # trains end to end: `make test-fast` skips it

FAST = ["--trainer.limit_train_batches", "5"]


def _tensorboard_val_loss(folder) -> list[float]:
    events = EventAccumulator(str(folder))
    events.Reload()
    return [event.value for event in events.Scalars("val_loss")]


def _csv_val_loss(folder) -> list[float]:
    return pd.read_csv(folder / "metrics.csv")["val_loss"].dropna().tolist()


@pytest.mark.parametrize(
    ("logger_args", "read_val_loss"),
    [
        (["--trainer.logger", "lightning.pytorch.loggers.TensorBoardLogger"], _tensorboard_val_loss),
        (["--config", str(ROOT / "configs" / "loggers" / "csv.yaml")], _csv_val_loss),
    ],
    ids=["tensorboard", "csv"],
)
def test_logger_records_val_loss_and_test_finds_the_checkpoint(
    logger_args, read_val_loss, tmp_path, tiny_model, reviews_dir
):
    base = write_base_config(tmp_path, tiny_model, data={"dataset": str(reviews_dir)})
    args = ["--config", str(base), *logger_args]  # the base config's save_dir and name carry over to the new class
    cli_main(["fit", *args, *FAST])
    val_loss = read_val_loss(run_dir(tmp_path))
    assert len(val_loss) == 2 and all(0 < v < 1 for v in val_loss)  # one value per epoch, a plausible BCE loss
    assert (run_dir(tmp_path) / "config.yaml").is_file() and (run_dir(tmp_path) / "fit_summary.json").is_file()
    cli_main(["test", *args, "--ckpt_path", "best"])
    record = read_metrics(run_dir(tmp_path) / "test_metrics.json")
    assert 0 <= record["test_acc"] <= 1


def test_mlflow_runs_twice_in_the_same_folder(tmp_path, tiny_model, reviews_dir):
    base = write_base_config(tmp_path, tiny_model, data={"dataset": str(reviews_dir)})
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    args = [
        *["--config", str(base), "--config", str(ROOT / "configs" / "loggers" / "mlflow.yaml")],
        *["--trainer.logger.init_args.tracking_uri", uri, "--trainer.default_root_dir", str(tmp_path / "mlflow")],
        *["--trainer.logger.init_args.artifact_location", str(tmp_path / "mlflow" / "artifacts")],
    ]
    first = cli_main(["fit", *args, *FAST])
    second = cli_main(["fit", *args, *FAST, "--model.learning_rate", "1e-3"])

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("hf-lightning")
    runs = {run.info.run_id: run for run in client.search_runs([experiment.experiment_id])}
    ids = [first.trainer.logger.run_id, second.trainer.logger.run_id]
    assert len(set(ids)) == 2 and set(ids) == set(runs)
    for run_id, learning_rate in zip(ids, ["0.003", "0.001"]):
        history = client.get_metric_history(run_id, "val_loss")
        assert len(history) == 2 and all(0 < m.value < 1 for m in history)
        assert runs[run_id].data.params["learning_rate"] == learning_rate  # hyperparameters as params
        assert [a.path for a in client.list_artifacts(run_id)] == ["config.yaml"]
        artifact = yaml.safe_load(open(client.download_artifacts(run_id, "config.yaml", str(tmp_path))))
        assert artifact["model"]["learning_rate"] == float(learning_rate)
        folder = tmp_path / "mlflow" / experiment.experiment_id / run_id  # checkpoints and outputs of this run
        assert (folder / "checkpoints" / "last.ckpt").is_file() and (folder / "config.yaml").is_file()
        assert (folder / "fit_summary.json").is_file()

    cli_main(["test", *args, "--ckpt_path", "best"])
    newest = tmp_path / "mlflow" / experiment.experiment_id / ids[1]
    record = read_metrics(newest / "test_metrics.json")  # the best checkpoint of the newest run, in its folder
    assert 0 <= record["test_acc"] <= 1
    test_runs = [r for r in client.search_runs([experiment.experiment_id]) if r.info.run_id not in ids]
    assert len(test_runs) == 1  # the test command is a run of its own, with its config and the test report
    artifacts = sorted(a.path for a in client.list_artifacts(test_runs[0].info.run_id))
    assert artifacts == [
        "config_test.yaml",
        "test_confusion_matrix.png",
        "test_errors.csv",
        "test_per_class.csv",
        "test_reliability.png",
    ]


@pytest.mark.parametrize("monitored", [False, True], ids=["window-mean", "monitored-every-step"])
def test_train_loss_is_the_mean_since_its_last_log(monitored, tmp_path, tiny_model, reviews_dir):
    # 7 batches per epoch, logged every 3 steps: rows at steps 3, 6, 9 and 12 (1-based). Each epoch's last batch
    # (steps 7 and 14) also ends a window, for the progress bar, though the logger writes no row there.
    base = write_base_config(tmp_path, tiny_model, data={"dataset": str(reviews_dir)})
    args = ["fit", "--config", str(base), "--trainer.limit_train_batches", "7", "--trainer.log_every_n_steps", "3"]
    args += ["--trainer.callbacks+=helpers.LossRecorder", "--trainer.callbacks.path", str(tmp_path / "losses.json")]
    if monitored:  # a callback that reads train_loss may read it at any batch: then it is each batch's own loss
        args += ["--trainer.callbacks+=EarlyStopping", "--trainer.callbacks.monitor", "train_loss"]
    cli_main(args)
    losses = json.loads((tmp_path / "losses.json").read_text())
    rows = pd.read_csv(run_dir(tmp_path) / "metrics.csv").dropna(subset=["train_loss"])
    assert rows["step"].tolist() == [2, 5, 8, 11]  # Lightning's step column counts from 0
    if monitored:
        expected = [losses[2], losses[5], losses[8], losses[11]]
    else:
        expected = [sum(w) / len(w) for w in (losses[0:3], losses[3:6], losses[7:9], losses[9:12])]
    assert rows["train_loss"].tolist() == pytest.approx(expected, rel=1e-5)
