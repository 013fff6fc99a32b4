"""ONNX export of a Hugging Face export folder (`model.onnx`, optionally `model.int8.onnx`) and `OnnxLogits`,
which runs it with onnxruntime.

At the end of fit: `--export.onnx true [--export.quantize true]`. After the fact, from a checkpoint:
`python main.py export CHECKPOINT OUTPUT_DIR --onnx [--quantize]`; from an `hf_model/` folder:
`python main.py export HF_MODEL_DIR --onnx [--quantize]`.
"""

import importlib.util
import warnings
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification

from modules.errors import HFLightningError

ONNX_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
# Opset 17 has LayerNormalization as one op; onnxruntime has run it for years.
OPSET = 17
_INSTALL = "install it with `pip install -e '.[onnx]'`"


def require_onnxruntime() -> None:
    """Fail in one line, before any export work, when onnxruntime or onnx is missing."""
    for name in ("onnx", "onnxruntime"):
        if importlib.util.find_spec(name) is None:
            raise HFLightningError(f"ONNX export and onnxruntime inference need the `{name}` package: {_INSTALL}")


def how_to_export(model_dir: str | Path, quantized: bool) -> str:
    flags = "--export.onnx true --export.quantize true" if quantized else "--export.onnx true"
    return (
        f"write it with `python main.py export {model_dir} --onnx{' --quantize' if quantized else ''}`, "
        f"or at the end of fit with `{flags}`"
    )


class _Logits(torch.nn.Module):
    """Positional inputs in, logits out: the graph's inputs and single output get stable names."""

    def __init__(self, model: torch.nn.Module, names: list[str]) -> None:
        super().__init__()
        self.model = model
        self.names = names

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return self.model(**dict(zip(self.names, tensors))).logits


def export_onnx(model_dir: str | Path, quantize: bool = False) -> Path:
    """Write `model_dir/model.onnx` (fp32, dynamic batch and sequence axes) from the Hugging Face model in
    `model_dir`, and `model.int8.onnx` (int8 dynamic quantization of the linear layers) when `quantize`.

    Uses the TorchScript exporter (`dynamo=False`): it needs no onnxscript, takes `dynamic_axes` directly and
    traces these encoder classifiers exactly (docs/serve.md). Returns the path of `model.onnx`.
    """
    from modules.model.build import accepted_inputs  # here, not above: the server's OnnxLogits needs no datasets

    require_onnxruntime()
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise HFLightningError(f"{model_dir} has no config.json: pass the Hugging Face export folder (hf_model/)")
    # Eager attention: the traced graph is plain matmul/softmax, which every onnxruntime build runs.
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, attn_implementation="eager").eval()
    names = list(accepted_inputs(model))
    example = tuple(torch.ones(2, 8, dtype=torch.long) for _ in names)
    output = model_dir / ONNX_FILE
    axes = {name: {0: "batch", 1: "sequence"} for name in names} | {"logits": {0: "batch"}}
    with torch.no_grad(), warnings.catch_warnings():
        # The tracer warns that a padding check in transformers' mask code becomes a constant: it compares the mask's
        # length with the input's, always equal here; tests/outputs/test_onnx.py runs other batch sizes and lengths.
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Exporting aten::index operator")
        torch.onnx.export(
            _Logits(model, names),
            example,
            str(output),
            input_names=names,
            output_names=["logits"],
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )
    if quantize:
        quantize_onnx(output, model_dir / INT8_FILE)
    return output


def quantize_onnx(source: Path, target: Path) -> Path:
    """Int8 dynamic quantization (weights int8, activations quantized per batch at run time) of `source`.

    Per-channel scales with 7-bit weight ranges (`reduce_range`): on CPUs without VNNI (AVX2-only ones) 8-bit
    products can saturate, and per-tensor scales cost MiniLM 0.6 points of accuracy on rotten_tomatoes where
    per-channel ones cost at most 0.3 (benchmarks/README.md, "ONNX export").
    """
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    # It logs a hint to run onnxruntime's pre-processing first: measured, it changed neither accuracy nor speed here.
    quiet = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)
    try:
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, per_channel=True, reduce_range=True)
    finally:
        logging.getLogger().setLevel(quiet)
    return target


class OnnxLogits:
    """Logits of an ONNX export, from a tokenizer's numpy batch, with onnxruntime on the CPU.

    Args:
        model_dir: The Hugging Face export folder holding `model.onnx` (written by `--export.onnx true`).
        quantized: Load `model.int8.onnx` (written by `--export.quantize true`) instead.
        threads: onnxruntime intra-op threads; None lets onnxruntime use every physical core.
    """

    def __init__(self, model_dir: str | Path, quantized: bool = False, threads: int | None = None) -> None:
        require_onnxruntime()
        import onnxruntime

        self.path = Path(model_dir) / (INT8_FILE if quantized else ONNX_FILE)
        if not self.path.is_file():
            raise HFLightningError(f"{self.path} does not exist: {how_to_export(model_dir, quantized)}")
        options = onnxruntime.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        self.session = onnxruntime.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        self.input_names = [node.name for node in self.session.get_inputs()]

    def __call__(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        """float32 logits [rows, labels] of `input_ids`, `attention_mask` (and `token_type_ids` when the model takes
        them; zeros if the batch lacks them); other keys are ignored."""
        feed = {}
        for name in self.input_names:
            if name in batch:
                feed[name] = np.asarray(batch[name], dtype=np.int64)
            elif name == "token_type_ids":
                feed[name] = np.zeros_like(np.asarray(batch["input_ids"], dtype=np.int64))
            else:
                raise KeyError(f"the batch has no `{name}`: pass the tokenizer's output (return_tensors='np')")
        (logits,) = self.session.run(["logits"], feed)
        return logits.astype(np.float32, copy=False)


if __name__ == "__main__":  # the old door: an alias of `python main.py export HF_MODEL_DIR --onnx [--quantize]`
    import sys

    from modules.outputs.export import main

    main([*sys.argv[1:], "--onnx"])
