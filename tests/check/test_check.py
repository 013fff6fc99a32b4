"""`python main.py check`: its report on every shipped config, the memory verdict and exit status, and that it leaves
nothing a later `fit` or `--ckpt_path best` would pick up."""

import hashlib
import json
import random
from pathlib import Path

import pytest

from helpers import ROOT, run_dir, run_subprocess, write_base_config
from modules.check.command import CheckFailed
from modules.cli.app import cli_main
from modules.data.demo import NEGATIVE, NEUTRAL, POSITIVE
from modules.errors import HFLightningError
from modules.runs.paths import find_checkpoint

pytestmark = pytest.mark.e2e  # a few real training steps each


def _sentence(rng: random.Random, sentiment: list[str]) -> str:
    return " ".join([rng.choice(NEUTRAL) for _ in range(rng.randint(2, 9))] + [rng.choice(sentiment)])


def _write_jsonl(folder: Path, make_row, sizes=(40, 12)) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for seed, (name, n) in enumerate(zip(("train", "validation"), sizes)):
        rng = random.Random(seed)
        paths[name] = str(folder / f"{name}.jsonl")
        Path(paths[name]).write_text("".join(json.dumps(make_row(rng, i)) + "\n" for i in range(n)))
    return paths


def _single(rng, i):
    return {"text": _sentence(rng, POSITIVE if i % 4 else NEGATIVE), "label": "pos" if i % 4 else "neg"}


def _own(rng, i):
    return {"review": _sentence(rng, POSITIVE if i % 2 else NEGATIVE), "sentiment": i % 2}


def _pair(rng, i):
    return {"sentence1": _sentence(rng, POSITIVE), "sentence2": _sentence(rng, NEGATIVE), "label": i % 2}


def _score(rng, i):
    return {"sentence1": _sentence(rng, POSITIVE), "sentence2": _sentence(rng, NEGATIVE), "label": i % 5 + 0.5}


def _multilabel(rng, i):
    return {"text": _sentence(rng, POSITIVE), "labels": [i % 3] + ([3] if i % 2 else [])}


# config files -> (rows writer, the logger's run name). lora/pairs/... stack on bert.yaml, as their comments say.
SHIPPED = {
    ("bert.yaml",): (_single, "bert"),
    ("demo.yaml",): (_single, "demo"),
    ("bert.yaml", "lora.yaml"): (_single, "bert"),
    ("bert.yaml", "pairs.yaml"): (_pair, "mrpc"),
    ("bert.yaml", "regression.yaml"): (_score, "stsb"),
    ("bert.yaml", "multilabel.yaml"): (_multilabel, "go_emotions"),
    ("own_data.yaml",): (_own, "own_data"),
}


def _check_args(configs: tuple[str, ...], tmp_path: Path, model: Path, files: dict[str, str]) -> list[str]:
    args = ["check"]
    for config in configs:
        args += ["--config", str(ROOT / "configs" / config)]
    return args + [
        "--model.model_name_or_path", str(model),
        "--data.dataset", "json",
        "--data.dataset_config", "null",
        "--data.data_files", json.dumps(files),
        "--data.batch_size", "8",
        "--trainer.logger.init_args.save_dir", str(tmp_path / "logs"),
        "--trainer.max_epochs", "2",
    ]  # fmt: skip


@pytest.mark.parametrize("configs", list(SHIPPED), ids="+".join)
def test_check_on_each_shipped_config(configs, tmp_path, tiny_model):
    make_row, name = SHIPPED[configs]
    files = _write_jsonl(tmp_path / "data", make_row)
    cli_main(_check_args(configs, tmp_path, tiny_model, files))
    report = json.loads((tmp_path / "logs" / name / "check" / "check.json").read_text())
    assert report["rows"] == {"train": 40, "validation": 12}
    assert report["fits"] is True and report["native_precision"] is True
    assert report["batches_per_epoch"] == 5  # 40 rows / batch_size 8
    # Two epochs: the second meets every shape warm, so the warm-up is paid once.
    assert report["run_seconds"] == pytest.approx(2 * report["epoch_seconds"] - report["warmup_seconds"], abs=0.3)
    assert report["epoch_seconds"] == pytest.approx(
        report["train_seconds_per_epoch"] + report["validation_seconds_per_epoch"], abs=0.15
    )
    assert 1 <= report["distinct_shapes"] <= 5 and 1 <= report["validation_distinct_shapes"] <= 2
    assert report["peak_memory_bytes"] == max(report["steps_peak_memory_bytes"], report["end_of_fit_memory_bytes"])
    # The fit exports at its end: the loaded checkpoint and a second model come on top of what it holds then.
    assert report["export_memory_bytes"] > report["checkpoint_bytes"] > 0
    assert 0 < report["step_seconds"] and 0 < report["peak_memory_bytes"] < report["memory_limit_bytes"]
    assert 0.0 <= report["truncated_share"]["train"] <= 1.0
    assert report["model"]["tokenizer_matches_model"] is True
    if "lora.yaml" in configs:
        assert report["model"]["trainable_parameters"] < report["model"]["parameters"]
    else:
        assert report["model"]["trainable_parameters"] == report["model"]["parameters"]
    if "pairs.yaml" in configs:
        assert report["data"]["splits"]["train"]["tokens_second"]["max"] > 0
    # Nothing a later command would pick up: no version folder, no checkpoint.
    assert sorted(p.name for p in (tmp_path / "logs" / name).iterdir()) == ["check"]
    assert not list((tmp_path / "logs").rglob("*.ckpt"))


def test_check_reports_labels_and_drops(tmp_path, tiny_model):
    files = _write_jsonl(tmp_path / "data", _single)
    with open(files["train"], "a") as f:
        f.write(
            json.dumps({"text": "  ", "label": "pos"}) + "\n" + json.dumps({"text": "ok good", "label": None}) + "\n"
        )
    cli_main(_check_args(("bert.yaml",), tmp_path, tiny_model, files))
    train = json.loads((tmp_path / "logs" / "bert" / "check" / "check.json").read_text())["data"]["splits"]["train"]
    assert train["rows"] == 40 and train["dropped"] == {"empty_text": 1, "no_label": 1}
    assert train["labels"] == {"counts": {"neg": 10, "pos": 30}, "imbalance_ratio": 3.0}


def test_check_over_memory_limit_fails_naming_the_fix(tmp_path, tiny_model, reviews_dir):
    base = write_base_config(tmp_path, tiny_model, data={"dataset": str(reviews_dir)})
    with pytest.raises(CheckFailed, match=r"--data.batch_size 8 --trainer.accumulate_grad_batches 2"):
        cli_main(["check", "--config", str(base), "--memory_limit_gb", "0.01"])
    report = json.loads((tmp_path / "logs" / "run" / "check" / "check.json").read_text())
    assert report["fits"] is False and report["memory_limit_bytes"] == int(0.01 * 2**30)
    assert "--model.gradient_checkpointing true" in report["fix"]


def test_check_exit_status_is_2_when_it_does_not_fit(tmp_path, tiny_model, reviews_dir):
    base = write_base_config(tmp_path, tiny_model, data={"dataset": str(reviews_dir)})
    result = run_subprocess(["check", "--config", str(base), "--memory_limit_gb", "0.01"])
    assert result.returncode == 2, result.stderr[-2000:]
    assert "error: the longest batch needs" in result.stderr and "--data.max_length" in result.stderr


def test_check_with_an_unknown_monitor_fails(tmp_path, tiny_model, reviews_dir):
    base = write_base_config(tmp_path, tiny_model, data={"dataset": str(reviews_dir)})
    with pytest.raises(HFLightningError, match="monitors 'val_accuracy'"):
        cli_main(["check", "--config", str(base), "--trainer.callbacks.monitor", "val_accuracy"])


def _digest(folder: Path) -> str:
    return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file())).hexdigest()


def test_check_leaves_best_checkpoint_and_weights_alone(tmp_path, tiny_model, reviews_dir):
    base = write_base_config(tmp_path, tiny_model, data={"dataset": str(reviews_dir)}, trainer={"max_epochs": 1})
    root = tmp_path / "logs" / "run"
    weights = _digest(tiny_model)
    cli_main(["check", "--config", str(base)])
    with pytest.raises(HFLightningError, match="no checkpoint found"):
        find_checkpoint("best", root)
    cli_main(["fit", "--config", str(base)])
    best = find_checkpoint("best", root)
    best_bytes = best.read_bytes()
    cli_main(["check", "--config", str(base)])
    assert find_checkpoint("best", root) == best and best.read_bytes() == best_bytes
    assert sorted(p.name for p in root.iterdir()) == ["check", "version_0"]
    assert _digest(tiny_model) == weights
    cli_main(["fit", "--config", str(base)])
    assert run_dir(tmp_path, 1).is_dir()  # the next fit's version number is unaffected by check
