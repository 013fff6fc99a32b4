"""Served rows/s of each serving backend as a share of its FLOP bound on this machine (issue 32).

    python benchmarks/flop_bound.py MODEL_FOLDER \
        --data_file ../shared/data/rotten_tomatoes/data/test-00000-of-00001.parquet \
        --served torch-fp32=150 onnx-fp32=170 onnx-int8=320

share = served rows/s x FLOPs per row / matmul peak of the backend's number format; "bound rows/s" is that peak /
FLOPs per row, what a backend would serve if every FLOP of a row ran at the peak.
- Peaks, measured on the spot with `--threads` threads: the best GFLOP/s (2*M*N*K / seconds, best of `--repeats`
  timings after two untimed calls) of products at a BERT encoder's shapes, (`--peak_rows` x `--peak_tokens` tokens x
  hidden) @ (hidden x hidden) and @ (hidden x 4*hidden) for each `--peak_hidden`. fp32: torch and onnxruntime MatMul
  (the better counts); bf16: torch (the script says whether this CPU runs it natively, from
  `torch.backends.cpu.get_cpu_capability()` and the avx512_bf16 / amx_bf16 flags of /proc/cpuinfo); int8:
  onnxruntime MatMulInteger (uint8 x int8 -> int32), alone and after DynamicQuantizeLinear of fp32 activations with
  per-column weight zero points (the node pattern `--export.quantize` writes; the better counts).
- FLOPs per row: `model_flops` over each row of `--data_file`'s `--text_column`, tokenized by the model folder's
  tokenizer and cut at the server's max_length (or `--tokens` for every row), averaged. The torch backends run the
  last layer on the first token only (modules/speedups/first_token.py), the ONNX exports run it whole: each backend
  is charged the FLOPs it computes.
Prints the peaks, then a markdown table. Numbers only: nothing passes or fails on them.
"""

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from modules.errors import HFLightningError

# backend (as `serve --backend` / `--precision` name it) -> (number format, last layer on the first token only)
BACKENDS = {
    "torch-fp32": ("fp32", True),
    "torch-bf16": ("bf16", True),
    "onnx-fp32": ("fp32", False),
    "onnx-int8": ("int8", False),
}
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def model_flops(
    tokens: int,
    hidden: int,
    intermediate: int,
    layers: int,
    heads: int,
    num_labels: int,
    first_token_last_layer: bool = False,
) -> int:
    """FLOPs (2 per multiply-add) of one row of `tokens` tokens through a BERT-style encoder classifier.

    Per layer: query, key, value and output projections 4 * 2*T*H^2, feed-forward 2 * 2*T*H*I, attention scores and
    their weighted sum of values 2 * 2*T^2*H; then the head on the first token: a dense H x H (BERT's pooler,
    RoBERTa's and ELECTRA's head dense, DistilBERT's pre_classifier) and the H x num_labels classifier, 2*H^2 + 2*H*L.
    Embeddings, layer norms, softmax and activations are not counted (no matmuls).
    With `first_token_last_layer` (what the torch backends run) the last layer computes position 0 only, its key and
    value projections folded into the query: query, W_k^T q, W_v mix and output projections 4 * 2*H^2, feed-forward
    2 * 2*H*I, scores and mix over the T positions in each head's folded H-wide space 2 * 2*heads*T*H.
    """
    full_layer = 4 * 2 * tokens * hidden**2 + 2 * 2 * tokens * hidden * intermediate + 2 * 2 * tokens**2 * hidden
    if first_token_last_layer:
        last_layer = 4 * 2 * hidden**2 + 2 * 2 * hidden * intermediate + 2 * 2 * heads * tokens * hidden
    else:
        last_layer = full_layer
    head = 2 * hidden**2 + 2 * hidden * num_labels
    return (layers - 1) * full_layer + last_layer + head


def encoder_sizes(config: object) -> dict[str, int]:
    """hidden, intermediate, layers, heads and num_labels of a transformers config (BERT's names, or DistilBERT's
    `dim`, `hidden_dim`, `n_layers`, `n_heads`)."""

    def first(*names: str) -> int:
        for name in names:
            value = getattr(config, name, None)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
        raise HFLightningError(
            f"the model's config.json has none of {', '.join(names)}: pass a BERT-style encoder's folder "
            "(BERT, RoBERTa, ELECTRA, DistilBERT, MiniLM)"
        )

    return {
        "hidden": first("hidden_size", "dim"),
        "intermediate": first("intermediate_size", "hidden_dim"),
        "layers": first("num_hidden_layers", "n_layers"),
        "heads": first("num_attention_heads", "n_heads"),
        "num_labels": first("num_labels"),
    }


def first_token_applies(config: object) -> bool:
    """Whether the torch server's first-token patch covers this model: its sequence classifier is one of
    `FIRST_TOKEN_HEADS` (modules/speedups/first_token.py)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES

    from modules.speedups.first_token import FIRST_TOKEN_HEADS

    return MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES.get(config.model_type) in FIRST_TOKEN_HEADS


def read_texts(path: Path, column: str) -> list[str]:
    """The `column` of a parquet, csv/tsv or json-lines file, as strings."""
    import pyarrow.csv
    import pyarrow.json
    import pyarrow.parquet

    if not path.is_file():
        raise HFLightningError(f"--data_file {path} does not exist: pass a parquet, csv or json-lines file of texts")
    readers = {
        ".parquet": pyarrow.parquet.read_table,
        ".csv": pyarrow.csv.read_csv,
        ".tsv": lambda p: pyarrow.csv.read_csv(p, parse_options=pyarrow.csv.ParseOptions(delimiter="\t")),
        ".json": pyarrow.json.read_json,
        ".jsonl": pyarrow.json.read_json,
    }
    if path.suffix not in readers:
        raise HFLightningError(f"--data_file {path}: unknown suffix {path.suffix!r}, use one of {', '.join(readers)}")
    table = readers[path.suffix](path)
    if column not in table.column_names:
        raise HFLightningError(
            f"--data_file {path} has no column {column!r} (it has {', '.join(table.column_names)}): "
            "name the text column with --text_column"
        )
    return [str(text) for text in table.column(column).to_pylist()]


def token_counts(folder: Path, texts: list[str], max_length: int | None, config: object) -> tuple[list[int], int]:
    """Tokens per text as the server encodes them (truncated at its max_length rule), and that max_length."""
    from transformers import AutoTokenizer

    from modules.data.contract import clamp_max_length

    tokenizer = AutoTokenizer.from_pretrained(folder)
    longest = clamp_max_length(max_length, config, tokenizer.model_max_length)
    encoded = tokenizer(texts, truncation=True, max_length=longest)["input_ids"]
    return [len(ids) for ids in encoded], longest


def parse_served(entries: list[str]) -> dict[str, float]:
    """`torch-fp32=150` pairs -> {backend: rows/s}."""
    served = {}
    for entry in entries:
        name, _, value = entry.partition("=")
        if name not in BACKENDS:
            raise HFLightningError(f"--served {entry}: unknown backend {name!r}, use one of {', '.join(BACKENDS)}")
        try:
            served[name] = float(value)
        except ValueError:
            raise HFLightningError(f"--served {entry}: write BACKEND=ROWS_PER_S, e.g. {name}=150") from None
        if served[name] <= 0:
            raise HFLightningError(f"--served {entry}: rows/s must be positive")
    return served


def best_rate(call: Callable[[], object], flops: int, repeats: int, min_seconds: float = 0.1) -> float:
    """Best GFLOP/s of `call` over `repeats` timings, each of enough back-to-back calls to last `min_seconds`."""
    call(), call()  # the first calls pay for kernel selection, prepacking and page faults
    start = time.perf_counter()
    call()
    calls = max(1, int(min_seconds / max(time.perf_counter() - start, 1e-6)))
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            call()
        best = max(best, flops * calls / (time.perf_counter() - start) / 1e9)
    return best


def torch_rate(dtype: torch.dtype, m: int, k: int, n: int, repeats: int) -> float:
    """x (m, k) times a Linear's weight (n, k) transposed, as `nn.Linear` multiplies."""
    x, weight, out = torch.randn(m, k, dtype=dtype), torch.randn(n, k, dtype=dtype), torch.empty(m, n, dtype=dtype)
    with torch.inference_mode():
        return best_rate(lambda: torch.matmul(x, weight.t(), out=out), 2 * m * n * k, repeats)


def onnx_graph(kind: str, m: int, k: int, n: int) -> tuple[bytes, np.ndarray, np.ndarray]:
    """A one-product ONNX model (serialized), its input and an output buffer. kind: `fp32` (MatMul), `int8`
    (MatMulInteger of uint8 activations and int8 weights), `int8-dynamic` (fp32 activations through
    DynamicQuantizeLinear, MatMulInteger with per-column weight zero points, then rescaled to fp32)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, initializers = [], []
    if kind == "fp32":
        x = rng.standard_normal((m, k), dtype=np.float32)
        initializers.append(numpy_helper.from_array(rng.standard_normal((k, n), dtype=np.float32), "w"))
        nodes.append(helper.make_node("MatMul", ["x", "w"], ["y"]))
        x_type, y_type, y_dtype = TensorProto.FLOAT, TensorProto.FLOAT, np.float32
    elif kind == "int8":
        x = rng.integers(0, 256, (m, k), dtype=np.uint8)
        initializers.append(numpy_helper.from_array(rng.integers(-64, 64, (k, n), dtype=np.int8), "w"))
        nodes.append(helper.make_node("MatMulInteger", ["x", "w"], ["y"]))
        x_type, y_type, y_dtype = TensorProto.UINT8, TensorProto.INT32, np.int32
    elif kind == "int8-dynamic":
        x = rng.standard_normal((m, k), dtype=np.float32)
        initializers += [
            numpy_helper.from_array(rng.integers(-64, 64, (k, n), dtype=np.int8), "w"),  # 7-bit, as reduce_range
            numpy_helper.from_array(np.zeros(n, dtype=np.int8), "w_zero"),
            numpy_helper.from_array(np.full(n, 0.01, dtype=np.float32), "w_scale"),
        ]
        nodes += [
            helper.make_node("DynamicQuantizeLinear", ["x"], ["xq", "x_scale", "x_zero"]),
            helper.make_node("MatMulInteger", ["xq", "w", "x_zero", "w_zero"], ["y32"]),
            helper.make_node("Cast", ["y32"], ["yf"], to=TensorProto.FLOAT),
            helper.make_node("Mul", ["x_scale", "w_scale"], ["scale"]),
            helper.make_node("Mul", ["yf", "scale"], ["y"]),
        ]
        x_type, y_type, y_dtype = TensorProto.FLOAT, TensorProto.FLOAT, np.float32
    else:
        raise ValueError(kind)
    graph = helper.make_graph(
        nodes,
        kind,
        [helper.make_tensor_value_info("x", x_type, [m, k])],
        [helper.make_tensor_value_info("y", y_type, [m, n])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model.SerializeToString(), x, np.empty((m, n), dtype=y_dtype)


def onnx_rate(kind: str, m: int, k: int, n: int, repeats: int, threads: int) -> float:
    """GFLOP/s of `onnx_graph(kind, ...)` in onnxruntime on the CPU, output bound to a kept buffer."""
    import onnxruntime

    model, x, out = onnx_graph(kind, m, k, n)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    binding = session.io_binding()
    binding.bind_cpu_input("x", x)
    binding.bind_ortvalue_output("y", onnxruntime.OrtValue.ortvalue_from_numpy(out))
    return best_rate(lambda: session.run_with_iobinding(binding), 2 * m * n * k, repeats)


def cpu_flags() -> set[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def machine() -> tuple[str, bool]:
    """A line naming the CPU and what runs natively on it, and whether bf16 is native."""
    first_block = Path("/proc/cpuinfo").read_text().split("\n\n")[0].splitlines()
    info = {key.strip(): value.strip() for key, _, value in (line.partition(":") for line in first_block)}
    flags = cpu_flags()
    native = [flag for flag in NATIVE_BF16_FLAGS if flag in flags]
    capability = torch.backends.cpu.get_cpu_capability()
    bf16 = (
        f"bf16 native ({', '.join(native)})"
        if native
        else f"bf16 emulated (no {' / '.join(NATIVE_BF16_FLAGS)} in /proc/cpuinfo)"
    )
    vnni = [flag for flag in ("avx512_vnni", "avx_vnni") if flag in flags]
    line = (
        f"{info.get('model name', '?')} (cpu family {info.get('cpu family', '?')}, model {info.get('model', '?')}), "
        f"torch capability {capability}, {bf16}, int8 VNNI: {', '.join(vnni) or 'none'}; "
        f"torch {torch.__version__}"
    )
    return line, bool(native)


def measure_peaks(args: argparse.Namespace) -> tuple[dict[str, float], list[dict]]:
    """The best GFLOP/s of each number format at the encoder shapes, and every measurement."""
    engines = [
        ("fp32", "torch", lambda m, k, n: torch_rate(torch.float32, m, k, n, args.repeats)),
        ("fp32", "onnxruntime MatMul", lambda m, k, n: onnx_rate("fp32", m, k, n, args.repeats, args.threads)),
        ("bf16", "torch", lambda m, k, n: torch_rate(torch.bfloat16, m, k, n, args.repeats)),
        ("int8", "onnxruntime MatMulInteger", lambda m, k, n: onnx_rate("int8", m, k, n, args.repeats, args.threads)),
        (
            "int8",
            "onnxruntime DynamicQuantizeLinear+MatMulInteger",
            lambda m, k, n: onnx_rate("int8-dynamic", m, k, n, args.repeats, args.threads),
        ),
    ]
    m = args.peak_rows * args.peak_tokens
    shapes = [(m, hidden, out) for hidden in args.peak_hidden for out in (hidden, 4 * hidden)]
    measurements = []
    for number_format, engine, rate in engines:
        for m, k, n in shapes:
            gflops = rate(m, k, n)
            measurements.append({"format": number_format, "engine": engine, "m": m, "k": k, "n": n, "gflops": gflops})
            print(f"  {number_format:<5} {engine:<48} ({m} x {k}) @ ({k} x {n}): {gflops:7.1f} GFLOP/s", flush=True)
    peaks = {}
    for row in measurements:
        peaks[row["format"]] = max(peaks.get(row["format"], 0.0), row["gflops"])
    return peaks, measurements


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="a Hugging Face model folder (config.json and its tokenizer)")
    parser.add_argument("--data_file", type=Path, help="parquet, csv or json-lines file whose texts give FLOPs/row")
    parser.add_argument("--text_column", default="text")
    parser.add_argument("--tokens", type=int, help="tokens per row for every row, instead of --data_file")
    parser.add_argument("--max_length", type=int, help="the server's --max_length; default its own (the model's)")
    parser.add_argument("--served", nargs="*", default=[], help="served rows/s per backend, e.g. torch-fp32=150")
    parser.add_argument("--threads", type=int, default=2, help="torch and onnxruntime threads: the server's cores")
    parser.add_argument("--repeats", type=int, default=5, help="timings per product, best kept")
    parser.add_argument("--peak_rows", type=int, default=32, help="rows of a pass whose products set the peaks")
    parser.add_argument("--peak_tokens", type=int, default=64, help="tokens per row of those products")
    parser.add_argument("--peak_hidden", type=int, nargs="+", default=[384, 768], help="hidden sizes (MiniLM, BERT)")
    parser.add_argument("--json", type=Path, help="also write peaks, measurements and the table here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    from transformers import AutoConfig

    args = parse_args(argv)
    served = parse_served(args.served)
    if (args.data_file is None) == (args.tokens is None):
        raise HFLightningError("give the row length once: --data_file FILE (its texts, tokenized) or --tokens N")
    if args.tokens is not None and args.tokens < 1:
        raise HFLightningError(f"--tokens {args.tokens}: a row has at least 1 token")
    if not (args.model / "config.json").is_file():
        raise HFLightningError(f"{args.model} has no config.json: pass a Hugging Face model folder (e.g. hf_model/)")
    config = AutoConfig.from_pretrained(args.model)
    sizes = encoder_sizes(config)
    if args.tokens is not None:
        counts, source = [args.tokens], f"--tokens {args.tokens}"
    else:
        counts, longest = token_counts(
            args.model, read_texts(args.data_file, args.text_column), args.max_length, config
        )
        source = f"{len(counts)} texts of {args.data_file.name}, cut at {longest}"
    if not counts:
        raise HFLightningError(f"--data_file {args.data_file} has no rows")
    first_token = first_token_applies(config)
    flops = {
        name: sum(model_flops(t, **sizes, first_token_last_layer=trim) for t in counts) / len(counts)
        for name, trim in (("whole", False), ("first_token", True))
    }

    torch.set_num_threads(args.threads)
    line, _ = machine()
    print(f"machine: {line}; {args.threads} threads")
    print(
        f"model: {args.model} ({config.model_type}, {sizes['layers']} layers, hidden {sizes['hidden']}, "
        f"intermediate {sizes['intermediate']}, {sizes['num_labels']} labels); "
        f"tokens/row: mean {np.mean(counts):.1f} over {source}"
    )
    who = "the torch backends" if first_token else "which the torch server does not apply to this model"
    print(
        f"FLOPs/row: {flops['whole'] / 1e6:.4g} MFLOP whole, {flops['first_token'] / 1e6:.4g} MFLOP with the last "
        f"layer on the first token ({who})"
    )
    # Other jobs on a shared machine lower every rate: the load average says how much the peaks can be trusted.
    load_before = os.getloadavg()[0]
    print(f"matmul peaks ({args.threads} threads, best of {args.repeats}; load average {load_before:.2f}):")
    start = time.perf_counter()
    peaks, measurements = measure_peaks(args)
    print(
        f"peaks: {', '.join(f'{name} {value:.1f}' for name, value in peaks.items())} GFLOP/s "
        f"(measured in {time.perf_counter() - start:.0f} s; load average after {os.getloadavg()[0]:.2f})\n"
    )

    table = []
    print("| backend | format | peak GFLOP/s | FLOPs/row | served rows/s | bound rows/s | share |")
    print("|---|---|---|---|---|---|---|")
    for backend, (number_format, trims) in BACKENDS.items():
        per_row = flops["first_token" if trims and first_token else "whole"]
        bound = peaks[number_format] * 1e9 / per_row
        rate = served.get(backend)
        share = None if rate is None else rate / bound
        table.append(
            {"backend": backend, "format": number_format, "peak_gflops": peaks[number_format], "flops_per_row": per_row}
            | {"served_rows_per_s": rate, "bound_rows_per_s": bound, "share": share}
        )
        print(
            f"| {backend} | {number_format} | {peaks[number_format]:.1f} | {per_row / 1e6:.4g} M | "
            f"{'-' if rate is None else f'{rate:.1f}'} | {bound:.1f} | {'-' if share is None else f'{share:.1%}'} |"
        )
    if args.json:
        record = {"machine": line, "threads": args.threads, "load_average": load_before, "model": str(args.model)}
        record |= {"sizes": sizes}
        record |= {"tokens_mean": float(np.mean(counts)), "source": source, "flops_per_row": flops}
        record |= {"peaks": peaks, "measurements": measurements, "table": table}
        args.json.write_text(json.dumps(record, indent=2, default=str))


if __name__ == "__main__":
    try:
        main()
    except HFLightningError as error:
        sys.exit(f"error: {error}")
