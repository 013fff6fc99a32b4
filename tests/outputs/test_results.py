"""After fit: best/last checkpoints in later commands, prediction files, Hugging Face export and model card."""

import json
import os

import pandas as pd
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

from helpers import read_metrics, run_dir, run_subprocess, write_base_config
from modules.cli.app import cli_main
from modules.errors import HFLightningError
from modules.model import TransformerModule
from modules.outputs import predictions
from modules.outputs.export import main as export_main

pytestmark = pytest.mark.e2e  # trains end to end: `make test-fast` skips it


@pytest.fixture
def fitted(tmp_path, tiny_model, reviews_dir):
    """A finished fit on the review data, with the Hugging Face export on."""
    base = write_base_config(
        tmp_path, tiny_model, data={"dataset": str(reviews_dir)}, trainer={"max_epochs": 3}, export={"enabled": True}
    )
    cli_main(["fit", "--config", str(base)])
    return base


def test_predict_best_writes_one_row_per_input_in_order(tmp_path, fitted, reviews_dir, capsys):
    cli_main(["predict", "--config", str(fitted), "--ckpt_path", "best"])
    first = run_dir(tmp_path) / "predictions.jsonl"
    rows = [json.loads(line) for line in first.read_text().splitlines()]
    # A second predict keeps the first one's file; a file named with --predictions.output_path is replaced, said so.
    cli_main(["predict", "--config", str(fitted), "--ckpt_path", "best"])
    assert (run_dir(tmp_path) / "predictions-1.jsonl").read_text() == first.read_text()
    cli_main(["predict", "--config", str(fitted), "--ckpt_path", "best", "--predictions.output_path", str(first)])
    assert f"Overwriting {first} (--predictions.output_path names an existing file)" in capsys.readouterr().out
    test = pd.read_parquet(reviews_dir / "data" / "test-00000-of-00001.parquet")
    assert len(rows) == len(test)
    assert [r["text"] for r in rows] == test["text"].tolist()  # input order, not length order
    assert {r["prediction"] for r in rows} <= {"neg", "pos"} and set(rows[0]["probabilities"]) == {"neg", "pos"}
    accuracy = sum(r["prediction"] == ["neg", "pos"][label] for r, label in zip(rows, test["label"])) / len(rows)
    assert accuracy > 0.8


def test_predict_on_a_text_file_to_csv(tmp_path, fitted):
    inputs = tmp_path / "inputs.txt"
    inputs.write_text("a wonderful film\nthe plot was dull and tedious\n\nbrilliant acting\n")
    output = tmp_path / "out.csv"
    cli_main(
        ["predict", "--config", str(fitted), "--ckpt_path", "last", "--data.predict_file", str(inputs)]
        + ["--predictions.output_path", str(output)]
    )
    frame = pd.read_csv(output, keep_default_na=False)
    # The blank line is skipped (with a count), not predicted as "".
    assert frame["text"].tolist() == ["a wonderful film", "the plot was dull and tedious", "brilliant acting"]
    assert frame["prediction"].tolist() == ["pos", "neg", "pos"]
    assert {"prob_neg", "prob_pos"} <= set(frame.columns)


def test_predict_equals_the_exported_model_on_each_row_alone(tmp_path, fitted, monkeypatch):
    # Length-sorted batches of 2 (the three one-word rows make a batch without padding, which runs without a mask),
    # fused projections, rows written 3 at a time: the same numbers as the exported model on each row by itself.
    monkeypatch.setattr(predictions, "CHUNK_ROWS", 3)
    texts = ["fine", "a wonderful and moving story, well told", "dull", "the plot was dull and tedious", "tedious",
             "brilliant acting", "a wonderful film"]  # fmt: skip
    inputs, output = tmp_path / "new.csv", tmp_path / "out.csv"
    pd.DataFrame({"text": texts}).to_csv(inputs, index=False)
    cli_main(["predict", "--config", str(fitted), "--ckpt_path", "best", "--data.predict_file", str(inputs),
              "--data.eval_batch_size", "2", "--predictions.output_path", str(output)])  # fmt: skip
    frame = pd.read_csv(output)
    assert frame["text"].tolist() == texts
    folder = run_dir(tmp_path) / "hf_model"
    model, tokenizer = (
        AutoModelForSequenceClassification.from_pretrained(folder).eval(),
        AutoTokenizer.from_pretrained(folder),
    )
    for text, (_, row) in zip(texts, frame.iterrows()):
        with torch.inference_mode():
            alone = torch.softmax(model(**tokenizer(text, return_tensors="pt")).logits[0], -1).tolist()
        assert [row["prob_neg"], row["prob_pos"]] == pytest.approx(alone, abs=1e-5)
        assert row["prediction"] == ["neg", "pos"][alone.index(max(alone))]


def test_predict_from_the_checkpoint_alone_keeps_input_columns(tmp_path, fitted, monkeypatch, capsys):
    # No config and no dataset: model, tokenizer and labels come from the checkpoint; the file has only ids and text.
    checkpoint = str(run_dir(tmp_path) / "checkpoints" / "last.ckpt")
    inputs = tmp_path / "new.csv"
    pd.DataFrame({"id": ["a", "b", "c"], "text": ["a wonderful film", " ", "the plot was dull and tedious"]}).to_csv(
        inputs, index=False
    )
    monkeypatch.chdir(tmp_path)
    args = ["predict", "--ckpt_path", checkpoint, "--data.predict_file", str(inputs), "--trainer.accelerator", "cpu"]
    cli_main(args + ["--predictions.output_path", "out.csv", "--trainer.logger", "false"])
    assert "Skipped 1 of 3 predict inputs with an empty text" in capsys.readouterr().out
    frame = pd.read_csv(tmp_path / "out.csv")
    assert frame["id"].tolist() == ["a", "c"] and frame["prediction"].tolist() == ["pos", "neg"]
    with pytest.raises(HFLightningError, match=r"line 3 of .*new.csv has an empty text \(1 such rows\)"):
        cli_main(args + ["--data.drop_invalid_rows", "false", "--trainer.logger", "false"])


def test_export_loads_in_pipeline_with_names_and_same_probabilities(tmp_path, fitted, reviews_dir):
    export = run_dir(tmp_path) / "hf_model"
    config = json.loads((export / "config.json").read_text())
    assert config["id2label"] == {"0": "neg", "1": "pos"} and config["problem_type"] == "single_label_classification"
    assert (export / "model.safetensors").is_file() and (export / "tokenizer.json").is_file()
    card = (export / "README.md").read_text()
    assert "## Metrics" in card and "val_acc" in card and "from transformers import pipeline" in card
    assert f"- Data: `{reviews_dir}`" in card
    # The usage example is the data's own first validation text, not a stock sentence.
    validation = pd.read_parquet(reviews_dir / "data" / "validation-00000-of-00001.parquet")
    assert f"classifier({validation['text'][0]!r})" in card
    umask = os.umask(0)
    os.umask(umask)
    assert {p.stat().st_mode & 0o777 for p in export.iterdir()} == {0o666 & ~umask}  # shared as the user's files

    texts = ["a wonderful and charming film", "dull boring script", "the cast was superb but the ending bland"]
    classifier = pipeline("text-classification", model=str(export), top_k=None)
    outputs = classifier(texts)
    assert {o["label"] for o in outputs[0]} == {"neg", "pos"}
    from_pipeline = torch.tensor(
        [[{o["label"]: o["score"] for o in out}[n] for n in ("neg", "pos")] for out in outputs]
    )

    best = json.loads((run_dir(tmp_path) / "fit_summary.json").read_text())["best_checkpoint"]
    module = TransformerModule.load_from_checkpoint(best).eval()  # standalone: no data, no download
    encoded = classifier.tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        from_module = torch.softmax(module.calibrated(module(dict(encoded))), dim=-1)
    assert module.decisions.calibration.method == "temperature"  # folded into the export's head
    assert torch.allclose(from_pipeline, from_module, atol=1e-5)


def test_export_after_the_fact_and_card_gains_test_metrics(tmp_path, fitted):
    cli_main(["test", "--config", str(fitted), "--ckpt_path", "best"])
    card = (run_dir(tmp_path) / "hf_model" / "README.md").read_text()
    assert "| test | test_acc |" in card
    last = run_dir(tmp_path) / "checkpoints" / "last.ckpt"
    export_main([str(last), str(tmp_path / "exported")])
    config = json.loads((tmp_path / "exported" / "config.json").read_text())
    assert config["label2id"] == {"neg": 0, "pos": 1}
    assert (tmp_path / "exported" / "README.md").is_file()


def test_fit_resumes_from_last_in_a_new_command(tmp_path, fitted):
    cli_main(["fit", "--config", str(fitted), "--ckpt_path", "last", "--trainer.max_epochs", "4"])
    epochs = pd.read_csv(run_dir(tmp_path, 1) / "metrics.csv")["epoch"]
    assert epochs.min() == 3 and epochs.max() == 3  # trained only the 4th epoch: continued, did not start over


def test_validate_writes_metrics_json(tmp_path, fitted):
    cli_main(["validate", "--config", str(fitted), "--ckpt_path", "best"])
    metrics = read_metrics(run_dir(tmp_path) / "validate_metrics.json")
    assert metrics["val_acc"] > 0.8 and "val_loss" in metrics


def test_a_value_the_command_is_given_wins_over_the_checkpoints(tmp_path, fitted):
    # Lightning puts a checkpoint's hyperparameters over the command's `--model.*` flags; here they are defaults.
    checkpoint = torch.load(run_dir(tmp_path) / "checkpoints" / "last.ckpt", weights_only=True)
    checkpoint["hyper_parameters"]["threshold"] = 0.3
    torch.save(checkpoint, tmp_path / "at_0.3.ckpt")
    args = ["validate", "--config", str(fitted), "--ckpt_path", str(tmp_path / "at_0.3.ckpt")]  # logs in tmp_path
    for given, used in (([], 0.3), (["--model.threshold", "0.15"], 0.15), (["--model.threshold", "0.5"], 0.5)):
        cli = cli_main(args + given)
        assert cli.model.hparams.threshold == used
        assert cli.config.validate.ckpt_path == str(tmp_path / "at_0.3.ckpt")


@pytest.mark.slow
def test_ddp_predict_writes_each_input_once(tmp_path, fitted, reviews_dir):
    args = ["--config", str(fitted), "--trainer.strategy", "ddp", "--trainer.devices", "2", "--ckpt_path", "best"]
    result = run_subprocess(["predict", *args, "--data.eval_batch_size", "7"], timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in (run_dir(tmp_path) / "predictions.jsonl").read_text().splitlines()]
    test = pd.read_parquet(reviews_dir / "data" / "test-00000-of-00001.parquet")
    assert [r["text"] for r in rows] == test["text"].tolist()
