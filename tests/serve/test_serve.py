"""`python main.py serve`: a real server process on a free local port, talked to over HTTP."""

import json
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import huggingface_hub
import pandas as pd
import pytest
import torch
from huggingface_hub import InferenceClient
from huggingface_hub.errors import HfHubHTTPError
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, BertForSequenceClassification

from helpers import Server, write_base_config
from modules.cli.app import cli_main
from modules.data.long_text import aggregate_windows, encode_windows
from modules.errors import HFLightningError
from modules.model.loss import task_outputs
from modules.outputs.export import export_checkpoint
from modules.outputs.onnx import export_onnx
from modules.serve.command import main as serve_main

pytest.importorskip("litserve")
describe = pytest.importorskip("modules.serve.api").describe  # imports litserve
pytestmark = pytest.mark.e2e  # starts servers: `make test-fast` skips it

TEXTS = ["a wonderful film", "the plot was dull and tedious", "fine", "a wonderful and moving story, well told"]
API_KEY = "test-key"


@pytest.fixture(scope="module")
def trained(tiny_model, reviews_dir, tmp_path_factory):
    """A fit's export and `predict`'s output for TEXTS, from the same checkpoint."""
    root = tmp_path_factory.mktemp("served")
    base = write_base_config(root, tiny_model, data={"dataset": str(reviews_dir)}, trainer={"max_epochs": 1})
    cli_main(["fit", "--config", str(base), "--trainer.limit_train_batches", "5"])
    run = root / "logs" / "run" / "version_0"
    pd.DataFrame({"text": TEXTS}).to_csv(root / "new.csv", index=False)
    output = root / "predictions.csv"
    checkpoint = str(run / "checkpoints" / "last.ckpt")
    cli_main(["predict", "--config", str(base), "--ckpt_path", checkpoint, "--data.predict_file", str(root / "new.csv"),
              "--predictions.output_path", str(output)])  # fmt: skip
    return Path(checkpoint), export_checkpoint(checkpoint, root / "hf_model"), pd.read_csv(output)


@pytest.fixture(scope="module")
def server(trained):
    flags = ("--max_inputs", "8", "--max_chars", "200", "--max_body_bytes", "4096")
    served = Server(trained[0], *flags, api_key=API_KEY)  # the .ckpt; behind an API key, which `post` sends
    yield served
    served.stop()


def test_labels_and_scores_equal_predicts(server, trained):
    *_, predicted = trained
    status, answer = server.post({"inputs": TEXTS})
    assert status == 200
    assert [p["label"] for p in answer["predictions"]] == list(predicted["prediction"])
    for p, (_, row) in zip(answer["predictions"], predicted.iterrows()):
        assert p["score"] == pytest.approx(row[f"prob_{p['label']}"], abs=1e-5)
    status, every = server.post({"inputs": TEXTS[:1], "top_k": None})
    assert [s["label"] for s in every["predictions"][0]] == sorted(
        ["negative", "positive"] if "prob_negative" in predicted else ["neg", "pos"],
        key=lambda n: -predicted.loc[0, f"prob_{n}"],
    )
    assert sum(s["score"] for s in every["predictions"][0]) == pytest.approx(1.0, abs=1e-5)
    info = json.loads(server.get("/info")[1])["model"]
    assert info["task"] == "single_label" and info["labels"] and info["max_length"] > 0


@pytest.fixture
def local_client(monkeypatch):
    """InferenceClient for this local server: offline mode (tests/conftest.py) makes huggingface_hub refuse every
    URL, a local one too, so lift it for the client alone; nothing here reaches the Hub."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    return InferenceClient


def test_hugging_face_clients_get_predicts_labels_and_scores(server, trained, local_client):
    *_, predicted = trained
    client = local_client(model=server.url + "/predict", token=API_KEY)
    for text, (_, row) in zip(TEXTS, predicted.iterrows()):
        every = client.text_classification(text)  # sends {"inputs": text, "parameters": {}}: every label, best first
        assert every[0].label == row["prediction"] and len(every) == 2
        assert [e.score for e in every] == pytest.approx([row[f"prob_{e.label}"] for e in every], abs=1e-5)
        assert [e.label for e in client.text_classification(text, top_k=1)] == [row["prediction"]]
    status, answer = server.post({"inputs": TEXTS[:2], "parameters": {"function_to_apply": "none"}})
    assert status == 200 and len(answer) == 2 and all(len(labels) == 2 for labels in answer)
    assert any(item["score"] < 0 or item["score"] > 1 for labels in answer for item in labels)  # logits, not probs


def test_without_the_api_key_only_the_health_check_answers(server, local_client):
    assert server.post({"inputs": ["fine"]}, headers={})[0] == 401
    assert server.post({"inputs": ["fine"]}, headers={"Authorization": "Bearer wrong"})[0] == 401
    with pytest.raises(urllib.error.HTTPError, match="401"):
        urllib.request.urlopen(server.url + "/info", timeout=10)
    with urllib.request.urlopen(server.url + "/health", timeout=10) as response:
        assert response.status == 200
    with pytest.raises(HfHubHTTPError, match="401"):
        local_client(model=server.url + "/predict").text_classification("fine")


def test_pairs_are_scored_as_pairs(server, trained):
    folder = trained[1]
    tokenizer, model = AutoTokenizer.from_pretrained(folder), AutoModelForSequenceClassification.from_pretrained(folder)
    pairs = [["a wonderful film", "fine"], ["dull", "a wonderful and moving story"]]
    status, answer = server.post({"inputs": [*pairs, "fine"], "top_k": None})
    assert status == 200 and len(answer["predictions"]) == 3
    with torch.inference_mode():
        encoded = tokenizer([p[0] for p in pairs], [p[1] for p in pairs], padding=True, return_tensors="pt")
        expected = torch.softmax(model.eval()(**encoded).logits, -1)
    for scores, probabilities in zip(answer["predictions"], expected.tolist()):
        by_name = {s["label"]: s["score"] for s in scores}
        assert [by_name[model.config.id2label[i]] for i in range(2)] == pytest.approx(probabilities, abs=1e-5)


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        (b"{not json", 400, "not JSON"),
        ({"text": ["x"]}, 422, '{"inputs"'),
        ({"inputs": []}, 422, "non-empty list"),
        ({"inputs": [1, 2]}, 422, "inputs[0]"),
        ({"inputs": [["only one"]]}, 422, "inputs[0]"),
        ({"inputs": ["x"] * 9}, 413, "limit is 8"),
        ({"inputs": ["x" * 201]}, 413, "limit is 200"),
        ({"inputs": ["  "]}, 422, "empty"),
        ({"inputs": ["x"], "top_k": 0}, 422, "top_k"),
        (b'{"inputs": ["' + b"x" * 5000 + b'"]}', 413, "4096"),
        ({"inputs": "x", "parameters": {"truncate": True}}, 422, "unknown parameter(s) ['truncate']"),
        ({"inputs": "x", "parameters": {"function_to_apply": "relu"}}, 422, "function_to_apply"),
        ({"inputs": "x", "parameters": {}, "top_k": 2}, 422, "goes inside it"),
        ({"inputs": ["x"], "threshold": 1.5}, 422, "`threshold` must be a number between 0 and 1 (exclusive) or an"),
        ({"inputs": ["x"], "threshold": "0.3"}, 422, 'or an object {label: number}, got "0.3"'),
        ({"inputs": ["x"], "threshold": 0.3}, 422, "`threshold` applies to a multi-label model"),  # this one picks one
        ({"inputs": "x", "parameters": {"threshold": 0.3}}, 422, "Hugging Face's shape answers every label's score"),
    ],
    ids=[
        "malformed",
        "no-inputs",
        "empty",
        "types",
        "half-pair",
        "too-many",
        "too-long",
        "blank",
        "top-k",
        "body",
        "hf-parameter",
        "hf-function",
        "hf-top-k",
        "threshold-range",
        "threshold-type",
        "threshold-single-label",
        "hf-threshold",
    ],  # fmt: skip
)
def test_bad_input_is_a_4xx_and_the_next_request_is_answered(server, body, status, says):
    code, answer = server.post(body)
    assert code == status and says in answer["error"] and "\n" not in answer["error"]
    assert server.post({"inputs": ["fine"]})[0] == 200


def _saved(tiny_model, folder: Path, problem_type: str, labels: list[str]) -> Path:
    model = BertForSequenceClassification.from_pretrained(
        tiny_model,
        num_labels=len(labels),
        problem_type=problem_type,
        id2label=dict(enumerate(labels)),
        ignore_mismatched_sizes=True,  # a new head of the size asked for
    )
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(folder)
    return folder


@pytest.mark.parametrize(
    ("problem_type", "labels"),
    [("multi_label_classification", ["sports", "art", "news"]), ("regression", ["score"])],
    ids=["multi-label", "regression"],
)
def test_multi_label_and_regression_answers(problem_type, labels, tiny_model, tmp_path):
    folder = _saved(tiny_model, tmp_path / "model", problem_type, labels)
    model, tokenizer = AutoModelForSequenceClassification.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    with torch.inference_mode():
        logits = model.eval()(**tokenizer(TEXTS, padding=True, return_tensors="pt")).logits
    task = "regression" if problem_type == "regression" else "multi_label"
    expected = task_outputs(task, logits).tolist()
    # Two thresholds between the scores, so that each decides differently: the export's, and one request's own.
    scores = sorted(v for row in expected for v in (row if isinstance(row, list) else [row]))
    exported, asked = scores[len(scores) // 3], scores[2 * len(scores) // 3]
    if task == "multi_label":
        config = AutoConfig.from_pretrained(folder)
        config.hf_lightning_threshold = exported  # what the export of a run at `--model.threshold` records
        config.save_pretrained(folder)
    served = Server(folder)  # no --threshold: the export's
    try:
        status, answer = served.post({"inputs": TEXTS})
        info = json.loads(served.get("/info")[1])["model"]
        own = served.post({"inputs": TEXTS, "threshold": asked if task == "multi_label" else 0.3})
    finally:
        served.stop()
    assert status == 200
    for p, value in zip(answer["predictions"], expected):
        if task == "regression":
            assert p == {"score": pytest.approx(value, abs=1e-5)}
        else:
            assert [p["scores"][n] for n in labels] == pytest.approx(value, abs=1e-5)
            assert p["labels"] == [n for n, v in zip(labels, value) if v > exported]
    if task == "regression":
        assert "threshold" not in info and own[0] == 422 and "multi-label" in own[1]["error"]
        return
    assert info["threshold"] == pytest.approx(exported) and own[0] == 200
    assert [p["labels"] for p in own[1]["predictions"]] == [
        [n for n, v in zip(labels, row) if v > asked] for row in expected
    ]
    assert [p["labels"] for p in own[1]["predictions"]] != [p["labels"] for p in answer["predictions"]]


@pytest.mark.parametrize("group", [False, True], ids=["server", "process-group"])
def test_sigterm_lets_the_request_in_flight_finish(trained, group):
    served = Server(trained[1], "--batch_timeout", "1.0", "--max_batch_size", "64")  # a request waits ~1 s
    result = {}
    sender = threading.Thread(target=lambda: result.update(answer=served.post({"inputs": TEXTS})))
    sender.start()
    time.sleep(0.3)
    exit_code, left = served.stop(group=group)
    sender.join(timeout=30)
    if not group:  # a signal to every process stops the workers too: no drain then (docs/serve.md, KillMode=mixed)
        assert result["answer"][0] == 200 and len(result["answer"][1]["predictions"]) == len(TEXTS)
    assert exit_code == 0 and left == []  # every process of the server gone: the port is free again
    log = Path(served.log.name).read_text()  # stdout and stderr of every process of the server
    assert "Traceback" not in log and "\x1b" not in log
    assert not [line for line in log.splitlines() if "Warning" in line or "warning:" in line.lower()]


def test_onnx_backends_answer_as_pytorch_does(trained):
    *_, folder, predicted = trained
    export_onnx(folder, quantize=True)
    for backend, tolerance in (("onnx", 1e-5), ("onnx-int8", 0.05)):
        served = Server(folder, "--backend", backend)
        try:
            status, answer = served.post({"inputs": TEXTS})
            info = json.loads(served.get("/info")[1])["model"]
        finally:
            served.stop()
        assert status == 200 and info["backend"] == backend
        for p, (_, row) in zip(answer["predictions"], predicted.iterrows()):
            assert p["score"] == pytest.approx(row[f"prob_{p['label']}"], abs=tolerance)
        if backend == "onnx":
            assert [p["label"] for p in answer["predictions"]] == list(predicted["prediction"])


def test_bf16_precision_serves_close_to_fp32(trained):
    *_, folder, predicted = trained
    served = Server(folder, "--precision", "bf16-true", "--workers_per_device", "1")
    try:
        status, answer = served.post({"inputs": TEXTS})
        info = json.loads(served.get("/info")[1])["model"]
    finally:
        served.stop()
    assert status == 200 and info["precision"] == "bf16-true" and info["workers"] == 1
    for p, (_, row) in zip(answer["predictions"], predicted.iterrows()):
        assert p["score"] == pytest.approx(row[f"prob_{p['label']}"], abs=0.02)  # bf16 keeps ~3 significant digits


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--backend", "onnx", "--precision", "bf16-true"], "--precision applies to --backend torch"),
        (["--workers_per_device", "0"], "--workers_per_device must be at least 1"),
        (["--precision", "bf16"], "invalid choice: 'bf16'"),
        (["--threshold", "1"], "--threshold must be between 0 and 1 (exclusive), got 1.0"),
    ],
)
def test_bad_serving_options_are_one_line(tiny_model, capsys, flags, message):
    with pytest.raises(SystemExit) as stopped:
        serve_main([str(tiny_model), *flags])
    assert stopped.value.code == 2 and message in capsys.readouterr().err


def test_onnx_backend_without_its_file_fails_before_serving(tiny_model, capsys):
    with pytest.raises(SystemExit) as stopped:
        serve_main([str(tiny_model), "--backend", "onnx-int8"])
    error = capsys.readouterr().err
    assert stopped.value.code == 2 and error.startswith("error: ") and len(error.splitlines()) == 1
    assert "model.int8.onnx" in error and "main.py export" in error


def test_long_text_chunk_answers_once_per_input_from_its_windows(trained):
    folder = trained[1]
    texts = [" ".join(["a wonderful film and"] * 10), "fine", " ".join(["the plot was dull and tedious"] * 6)]
    tokenizer, model = AutoTokenizer.from_pretrained(folder), AutoModelForSequenceClassification.from_pretrained(folder)
    windows = encode_windows(tokenizer, texts, max_length=16, stride=4)
    document = torch.tensor(windows.pop("document"))
    assert len(document) > 2 * len(texts)  # the long ones take several windows
    with torch.inference_mode():
        logits = model.eval()(**tokenizer.pad(windows, return_tensors="pt")).logits
    expected = torch.softmax(aggregate_windows(logits, document), -1)
    served = Server(folder, "--long_text", "chunk", "--max_length", "16", "--stride", "4", "--rows_per_pass", "4")
    try:
        status, answer = served.post({"inputs": texts, "top_k": None})
    finally:
        served.stop()
    assert status == 200 and len(answer["predictions"]) == len(texts)
    for scores, probabilities in zip(answer["predictions"], expected.tolist()):
        by_name = {s["label"]: s["score"] for s in scores}
        assert [by_name[model.config.id2label[i]] for i in range(2)] == pytest.approx(probabilities, abs=1e-5)


def test_long_text_defaults_to_the_runs(tiny_model, tmp_path):
    folder = _saved(tiny_model, tmp_path / "model", "single_label_classification", ["neg", "pos"])
    assert describe(folder, None)["long_text"] == "truncate" and "stride" not in describe(folder, None)
    config = AutoConfig.from_pretrained(folder)
    config.hf_lightning_long_text, config.hf_lightning_stride = "chunk", 6  # what a chunk run's export records
    config.save_pretrained(folder)
    assert {k: describe(folder, 32)[k] for k in ("long_text", "stride", "max_length")} == {
        "long_text": "chunk", "stride": 6, "max_length": 32,
    }  # fmt: skip
    assert describe(folder, 32, "truncate")["long_text"] == "truncate"
    assert describe(folder, 32, None, 2)["stride"] == 2
    with pytest.raises(HFLightningError, match="--data.stride 20"):
        describe(folder, 32, None, 20)


def test_the_thresholds_follow_the_export_unless_serve_is_given_one(tiny_model, tmp_path):
    folder = _saved(tiny_model, tmp_path / "model", "multi_label_classification", ["art", "news"])
    assert describe(folder, None)["threshold"] == 0.5 and "thresholds" not in describe(folder, None)  # records none
    config = AutoConfig.from_pretrained(folder)
    config.hf_lightning_threshold = 0.3
    config.save_pretrained(folder)
    assert describe(folder, None)["threshold"] == 0.3
    assert describe(folder, None, threshold=0.7)["threshold"] == 0.7
    config.hf_lightning_thresholds = {"news": 0.8, "art": 0.2}  # what a run that tuned them records
    config.save_pretrained(folder)
    info = describe(folder, None)
    assert info["thresholds"] == {"art": 0.2, "news": 0.8} and info["threshold"] == 0.3 and "decision" not in info
    given = describe(folder, None, threshold=0.7)  # serve --threshold: every label's
    assert given["threshold"] == 0.7 and "thresholds" not in given

    single = _saved(tiny_model, tmp_path / "single", "single_label_classification", ["neg", "pos"])
    assert "threshold" not in describe(single, None) and "decision" not in describe(single, None)
    config = AutoConfig.from_pretrained(single)
    config.hf_lightning_decision = {"label": "pos", "threshold": 0.3}  # a target precision or recall for `pos`
    config.save_pretrained(single)
    info = describe(single, None)
    assert info["decision"] == {"label": "pos", "threshold": 0.3} and "threshold" not in info
    with pytest.raises(HFLightningError, match="--threshold applies to a multi-label model; this one is single_label"):
        describe(single, None, threshold=0.4)
