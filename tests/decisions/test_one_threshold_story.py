"""One threshold story (issue 31): `predict`, `serve` (torch and ONNX backends) and the export's config decide with
the thresholds the run tuned, and a command's or a request's own threshold replaces them the same way everywhere."""

import json
from pathlib import Path

import pytest
import torch

from helpers import Server
from modules.cli.app import cli_main
from modules.decisions.record import Decisions

pytest.importorskip("litserve")
pytest.importorskip("onnxruntime")

pytestmark = pytest.mark.e2e


def _predict(topic_run: dict, output: Path, *flags: str) -> list[dict]:
    test_file = topic_run["files"]["test"]
    cli_main(["predict", "--config", str(topic_run["config"]), "--ckpt_path", "best", "--data.predict_file", test_file,
              "--predictions.output_path", str(output), *flags])  # fmt: skip
    return [json.loads(line) for line in output.read_text().splitlines()]


def _above(rows: list[dict], thresholds: dict[str, float]) -> list[list[str]]:
    """Each row's labels whose probability (predict's) is above its threshold, in id order."""
    return [[name for name, p in row["probabilities"].items() if p > thresholds[name]] for row in rows]


def _served(server: Server, texts: list[str], threshold: object = None) -> tuple[dict, list[list[str]]]:
    info = json.loads(server.get("/info")[1])["model"]
    body = {"inputs": texts} | ({} if threshold is None else {"threshold": threshold})
    status, answer = server.post(body)
    assert status == 200, answer
    return info, [p["labels"] for p in answer["predictions"]]


def test_predict_and_both_backends_decide_with_the_tuned_thresholds(topic_run, tmp_path):
    export = topic_run["export"]
    config = json.loads((export / "config.json").read_text())
    tuned, default = config["hf_lightning_thresholds"], config["hf_lightning_threshold"]
    best = json.loads((topic_run["run_dir"] / "fit_summary.json").read_text())["best_checkpoint"]
    decisions = Decisions.from_checkpoint(torch.load(best, map_location="cpu", weights_only=False))
    assert dict(zip(decisions.labels, decisions.thresholds)) == tuned  # the export records the checkpoint's

    rows = _predict(topic_run, tmp_path / "tuned.jsonl")
    texts = [row["text"] for row in rows]
    labels = [row["prediction"] for row in rows]
    assert labels == _above(rows, tuned)
    assert labels != _above(rows, dict.fromkeys(tuned, default))  # the tuned thresholds change some decisions

    asked = {"art": 0.9}  # a request's own threshold for one label; the others keep theirs
    for backend in ("torch", "onnx"):
        server = Server(export, "--backend", backend, "--workers_per_device", "1", "--max_inputs", str(len(texts)))
        try:
            info, served = _served(server, texts)
            _, every = _served(server, texts, 0.2)
            _, some = _served(server, texts, asked)
            unknown = server.post({"inputs": texts[:1], "threshold": {"arts": 0.3}})
        finally:
            server.stop()
        assert info["thresholds"] == tuned and info["threshold"] == default and info["backend"] == backend
        assert served == labels, backend
        assert every == _above(rows, dict.fromkeys(tuned, 0.2)), backend
        assert some == _above(rows, tuned | asked) != labels, backend
        assert unknown[0] == 422 and "unknown label(s) ['arts']" in unknown[1]["error"]

    # A command's own --model.threshold replaces every tuned threshold; the probabilities stay the calibrated ones.
    given = _predict(topic_run, tmp_path / "given.jsonl", "--model.threshold", "0.2")
    assert [row["probabilities"] for row in given] == [row["probabilities"] for row in rows]
    assert [row["prediction"] for row in given] == _above(rows, dict.fromkeys(tuned, 0.2)) != labels
