"""ONNX export (modules/outputs/onnx.py): dynamic axes, parity with PyTorch, int8, and the flags that write it."""

import importlib.util
import shutil

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from helpers import write_base_config
from modules.cli.app import cli_main
from modules.errors import HFLightningError
from modules.outputs import onnx as onnx_module
from modules.outputs.export import main as export_main
from modules.outputs.onnx import INT8_FILE, ONNX_FILE, OnnxLogits, export_onnx

pytest.importorskip("onnxruntime")

LONG = ["a wonderful and moving story, well told", "the plot was dull and tedious", "fine"] * 3


def _pytorch_logits(folder, batch: dict) -> np.ndarray:
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    with torch.inference_mode():
        return model(**{k: torch.from_numpy(v) for k, v in batch.items()}).logits.numpy()


@pytest.fixture(scope="module")
def exported(tiny_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("onnx") / "hf_model"
    shutil.copytree(tiny_model, folder)
    assert export_onnx(folder, quantize=True) == folder / ONNX_FILE
    return folder


# The graph is traced at batch 2, length 8: these are other batch sizes and lengths, with padding inside a batch.
@pytest.mark.parametrize("texts", [["fine"], LONG], ids=["batch1-length3", "batch9-length11-padded"])
def test_logits_equal_pytorchs_at_other_batch_sizes_and_lengths(exported, texts):
    batch = AutoTokenizer.from_pretrained(exported)(texts, padding=True, return_tensors="np")
    expected = _pytorch_logits(exported, batch)
    np.testing.assert_allclose(OnnxLogits(exported)(batch), expected, atol=1e-5)
    int8 = OnnxLogits(exported, quantized=True)(batch)
    assert int8.shape == expected.shape and np.abs(int8 - expected).max() < 0.05


def test_model_without_token_type_ids(tiny_distilbert, tmp_path):
    folder = tmp_path / "hf_model"
    shutil.copytree(tiny_distilbert, folder)
    export_onnx(folder)
    runner = OnnxLogits(folder)
    assert runner.input_names == ["input_ids", "attention_mask"]
    batch = AutoTokenizer.from_pretrained(folder)(LONG, padding=True, return_tensors="np")  # has token_type_ids
    np.testing.assert_allclose(runner(batch), _pytorch_logits(folder, dict(list(batch.items())[::2])), atol=1e-5)


def test_fit_writes_both_files_into_the_export(tiny_model, reviews_dir, tmp_path):
    base = write_base_config(tmp_path, tiny_model, data={"dataset": str(reviews_dir)}, trainer={"max_epochs": 1})
    cli_main(["fit", "--config", str(base), "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "2",
              "--export.enabled", "true", "--export.onnx", "true", "--export.quantize", "true"])  # fmt: skip
    folder = tmp_path / "logs" / "run" / "version_0" / "hf_model"
    assert (folder / ONNX_FILE).is_file() and (folder / INT8_FILE).is_file()
    batch = AutoTokenizer.from_pretrained(folder)(LONG, padding=True, return_tensors="np")
    np.testing.assert_allclose(OnnxLogits(folder)(batch), _pytorch_logits(folder, batch), atol=1e-5)


def test_commands_after_the_fact(tiny_model, tmp_path, capsys):
    folder = tmp_path / "hf_model"
    shutil.copytree(tiny_model, folder)
    export_main([str(folder), "--onnx", "--quantize"])  # ONNX files for an existing export
    assert (folder / ONNX_FILE).is_file() and (folder / INT8_FILE).is_file()
    with pytest.raises(SystemExit) as stopped:
        (tmp_path / "some.ckpt").touch()
        export_main([str(tmp_path / "some.ckpt"), str(tmp_path / "out"), "--quantize"])  # without --onnx: refused
    assert stopped.value.code == 2 and "add --onnx" in capsys.readouterr().err


def test_quantize_without_onnx_is_refused_before_training(tiny_model, reviews_dir, tmp_path):
    base = write_base_config(tmp_path, tiny_model, data={"dataset": str(reviews_dir)})
    with pytest.raises(HFLightningError, match="add --export.onnx true"):
        cli_main(["fit", "--config", str(base), "--export.quantize", "true"])
    assert not (tmp_path / "logs").exists()  # nothing ran


def test_missing_file_names_the_flag(tiny_model):
    with pytest.raises(
        HFLightningError, match="main.py export .* --onnx --quantize.*--export.onnx true --export.quantize true"
    ):
        OnnxLogits(tiny_model, quantized=True)


def test_missing_onnxruntime_names_the_extra(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "onnxruntime" else real(name))
    with pytest.raises(HFLightningError, match=r"pip install -e '\.\[onnx\]'"):
        onnx_module.require_onnxruntime()


def test_int8_check_is_recorded_and_auto_serves_the_fastest_exact_enough_file(topic_run, tmp_path):
    import json

    from modules.outputs.int8_check import CHECK_KEY, int8_check, read_check
    from modules.outputs.onnx import quantize_onnx
    from modules.serve.command import auto_backend

    folder = tmp_path / "export"
    shutil.copytree(topic_run["export"], folder)
    assert auto_backend(str(folder)) == ("onnx", f"no {INT8_FILE}")
    quantize_onnx(folder / ONNX_FILE, folder / INT8_FILE)
    assert auto_backend(str(folder))[0] == "onnx"  # an int8 file nobody checked is not served by `auto`
    rows = [json.loads(line) for line in open(topic_run["files"]["validation"])]
    names = json.loads((folder / "config.json").read_text())["id2label"]
    labels = [[float(n in row["labels"]) for n in (names[str(i)] for i in range(len(names)))] for row in rows]
    check = int8_check(folder, [row["text"] for row in rows], None, labels, "validation")
    assert read_check(folder) == check == json.loads((folder / "config.json").read_text())[CHECK_KEY]
    assert check["metric"] == "micro_f1" and check["rows"] == len(rows) and 0 <= check["agreement"] <= 1
    assert check["fp32"] > 0.5  # the topic run learned its labels: a broken comparison would not score this
    assert check["exact_enough"] == (check["fp32"] - check["int8"] <= 0.005)
    assert auto_backend(str(folder))[0] == ("onnx-int8" if check["exact_enough"] else "onnx")
    written = json.loads((folder / "config.json").read_text())
    written[CHECK_KEY] |= {"int8": check["fp32"] - 0.02, "exact_enough": False}
    (folder / "config.json").write_text(json.dumps(written))
    backend, why = auto_backend(str(folder))
    assert backend == "onnx" and "more than 0.5 below: not exact enough" in why
    (folder / ONNX_FILE).unlink()
    assert auto_backend(str(folder))[0] == "torch"
