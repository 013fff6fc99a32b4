"""benchmarks/flop_bound.py's FLOPs per row against torch's own count of a real forward, and its input checks."""

import importlib.util
from pathlib import Path

import pytest
import torch
from torch.profiler import ProfilerActivity, profile
from transformers import BertConfig, BertForSequenceClassification, DistilBertConfig

from modules.errors import HFLightningError
from modules.speedups import apply_exact

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "flop_bound.py"
_SPEC = importlib.util.spec_from_file_location("flop_bound", _PATH)
flop_bound = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(flop_bound)


def _counted_flops(model: torch.nn.Module, tokens: int) -> int:
    """The profiler's count of the matmul FLOPs of one row of `tokens` tokens (no padding, so no mask).

    The profiler, not `FlopCounterMode`: that one tracks modules through global forward hooks, and a Linear with hooks
    makes the first-token layer project keys and values (modules/speedups/first_token.py `_plain`)."""
    with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU], with_flops=True) as profiler:
        model(input_ids=torch.arange(1, tokens + 1).unsqueeze(0))
    return sum(
        event.flops for event in profiler.key_averages() if event.key in ("aten::mm", "aten::addmm", "aten::bmm")
    )


@pytest.mark.parametrize("first_token", [False, True])
@pytest.mark.parametrize("tokens", [1, 7, 40])
def test_model_flops_equals_torchs_count(first_token: bool, tokens: int) -> None:
    # Eager attention: the profiler counts no FLOPs of the CPU SDPA kernel, and eager's are plain bmm.
    config = BertConfig(
        vocab_size=64,
        hidden_size=48,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=80,
        num_labels=3,
        attn_implementation="eager",
    )
    torch.manual_seed(0)
    model = BertForSequenceClassification(config).eval()
    if first_token:
        apply_exact(model, compiled=False)  # what the torch server runs
    sizes = flop_bound.encoder_sizes(config)
    assert sizes == {"hidden": 48, "intermediate": 80, "layers": 3, "heads": 4, "num_labels": 3}
    assert flop_bound.first_token_applies(config)
    expected = flop_bound.model_flops(tokens, **sizes, first_token_last_layer=first_token)
    assert _counted_flops(model, tokens) == expected


def test_encoder_sizes_read_distilbert_names() -> None:
    config = DistilBertConfig(dim=64, n_layers=2, n_heads=4, hidden_dim=96, num_labels=5)
    assert flop_bound.encoder_sizes(config) == {
        "hidden": 64,
        "intermediate": 96,
        "layers": 2,
        "heads": 4,
        "num_labels": 5,
    }
    assert not flop_bound.first_token_applies(config)  # the server's first-token patch skips DistilBERT


def test_parse_served() -> None:
    assert flop_bound.parse_served(["torch-fp32=150", "onnx-int8=320.5"]) == {"torch-fp32": 150.0, "onnx-int8": 320.5}
    with pytest.raises(HFLightningError, match="unknown backend 'torch-int8'"):
        flop_bound.parse_served(["torch-int8=10"])
    with pytest.raises(HFLightningError, match="BACKEND=ROWS_PER_S"):
        flop_bound.parse_served(["onnx-fp32"])
    with pytest.raises(HFLightningError, match="must be positive"):
        flop_bound.parse_served(["onnx-fp32=0"])


def test_read_texts_names_a_missing_column(tmp_path: Path) -> None:
    data = tmp_path / "rows.csv"
    data.write_text("sentence,label\ngood film,1\n")
    assert flop_bound.read_texts(data, "sentence") == ["good film"]
    with pytest.raises(HFLightningError, match="no column 'text'.*--text_column"):
        flop_bound.read_texts(data, "text")
