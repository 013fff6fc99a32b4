"""The server imports no training stack, and bad input ends in one line (modules/serve)."""

import json
import subprocess
import sys

import pytest

from helpers import ROOT

pytest.importorskip("litserve")

HEAVY = ("lightning", "pytorch_lightning", "lightning_fabric", "datasets", "torchmetrics")

# In a fresh interpreter: what `main.py serve` imports, what a worker's `setup` imports for the torch backend (it
# runs) and for the onnx ones (OnnxLogits), then one request through the API as LitServe passes it.
WORKER = """
import json, sys
from pathlib import Path
import modules.serve, modules.serve.command
from modules.check.machine import precision_warning
from modules.outputs.onnx import OnnxLogits
from modules.serve.api import ClassifierAPI, describe
from modules.serve.limits import request_options

folder = Path(sys.argv[1])
api = ClassifierAPI(folder, describe(folder, None), rows_per_pass=8, threads=1)
api.setup("cpu")
answer = api.predict(request_options({"inputs": ["a fine film"]}))
heavy = sorted({name.split(".")[0] for name in sys.modules} & set(sys.argv[2:]))
print(json.dumps({"heavy": heavy, "answer": answer}))
"""


def test_the_server_and_its_worker_load_no_training_stack(tiny_model):
    result = subprocess.run(
        [sys.executable, "-c", WORKER, str(tiny_model), *HEAVY], cwd=ROOT, capture_output=True, text=True, check=True
    )
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["heavy"] == []
    (prediction,) = report["answer"]["predictions"]
    assert set(prediction) == {"label", "score"} and 0.5 <= prediction["score"] <= 1


def test_serving_a_folder_that_does_not_exist_is_one_error_line():
    result = subprocess.run(
        [sys.executable, "main.py", "serve", "/no/such/folder"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith("error: /no/such/folder does not exist")
