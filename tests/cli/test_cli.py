"""The CLI as users run it: print_config, shipped configs, fit then test on the best checkpoint, DDP."""

import json
import re
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from transformers import AutoModel

from helpers import ROOT, epoch_metrics, read_metrics, run_dir, run_subprocess, write_base_config
from modules.cli.app import cli_main


@pytest.mark.e2e
def test_print_config_round_trip(tmp_path, tiny_model, reviews_dir, capsys):
    base = write_base_config(tmp_path, tiny_model, data={"dataset": str(reviews_dir)})
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["fit", "--config", str(base), "--print_config"])
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    template = yaml.safe_load(printed)
    # A complete template: every section and the arguments users set most.
    assert {"trainer", "model", "data", "seed_everything", "ckpt_path"} <= set(template)
    assert template["model"]["learning_rate"] == 3e-3 and template["data"]["text_column"] == "text"
    assert "model_name_or_path" not in template["data"]  # linked from --model.model_name_or_path: one home
    config = tmp_path / "printed.yaml"
    config.write_text(printed)
    cli_main(["fit", "--config", str(config), "--trainer.max_epochs", "1"])
    assert (run_dir(tmp_path) / "checkpoints" / "last.ckpt").is_file()
    assert yaml.safe_load((run_dir(tmp_path) / "config.yaml").read_text())["model"]["learning_rate"] == 3e-3


@pytest.mark.e2e
def test_printed_template_runs_once_data_is_filled_in(tmp_path, tiny_model, reviews_dir, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        cli_main(["fit", "--print_config"])
    template = yaml.safe_load(capsys.readouterr().out)
    # Not null: a run folder and the best-by-val_loss and last checkpoints, as in the shipped recipes.
    assert template["trainer"]["logger"]["class_path"].endswith("TensorBoardLogger")
    assert template["trainer"]["callbacks"][0]["init_args"]["monitor"] == "val_loss"
    template["model"]["model_name_or_path"] = str(tiny_model)
    template["data"]["dataset"] = str(reviews_dir)
    template["trainer"].update({"max_epochs": 1, "accelerator": "cpu", "devices": 1, "enable_progress_bar": False})
    (tmp_path / "my.yaml").write_text(yaml.safe_dump(template))
    cli_main(["fit", "--config", "my.yaml"])
    # The run is named after its config (the template leaves the logger's name at its default).
    checkpoints = tmp_path / "logs" / "my" / "version_0" / "checkpoints"
    assert (checkpoints / "last.ckpt").is_file()
    assert len(list(checkpoints.glob("epoch=0-*.ckpt"))) == 1


def test_runs_of_different_data_get_different_names():
    from modules.runs.paths import run_name

    assert run_name(["configs/own_data.yaml", "extra/cpu.yaml"], None, None) == "cpu"
    assert run_name([], "demo_data/reviews/", None) == "reviews"
    assert run_name([], None, {"train": "mydata/train.csv", "test": "mydata/test.csv"}) == "mydata"
    assert run_name([], None, ["train.csv"]) == "train"
    assert run_name([], None, {"test": "other/test.csv"}) == "other"
    assert run_name([], None, None) == "lightning_logs"


FIT_CONFIGS = sorted(
    str(p.relative_to(ROOT / "configs")) for p in ROOT.glob("configs/**/*.yaml") if "search" not in p.parts
)


@pytest.mark.parametrize("config", FIT_CONFIGS)
def test_shipped_config_parses(config, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["fit", "--config", str(ROOT / "configs" / config), "--print_config"])
    assert exit_info.value.code == 0, capsys.readouterr().err
    assert yaml.safe_load(capsys.readouterr().out)["model"]["model_name_or_path"]


@pytest.mark.e2e
def test_shipped_config_stopped_mid_epoch_by_max_steps(tmp_path, tiny_model, reviews_dir):
    # bert.yaml's EarlyStopping monitors val_loss; a smoke run that max_steps ends before the first validation must
    # finish and keep its last checkpoint, not fail at the epoch's end for want of val_loss.
    args = ["fit", "--config", str(ROOT / "configs" / "bert.yaml"), "--model.model_name_or_path", str(tiny_model)]
    args += ["--data.dataset", str(reviews_dir), "--trainer.max_steps", "2", "--trainer.accelerator", "cpu"]
    cli_main(args + ["--trainer.logger.init_args.save_dir", str(tmp_path), "--trainer.enable_progress_bar", "false"])
    assert (tmp_path / "bert" / "version_0" / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.e2e
def test_fit_then_test_best_checkpoint_in_separate_commands(tmp_path, tiny_model, reviews_dir):
    base = write_base_config(tmp_path, tiny_model, data={"dataset": str(reviews_dir)}, trainer={"max_epochs": 3})
    cli_main(["fit", "--config", str(base)])
    val_loss = epoch_metrics(tmp_path, "val_loss")
    assert val_loss[-1] < val_loss[0] < 0.75  # loss falls on learnable data
    assert (run_dir(tmp_path) / "config.yaml").is_file()
    # A later, separate command finds this run's best checkpoint and logs into its folder.
    cli_main(["test", "--config", str(base), "--ckpt_path", "best"])
    metrics = read_metrics(run_dir(tmp_path) / "test_metrics.json")
    assert metrics["test_acc"] > 0.8 and metrics["test_f1"] > 0.8  # chance is 0.5
    assert {"test_loss", "test_precision_neg", "test_recall_pos"} <= set(metrics)
    best = Path(json.loads((run_dir(tmp_path) / "test_metrics.json").read_text())["ckpt_path"])
    assert best.parent == run_dir(tmp_path) / "checkpoints" and best.name != "last.ckpt"
    assert len(epoch_metrics(tmp_path, "val_loss")) == len(val_loss)  # the fit's metrics.csv is untouched
    # Re-running fit in the same folder does not crash on the saved config.
    cli_main(["fit", "--config", str(base), "--trainer.max_epochs", "1"])
    assert (run_dir(tmp_path, 2) / "config.yaml").is_file()


@pytest.mark.e2e
def test_model_without_token_type_ids(tmp_path, tiny_distilbert, reviews_dir):
    base = write_base_config(tmp_path, tiny_distilbert, data={"dataset": str(reviews_dir)}, trainer={"max_epochs": 4})
    cli = cli_main(["fit", "--config", str(base)])
    assert cli.model._input_names == ("input_ids", "attention_mask")
    assert "token_type_ids" in cli.datamodule.datasets["train"].column_names  # the tokenizer makes them; dropped
    assert epoch_metrics(tmp_path, "val_acc")[-1] > 0.6


@pytest.mark.e2e
def test_labels_reach_the_model_config(tmp_path, tiny_model, reviews_dir):
    base = write_base_config(tmp_path, tiny_model, data={"dataset": str(reviews_dir)}, trainer={"max_epochs": 1})
    cli = cli_main(["fit", "--config", str(base)])
    config = cli.model.model.config
    assert config.id2label == {0: "neg", 1: "pos"} and config.label2id == {"neg": 0, "pos": 1}
    assert config.num_labels == 2 and config.problem_type == "single_label_classification"


@pytest.mark.slow
def test_ddp_two_cpu_processes(tmp_path, tiny_model, reviews_dir):
    data, trainer = {"dataset": str(reviews_dir), "batch_size": 8}, {"max_epochs": 3}
    base = write_base_config(tmp_path, tiny_model, data=data, trainer=trainer, model={"learning_rate": 1e-2})
    args = ["--config", str(base), "--trainer.strategy", "ddp", "--trainer.devices", "2"]
    fit = run_subprocess(["fit", *args], timeout=300)
    assert fit.returncode == 0, fit.stderr[-3000:]
    # One run: one logger version, one config, one checkpoint set.
    assert [p.name for p in (tmp_path / "logs" / "run").iterdir()] == ["version_0"]
    assert sorted(p.name for p in (run_dir(tmp_path) / "checkpoints").iterdir())[-1] == "last.ckpt"
    assert len(list((run_dir(tmp_path) / "checkpoints").iterdir())) == 2
    assert (run_dir(tmp_path) / "config.yaml").is_file()
    test = run_subprocess(["test", *args, "--ckpt_path", "best"], timeout=300)
    assert test.returncode == 0, test.stderr[-3000:]
    assert read_metrics(run_dir(tmp_path) / "test_metrics.json")["test_acc"] > 0.8
    supports = pd.read_csv(run_dir(tmp_path) / "test_per_class.csv")["support"]
    assert supports.sum() == 100  # the confusion matrix counts each test row once across both processes


@pytest.mark.e2e
def test_environment_variables_set_options(tmp_path, tiny_model, reviews_dir, monkeypatch):
    # Variables override code defaults; config files and flags override variables.
    base = write_base_config(tmp_path, tiny_model, data={"dataset": str(reviews_dir)})
    monkeypatch.setenv("PL_FIT__TRAINER__LIMIT_TRAIN_BATCHES", "3")
    monkeypatch.setenv("PL_FIT__MODEL__WEIGHT_DECAY", "0.5")
    cli = cli_main(["fit", "--config", str(base)])
    assert cli.trainer.global_step == 6 and cli.model.hparams.weight_decay == 0.5  # 3 batches x 2 epochs


@pytest.mark.e2e
def test_gradient_clipping_with_fused_adamw(tmp_path, tiny_model, reviews_dir):
    # Adam is scale-invariant except for eps: with the gradient norm clipped to 1e-12 every update is ~0, while an
    # unclipped epoch at lr 3e-3 moves weights by ~1e-2.
    base = write_base_config(tmp_path, tiny_model, data={"dataset": str(reviews_dir)}, trainer={"max_epochs": 1})
    cli = cli_main(["fit", "--config", str(base), "--trainer.gradient_clip_val", "1e-12"])
    assert cli.model.optimizers().optimizer.defaults["fused"]
    trained = cli.model.model.bert.embeddings.word_embeddings.weight
    pretrained = AutoModel.from_pretrained(tiny_model).embeddings.word_embeddings.weight
    assert (trained - pretrained).abs().max() < 1e-4


# bf16-true keeps weights and Adam's moments in bf16, and the multiply-first order rounds the clipped gradients to bf16
# once more: there the two runs agree as a whole (relative distance of all weights), not weight by weight.
@pytest.mark.e2e
@pytest.mark.parametrize("precision", ["32-true", "bf16-true"])
def test_clipping_inside_the_fused_cpu_step_equals_clipping_first(
    precision, tmp_path, tiny_model_no_dropout, reviews_dir, monkeypatch
):
    # On CPU the clip factor rides into fused AdamW as its grad_scale; elsewhere the gradients are multiplied first,
    # as clip_grad_norm_ does. Both must train the same weights, and unlike no clipping.
    base = write_base_config(tmp_path, tiny_model_no_dropout, data={"dataset": str(reviews_dir)})
    args = ["fit", "--config", str(base), "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "4"]
    args += ["--trainer.precision", precision]
    calls = []
    get_total_norm = torch.nn.utils.get_total_norm
    monkeypatch.setattr(torch.nn.utils, "get_total_norm", lambda *a, **k: calls.append(1) or get_total_norm(*a, **k))
    inside = cli_main([*args, "--trainer.gradient_clip_val", "0.05"])
    assert len(calls) == 4 and inside.model.optimizers().optimizer.grad_scale is None  # set for each step only
    monkeypatch.setattr("modules.model.optimization._clip_in_fused_step", lambda *args: False)
    first = cli_main([*args, "--trainer.gradient_clip_val", "0.05"])
    unclipped = cli_main(args)
    weights = [run.model.model.state_dict() for run in (inside, first, unclipped)]
    if precision == "32-true":
        for name in weights[0]:
            torch.testing.assert_close(weights[0][name], weights[1][name], rtol=1e-5, atol=1e-7)
    flat = [torch.cat([w.float().flatten() for w in run.values()]) for run in weights]
    assert (flat[0] - flat[1]).norm() < 0.1 * (flat[0] - flat[2]).norm()  # far closer than to the unclipped run


def test_lightning_optimizer_flags_are_refused(tmp_path, tiny_model, reviews_dir, capsys):
    # They would replace the model's AdamW groups, warmup schedule and clipping path: refused at parse time.
    base = write_base_config(tmp_path, tiny_model, data={"dataset": str(reviews_dir)})
    for flags in (["--optimizer", "SGD"], ["--lr_scheduler", "StepLR"]):
        with pytest.raises(SystemExit) as exit_info:
            cli_main(["fit", "--config", str(base), *flags])
        error = capsys.readouterr().err.strip().splitlines()
        assert exit_info.value.code == 2
        assert error[0] == f"error: unrecognized arguments: {' '.join(flags)}" and len(error) == 2
    assert not (tmp_path / "logs").exists()  # nothing ran


def _documented_commands() -> list[tuple[str, str]]:
    """Every `python main.py ...` command in README.md, docs/ and the configs' opening comments, as (file, line)."""
    found = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted(ROOT.glob("configs/**/*.yaml"))]:
        for line in path.read_text().splitlines():
            if "main.py " in line and "--config" in line:
                found.append((str(path.relative_to(ROOT)), line))
    return found


@pytest.mark.parametrize(("source", "line"), _documented_commands())
def test_documented_config_paths_exist(source, line):
    # Every `--config` path the docs and configs mention is a shipped file (a renamed config breaks no command), or a
    # file a run writes (a run folder's config.yaml, a study's best.yaml), named as such.
    paths = re.findall(r"--config[ =]([\w./<>-]+\.yaml)", line)
    assert paths, f"{source}: {line}"
    for path in paths:
        if Path(path).name in ("config.yaml", "best.yaml") and not path.startswith("configs/"):
            continue  # written by fit / tune
        assert (ROOT / path).is_file(), f"{source}: {path} does not exist"


def test_help_opens_with_what_the_tool_does_and_examples(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["--help"])
    assert exit_info.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2].startswith("Fine-tune a Hugging Face transformer for text classification")
    examples = [line for line in lines[:13] if line.startswith("  python main.py ")]
    assert [line.split()[2] for line in examples] == ["check", "fit", "test", "predict", "serve"]


@pytest.mark.e2e
def test_test_on_a_file_takes_labels_from_the_checkpoint(tmp_path, tiny_model, review_rows, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the test command's own logs/ folder
    names = ["negative", "positive"]
    files = {}
    for seed, (split, n) in enumerate({"train": 64, "validation": 32, "test": 30}.items()):
        files[split] = tmp_path / f"{split}.csv"
        rows = [{"review": r["text"], "sentiment": names[r["label"]]} for r in review_rows(n, seed)]
        pd.DataFrame(rows).to_csv(files[split], index=False)
    own_columns = ["--data.text_column", "review", "--data.label_column", "sentiment"]
    base = write_base_config(tmp_path, tiny_model, trainer={"max_epochs": 1})
    train_files = json.dumps({"train": str(files["train"]), "validation": str(files["validation"])})
    cli_main(["fit", "--config", str(base), "--data.data_files", train_files, *own_columns])
    checkpoint = run_dir(tmp_path) / "checkpoints" / "last.ckpt"
    # No config, no train file, no model name: the checkpoint gives model, task and label names.
    test_file = json.dumps({"test": str(files["test"])})
    cli_main(["test", "--ckpt_path", str(checkpoint), "--data.data_files", test_file, *own_columns])
    per_class = pd.read_csv(run_dir(tmp_path) / "test_per_class.csv")
    assert list(per_class["label"]) == names
    assert per_class["support"].sum() == 30
    assert 0.0 <= read_metrics(run_dir(tmp_path) / "test_metrics.json")["test_acc"] <= 1.0


def test_subcommand_help_explains_ckpt_path_with_whole_titles(capsys):
    from modules.cli.commands import summary
    from modules.data import HFDataModule
    from modules.model import TransformerModule
    from modules.outputs.export import HFExport
    from modules.outputs.predictions import PredictionWriter
    from modules.outputs.report import TestReport

    with pytest.raises(SystemExit):
        cli_main(["test", "--help"])
    out = capsys.readouterr().out
    ckpt_help = " ".join(out.split("--ckpt_path CKPT_PATH\n", 1)[1].split("ARG:", 1)[0].split())
    assert "`best` / `last`" in ckpt_help and "hpc" not in ckpt_help and "registry" not in ckpt_help
    assert summary("test") in out
    titles = [line for line in out.splitlines() if re.fullmatch(r"\S.*:", line)]
    for cls in (TransformerModule, HFDataModule, HFExport, PredictionWriter, TestReport):
        first = cls.__doc__.splitlines()[0]
        assert first.endswith(".") and f"{first[:-1]}:" in titles  # a whole sentence, shown whole
    assert not [title for title in titles if "<class" in title or "separated from fit" in title]
