"""The one max_length rule (`clamp_max_length`) and the data contract's seam."""

import subprocess
import sys

from transformers import BertConfig, GPT2Config

from modules.data.contract import FALLBACK_MAX_LENGTH, clamp_max_length, model_length_limit


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
