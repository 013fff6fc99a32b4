"""The one max_length rule (`clamp_max_length`) and the data contract's seam."""

import subprocess
import sys
from dataclasses import FrozenInstanceError

import pytest
from transformers import BertConfig, GPT2Config

from modules.data.contract import FALLBACK_MAX_LENGTH, DataContract, clamp_max_length, model_length_limit
from modules.data.labels import LabelSpec
from modules.errors import HFLightningError
from modules.model import TransformerModule


def test_model_length_limit_reads_either_name_and_dicts():
    assert model_length_limit(BertConfig(max_position_embeddings=64)) == 64
    assert model_length_limit(GPT2Config(n_positions=48)) == 48
    assert model_length_limit({"max_position_embeddings": 96}) == 96
    assert model_length_limit({"model_type": "x"}) is None


def test_clamp_takes_the_smallest_known_limit():
    config = BertConfig(max_position_embeddings=64)
    assert clamp_max_length(128, config) == 64
    assert clamp_max_length(32, config) == 32
    assert clamp_max_length(128, config, tokenizer_max_length=40) == 40
    # A tokenizer with no limit (transformers' int(1e30)) does not count as one.
    assert clamp_max_length(128, config, tokenizer_max_length=int(1e30)) == 64
    assert clamp_max_length(128) == 128


def test_clamp_without_a_request_gives_the_limit():
    assert clamp_max_length(None, BertConfig(max_position_embeddings=64)) == 64
    assert clamp_max_length(int(1e30), {"max_position_embeddings": 64}) == 64
    assert clamp_max_length(None, {}, tokenizer_max_length=int(1e30)) == FALLBACK_MAX_LENGTH


LOAD_FILE_ALONE = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("contract", "modules/data/contract.py")
module = sys.modules["contract"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
print(module.clamp_max_length(4096, {"n_positions": 64}), sorted({"lightning", "datasets", "torch"} & set(sys.modules)))
"""


def test_contract_file_is_light():
    # The server clamps with it: the file itself needs none of the training stack (the package's __init__ is
    # another matter, engineered separately).
    out = subprocess.run([sys.executable, "-c", LOAD_FILE_ALONE], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "64 []"


def _contract(spec: LabelSpec | None) -> DataContract:
    return DataContract(label_spec=spec, tokenizer=None, tokenizer_name_or_path="tok", max_length=8)


def test_the_model_reads_labels_from_the_contract_it_was_handed():
    module = TransformerModule(problem_type="single_label_classification", label_names=["neg", "pos"])
    module.connect(_contract(LabelSpec("single_label", ("neg", "neutral", "pos"))))
    with pytest.raises(HFLightningError, match=r"data gives single_label with labels \['neg', 'neutral', 'pos'\]"):
        module.label_spec()
    module.connect(_contract(None))  # no train split: the checkpoint's labels
    assert module.label_spec() == LabelSpec("single_label", ("neg", "pos"))
    with pytest.raises(FrozenInstanceError):
        module.data_contract.max_length = 16
