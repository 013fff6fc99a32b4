"""Bad input fails fast with one clear message that names the problem and the fix."""

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from helpers import ROOT, run_dir, run_subprocess, write_base_config
from modules.cli.app import cli_main
from modules.errors import HFLightningError


@pytest.fixture
def csv_splits(tmp_path, review_rows):
    """train/validation/test CSV files of the learnable review data."""
    paths = {}
    for seed, (split, n) in enumerate({"train": 64, "validation": 32, "test": 32}.items()):
        paths[split] = tmp_path / f"{split}.csv"
        pd.DataFrame(review_rows(n, seed)).to_csv(paths[split], index=False)
    return paths


def _fit(tmp_path, model, *args):
    base = write_base_config(tmp_path, model, trainer={"max_epochs": 1})
    return cli_main(["fit", "--config", str(base), *args])


def _files(paths) -> str:
    return json.dumps({k: str(v) for k, v in paths.items()})


def test_offline_model_name(tmp_path, reviews_dir):
    base = write_base_config(tmp_path, "bert-base-uncased", data={"dataset": str(reviews_dir)})
    with pytest.raises(HFLightningError, match=r"--model.model_name_or_path 'bert-base-uncased'.*local folder"):
        cli_main(["fit", "--config", str(base), "--model.model_name_or_path", "bert-base-uncased"])


def test_offline_dataset_name(tmp_path, tiny_model):
    with pytest.raises(HFLightningError, match=r"--data.dataset 'someone/reviews_not_cached'.*offline.*local"):
        _fit(tmp_path, tiny_model, "--data.dataset", "someone/reviews_not_cached")


def test_missing_data_file(tmp_path, tiny_model, csv_splits):
    csv_splits["validation"] = tmp_path / "nope.csv"
    with pytest.raises(HFLightningError, match=r"data file '.*nope.csv' does not exist"):
        _fit(tmp_path, tiny_model, "--data.data_files", _files(csv_splits))


def test_missing_local_dataset_folder(tmp_path, tiny_model):
    with pytest.raises(HFLightningError, match=r"--data.dataset './no_such_folder': no such file or folder"):
        _fit(tmp_path, tiny_model, "--data.dataset", "./no_such_folder")


def test_missing_text_column_lists_columns(tmp_path, tiny_model, csv_splits):
    with pytest.raises(
        HFLightningError, match=r"no column 'review' \(set by --data.text_column\).*\['text', 'label'\]"
    ):
        _fit(tmp_path, tiny_model, "--data.data_files", _files(csv_splits), "--data.text_column", "review")


def test_missing_label_column_lists_columns(tmp_path, tiny_model, csv_splits):
    with pytest.raises(HFLightningError, match=r"no column 'sentiment' \(set by --data.label_column\)"):
        _fit(tmp_path, tiny_model, "--data.data_files", _files(csv_splits), "--data.label_column", "sentiment")


def test_empty_split(tmp_path, tiny_model, csv_splits):
    csv_splits["validation"].write_text("text,label\n")
    with pytest.raises(HFLightningError, match=r"the validation split is empty"):
        _fit(tmp_path, tiny_model, "--data.data_files", _files(csv_splits))


def test_unknown_label_in_validation(tmp_path, tiny_model, review_rows):
    paths = {}
    for split, n in {"train": 32, "validation": 16}.items():
        rows = [{**r, "label": ["negative", "positive"][r["label"]]} for r in review_rows(n)]
        paths[split] = tmp_path / f"{split}.jsonl"
        pd.DataFrame(rows).to_json(paths[split], orient="records", lines=True)
    frame = pd.read_json(paths["validation"], lines=True)
    frame.loc[5, "label"] = "neutral"
    frame.to_json(paths["validation"], orient="records", lines=True)
    with pytest.raises(
        HFLightningError, match=r"unknown label 'neutral' in line 6 of .*validation.jsonl: .*\['negative', 'positive'\]"
    ):
        _fit(tmp_path, tiny_model, "--data.data_files", _files(paths))


def test_label_out_of_range_names_the_row(tmp_path, tiny_model, reviews_dir, review_rows):
    # The ClassLabel names fix 2 classes; a raw id 7 in a CSV with --data.task single_label is out of range.
    rows = review_rows(32)
    rows[3]["label"] = 7
    paths = {"train": tmp_path / "train.csv", "validation": tmp_path / "validation.csv"}
    pd.DataFrame(review_rows(32, 1)).to_csv(paths["train"], index=False)
    pd.DataFrame(rows).to_csv(paths["validation"], index=False)
    with pytest.raises(HFLightningError, match=r"label 7 in line 5 of .*validation.csv is out of range for 2 labels"):
        _fit(tmp_path, tiny_model, "--data.data_files", _files(paths))


def test_ckpt_path_that_does_not_exist(tmp_path, tiny_model, reviews_dir):
    base = write_base_config(tmp_path, tiny_model, data={"dataset": str(reviews_dir)})
    with pytest.raises(HFLightningError, match=r"--ckpt_path .*missing.ckpt: no such file"):
        cli_main(["test", "--config", str(base), "--ckpt_path", str(tmp_path / "missing.ckpt")])
    with pytest.raises(HFLightningError, match=r"--ckpt_path best: no checkpoint found under .*Run `fit`"):
        cli_main(["test", "--config", str(base), "--ckpt_path", "best"])


def test_monitor_metric_never_logged(tmp_path, tiny_model, reviews_dir):
    base = write_base_config(tmp_path, tiny_model, data={"dataset": str(reviews_dir)})
    with pytest.raises(HFLightningError, match=r"monitors 'val_accuracy'.*\['train_loss', 'val_loss', 'val_acc'"):
        cli_main(
            [
                "fit",
                "--config",
                str(base),
                "--trainer.callbacks+=EarlyStopping",
                "--trainer.callbacks.monitor=val_accuracy",
            ]
        )


@pytest.mark.parametrize("threshold", ["0", "1.5", "-0.2"])
def test_threshold_outside_0_1_fails_before_any_data_is_read(tmp_path, tiny_model, csv_splits, threshold):
    args = ["--data.data_files", _files(csv_splits), "--model.threshold", threshold]
    with pytest.raises(HFLightningError, match=rf"--model.threshold must be in \(0, 1\).*got {float(threshold)}"):
        _fit(tmp_path, tiny_model, *args)
    assert not (tmp_path / "logs").exists()  # refused at instantiation: no run folder, nothing tokenized


@pytest.mark.e2e
def test_error_is_one_line_and_exit_status_2(tmp_path, tiny_model, reviews_dir):
    base = write_base_config(tmp_path, tiny_model, data={"dataset": str(reviews_dir)})
    result = run_subprocess(["fit", "--config", str(base), "--data.text_column", "review"], timeout=120)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: the train split has no column 'review'")


def test_unknown_config_key_and_wrong_type_fail_at_parse(tmp_path, tiny_model, reviews_dir, capsys):
    base = write_base_config(tmp_path, tiny_model, data={"dataset": str(reviews_dir)})
    typo = tmp_path / "typo.yaml"
    typo.write_text("model:\n  learnig_rate: 1.0e-3\n")
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["fit", "--config", str(base), "--config", str(typo)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "learnig_rate" in err
    assert "did you mean --model.learning_rate?" in err.splitlines()[0] and len(err.splitlines()) == 2
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["fit", "--config", str(base), "--data.batch_size", "many"])
    assert exit_info.value.code == 2 and "batch_size" in capsys.readouterr().err


def test_corrupt_checkpoint_is_one_line_error(tmp_path, tiny_model, reviews_dir):
    base = write_base_config(tmp_path, tiny_model, data={"dataset": str(reviews_dir)})
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(b"PK\x03\x04 not really a zip archive")
    with pytest.raises(HFLightningError, match=r"checkpoint .*broken.ckpt is corrupt or not a checkpoint"):
        cli_main(["test", "--config", str(base), "--ckpt_path", str(broken)])


def test_nonfinite_loss_stops_naming_the_step_or_is_skipped(tmp_path, tiny_model, reviews_dir):
    base = write_base_config(tmp_path, tiny_model, data={"dataset": str(reviews_dir)}, trainer={"max_epochs": 1})
    with pytest.raises(
        HFLightningError, match=r"non-finite training loss \((nan|inf)\) at step \d+ \(epoch 0, batch \d+\)"
    ):
        cli_main(["fit", "--config", str(base), "--model.learning_rate", "1e12", "--model.warmup_ratio", "0"])
    cli = cli_main(
        ["fit", "--config", str(base), "--model.learning_rate", "1e12", "--model.warmup_ratio", "0"]
        + ["--model.nonfinite_loss", "skip"]
    )
    # The first step (finite loss) blows the weights up; every later loss is NaN and its update is dropped.
    assert cli.trainer.current_epoch == 1
    assert all(torch.isfinite(p).all() for p in cli.model.parameters())


def test_tokenizer_bigger_than_the_model_vocabulary(tmp_path, tiny_model, reviews_dir):
    # The model's config says 20 embeddings; the tokenizer makes ids up to ~100. Caught on the tokenized data,
    # before the model is loaded (its weights would not even fit this config).
    folder = tmp_path / "small-vocab"
    folder.mkdir()
    for path in tiny_model.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "vocab_size": 20}))
    base = write_base_config(tmp_path, folder, data={"dataset": str(reviews_dir)})
    with pytest.raises(HFLightningError, match=r"token id \d+ in the train split.*only 20 token embeddings"):
        cli_main(["fit", "--config", str(base)])


def test_all_empty_texts(tmp_path, tiny_model, review_rows):
    paths = {}
    for seed, (split, n) in enumerate({"train": 32, "validation": 16}.items()):
        rows = review_rows(n, seed)
        if split == "train":
            rows = [{**row, "text": ""} for row in rows]
        paths[split] = tmp_path / f"{split}.jsonl"
        pd.DataFrame(rows).to_json(paths[split], orient="records", lines=True)
    with pytest.raises(HFLightningError, match=r"train split"):
        _fit(tmp_path, tiny_model, "--data.data_files", _files(paths))


def test_unreadable_file_names_the_file(tmp_path, tiny_model, csv_splits):
    csv_splits["train"].write_bytes(bytes(range(256)) * 40)  # not text: a binary file saved as .csv
    with pytest.raises(HFLightningError, match=r"could not parse .*train.csv"):
        _fit(tmp_path, tiny_model, "--data.data_files", _files(csv_splits))


@pytest.mark.e2e
def test_out_of_memory_prints_the_hint_and_keeps_the_last_checkpoint(tmp_path, tiny_model, reviews_dir):
    # helpers.OutOfMemoryAtStep raises torch.OutOfMemoryError in the second epoch, after epoch 0's checkpoints.
    base = write_base_config(tmp_path, tiny_model, data={"dataset": str(reviews_dir)})
    args = ["fit", "--config", str(base), "--trainer.callbacks+=helpers.OutOfMemoryAtStep"]
    result = run_subprocess(args, env={"PYTHONPATH": str(ROOT / "tests")})
    assert result.returncode == 1
    assert "error: out of memory" in result.stderr and "--trainer.accumulate_grad_batches" in result.stderr
    last = run_dir(tmp_path) / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 25  # epoch 0's, whole


def test_nan_val_loss_never_becomes_the_best_checkpoint(tmp_path, tiny_model, reviews_dir):
    base = write_base_config(tmp_path, tiny_model, data={"dataset": str(reviews_dir)}, trainer={"max_epochs": 2})
    cli = cli_main(["fit", "--config", str(base), "--trainer.callbacks+=helpers.NanValLossAtEpoch"])
    callback = cli.trainer.checkpoint_callback
    assert Path(callback.best_model_path).name == "epoch=0-step=25.ckpt"
    assert torch.isfinite(callback.best_model_score)
    assert torch.load(run_dir(tmp_path) / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 1


def test_data_files_are_relative_to_the_working_directory(tmp_path, tiny_model, reviews_dir, csv_splits, monkeypatch):
    # With a dataset folder in the config, data_files typed by the user are read from where they typed them.
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    relative = json.dumps({split: f"../{path.name}" for split, path in csv_splits.items()})
    _fit(tmp_path, tiny_model, "--data.dataset", str(reviews_dir), "--data.data_files", relative)
    assert (run_dir(tmp_path) / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.parametrize("contents", [[], ["notes.md"]])
def test_dataset_folder_without_data_files_is_one_line(tmp_path, tiny_model, contents):
    folder = tmp_path / "mydata"
    folder.mkdir()
    for name in contents:
        (folder / name).write_text("notes")
    with pytest.raises(HFLightningError, match=r"'.*mydata': the folder holds no data files .* --data.data_files"):
        _fit(tmp_path, tiny_model, "--data.dataset", str(folder))


def test_builder_that_does_not_read_the_files(tmp_path, tiny_model, csv_splits):
    with pytest.raises(HFLightningError, match=r"--data.dataset json does not read files ending in \['.csv'\].*csv"):
        _fit(tmp_path, tiny_model, "--data.dataset", "json", "--data.data_files", _files(csv_splits))


def test_unknown_file_extension(tmp_path, tiny_model):
    (tmp_path / "train.xlsx").write_text("x")
    with pytest.raises(HFLightningError, match=r"cannot tell the format of data files with extensions \['.xlsx'\]"):
        _fit(tmp_path, tiny_model, "--data.data_files", str(tmp_path / "train.xlsx"))


@pytest.mark.parametrize("flag", ["--model.learnin_rate", "--model.learning_rat"])
def test_unknown_or_shortened_flag_suggests_the_key(tmp_path, tiny_model, reviews_dir, capsys, flag):
    # A shortened flag is refused, not silently taken as --model.learning_rate.
    base = write_base_config(tmp_path, tiny_model, data={"dataset": str(reviews_dir)})
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["fit", "--config", str(base), flag, "0.01"])
    err = capsys.readouterr().err.splitlines()
    assert exit_info.value.code == 2 and len(err) == 2
    assert err[0] == f"error: unrecognized arguments: {flag} 0.01 (did you mean --model.learning_rate?)"
