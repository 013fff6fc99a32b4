"""LoRA (peft): only the adapters and the head train and are saved; later commands, standalone reloads, resume and
the merged Hugging Face export all see the model that trained."""

import json
import re

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from transformers import pipeline

from helpers import epoch_metrics, read_metrics, run_dir, write_base_config
from modules.cli.app import cli_main
from modules.errors import HFLightningError
from modules.model import TransformerModule
from modules.model.lora import parameter_counts

pytestmark = pytest.mark.e2e  # trains end to end: `make test-fast` skips it

R = 8
LORA = ["--model.lora_r", str(R), "--model.lora_alpha", "16", "--model.lora_dropout", "0.1"]
TRAINED_KEY = re.compile(r"\.lora_[AB]\.default\.weight$|\.modules_to_save\.default\.(weight|bias)$")


def _config(model_dir) -> dict:
    return json.loads((model_dir / "config.json").read_text())


def expected_trainable(model_dir, num_labels: int = 2) -> int:
    """Adapter + head parameters of the tiny body, counted from its config rather than from the model."""
    config = _config(model_dir)
    hidden, layers = config["hidden_size"], config["num_hidden_layers"]
    adapters = layers * 2 * (R * hidden + hidden * R)  # query and value: A is r x in, B is out x r
    pooler = hidden * hidden + hidden  # not in the body's checkpoint: new, so it trains with the classifier
    classifier = hidden * num_labels + num_labels
    return adapters + pooler + classifier


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, tiny_body, reviews_dir):
    """A LoRA fit of the tiny body (3 epochs, export on), then `test` of its best checkpoint in a separate command."""
    tmp_path = tmp_path_factory.mktemp("lora")
    base = write_base_config(
        tmp_path, tiny_body, data={"dataset": str(reviews_dir)}, trainer={"max_epochs": 3}, export={"enabled": True}
    )
    args = ["--config", str(base), *LORA, "--model.learning_rate", "1e-2"]
    cli_main(["fit", *args])
    cli_main(["test", *args, "--ckpt_path", "best"])
    return tmp_path, args


def _best(tmp_path):
    return json.loads((run_dir(tmp_path) / "fit_summary.json").read_text())["best_checkpoint"]


def test_lora_trains_and_saves_only_adapters_and_head(lora_run, tiny_body):
    tmp_path, _ = lora_run
    expected = expected_trainable(tiny_body)
    assert expected == 3170  # 2,048 adapter + 1,056 pooler + 66 classifier parameters
    summary = json.loads((run_dir(tmp_path) / "fit_summary.json").read_text())
    assert summary["trainable_parameters"] == expected and summary["parameters"] > 8 * expected

    checkpoint = torch.load(_best(tmp_path), weights_only=True)
    keys = list(checkpoint["state_dict"])
    assert keys and all(TRAINED_KEY.search(k) for k in keys), keys
    assert sum(v.numel() for v in checkpoint["state_dict"].values()) == expected
    assert any(".classifier.modules_to_save." in k for k in keys)
    assert any(".pooler.dense.modules_to_save." in k for k in keys)
    assert checkpoint["hyper_parameters"]["lora_target_modules"] == ["query", "value"]  # peft's BERT default

    val_loss = epoch_metrics(tmp_path, "val_loss")
    assert val_loss[-1] < val_loss[0]
    metrics = read_metrics(run_dir(tmp_path) / "test_metrics.json")
    assert metrics["test_acc"] > 0.9 and metrics["test_f1"] > 0.9  # the frozen body alone gives chance (0.5)


def test_lora_export_is_merged_and_matches_the_module(lora_run, tiny_body, capsys):
    tmp_path, _ = lora_run
    export = run_dir(tmp_path) / "hf_model"
    assert not (export / "adapter_config.json").exists()  # a plain model, not an adapter
    weights = load_file(export / "model.safetensors")
    assert not [k for k in weights if "lora" in k or "modules_to_save" in k or "original_module" in k]
    query = "bert.encoder.layer.0.attention.self.query.weight"
    base = load_file(tiny_body / "model.safetensors")
    base_query = base.get(query, base.get(query.removeprefix("bert.")))
    assert (weights[query] - base_query).abs().max() > 1e-3  # the adapters are folded into the base weights

    texts = ["a wonderful and charming film", "dull boring script", "the cast was superb but the ending bland"]
    classifier = pipeline("text-classification", model=str(export), top_k=None)
    outputs = classifier(texts)
    from_pipeline = torch.tensor(
        [[{o["label"]: o["score"] for o in out}[n] for n in ("neg", "pos")] for out in outputs]
    )
    module = TransformerModule.load_from_checkpoint(_best(tmp_path)).eval()  # base from model_name_or_path
    assert f"LoRA: {expected_trainable(tiny_body):,} trainable of " in capsys.readouterr().out
    encoded = classifier.tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        from_module = torch.softmax(module.calibrated(module(dict(encoded))), dim=-1)  # the export folds it in
    assert torch.allclose(from_pipeline, from_module, atol=1e-5)
    assert from_module.argmax(-1).tolist()[:2] == [1, 0]  # pos, neg: it learned


def test_lora_checkpoint_missing_an_adapter_is_an_error(lora_run, tmp_path):
    checkpoint = torch.load(_best(lora_run[0]), weights_only=True)
    dropped = next(k for k in checkpoint["state_dict"] if "lora_B" in k)
    del checkpoint["state_dict"][dropped]
    damaged = tmp_path / "damaged.ckpt"
    torch.save(checkpoint, damaged)
    with pytest.raises(HFLightningError, match=r"lacks 1 trained tensors \['" + re.escape(dropped)):
        TransformerModule.load_from_checkpoint(damaged)


def test_later_commands_take_the_lora_settings_from_the_checkpoint(lora_run):
    tmp_path, _ = lora_run
    base = str(tmp_path / "base.yaml")  # no --model.lora_* flags: LightningCLI reads them from the checkpoint
    cli = cli_main(["validate", "--config", base, "--ckpt_path", "best"])
    assert cli.model.hparams.lora_r == R and cli.model.hparams.lora_target_modules == ["query", "value"]
    assert read_metrics(run_dir(tmp_path) / "validate_metrics.json")["val_acc"] > 0.9


@pytest.mark.parametrize(
    ("fixture", "targets", "head"),
    [
        ("tiny_distilbert", ["q_lin", "v_lin"], ["pre_classifier", "classifier"]),  # our default; peft has none
        ("tiny_gpt2", ["c_attn"], ["score"]),
    ],
)
def test_lora_default_targets_and_head_per_architecture(fixture, targets, head, tmp_path, reviews_dir, request):
    model_dir = request.getfixturevalue(fixture)
    base = write_base_config(tmp_path, model_dir, data={"dataset": str(reviews_dir)}, trainer={"max_epochs": 1})
    limits = ["--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1"]
    cli = cli_main(["fit", "--config", str(base), *LORA, *limits])
    assert cli.model.hparams.lora_target_modules == targets
    config, base_model = _config(model_dir), cli.model.model.get_base_model()
    hidden, layers = config.get("dim", config.get("n_embd")), config.get("n_layers", config.get("n_layer"))
    out_features = {"q_lin": hidden, "v_lin": hidden, "c_attn": 3 * hidden}
    adapters = layers * sum(R * hidden + out_features[t] * R for t in targets)
    heads = sum(p.numel() for name in head for p in getattr(base_model, name).modules_to_save.parameters())
    assert parameter_counts(cli.model)[0] == adapters + heads


def test_lora_resume_from_last_continues(lora_run):
    tmp_path, args = lora_run
    cli_main(["fit", *args, "--ckpt_path", "last", "--trainer.max_epochs", "4"])
    newest = max((tmp_path / "logs" / "run").iterdir(), key=lambda p: int(p.name.split("_")[1]))
    assert set(pd.read_csv(newest / "metrics.csv")["epoch"]) == {3}  # only the fourth epoch ran: it continued
    before = torch.load(run_dir(tmp_path) / "checkpoints" / "last.ckpt", weights_only=True)
    after = torch.load(newest / "checkpoints" / "last.ckpt", weights_only=True)
    assert after["global_step"] == before["global_step"] * 4 // 3
    assert list(after["state_dict"]) == list(before["state_dict"])
    assert len(after["optimizer_states"][0]["state"]) == len(after["state_dict"])  # Adam state for each tensor
    assert any(not torch.equal(after["state_dict"][k], v) for k, v in before["state_dict"].items())


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--model.lora_r", "-1"], r"--model.lora_r must be >= 0"),
        (["--model.lora_dropout", "1.5"], r"--model.lora_dropout must be in \[0, 1\)"),
        (
            ["--model.lora_r", "8", "--model.lora_target_modules", "[query, qeury]"],
            r"\['qeury'\] match no layer of this bert model.*'query'",
        ),
    ],
)
def test_bad_lora_values_name_the_flag(flags, message, tmp_path, tiny_model, reviews_dir):
    base = write_base_config(tmp_path, tiny_model, data={"dataset": str(reviews_dir)}, trainer={"max_epochs": 1})
    with pytest.raises(HFLightningError, match=message):
        cli_main(["fit", "--config", str(base), *flags])
