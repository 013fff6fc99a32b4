"""ONNX export of a fine-tuned model: logits parity with PyTorch, int8 accuracy, and CPU speed of all three.

    python benchmarks/onnx_export.py logs/bert/version_0/hf_model --data ../shared/data/rotten_tomatoes

Copies the `hf_model/` export to a temporary folder, writes `model.onnx` and `model.int8.onnx` there with
`modules.outputs.onnx.export_onnx` (what `--export.onnx true --export.quantize true` runs), then on the data's test
split, in file order, in batches of `--batch_size` padded to their longest row:
- the largest |logit difference| between PyTorch fp32 and onnxruntime fp32 over the first `--parity_rows` rows;
- accuracy of PyTorch fp32, onnxruntime fp32 and onnxruntime int8 on the whole split;
- rows/s of each (tokenization excluded: every backend gets the same tokenized batches), best of `--repeats`.
"""

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from datasets import load_dataset
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from modules.outputs.onnx import OnnxLogits, export_onnx


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="an hf_model/ export folder")
    parser.add_argument("--data", required=True, help="dataset name or folder with a test split")
    parser.add_argument("--split", default="test")
    parser.add_argument("--text_column", default="text")
    parser.add_argument("--label_column", default="label")
    parser.add_argument("--parity_rows", type=int, default=500)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    rows = load_dataset(args.data, split=args.split)
    texts, labels = list(rows[args.text_column]), np.asarray(list(rows[args.label_column]))
    work = Path(tempfile.mkdtemp(prefix="onnx-bench-"))
    folder = work / "hf_model"
    shutil.copytree(args.model, folder)
    start = time.perf_counter()
    export_onnx(folder, quantize=True)
    print(f"export (fp32 + int8): {time.perf_counter() - start:.1f} s; "
          f"model.onnx {(folder / 'model.onnx').stat().st_size / 2**20:.1f} MiB, "
          f"model.int8.onnx {(folder / 'model.int8.onnx').stat().st_size / 2**20:.1f} MiB")  # fmt: skip

    tokenizer = AutoTokenizer.from_pretrained(folder)
    batches = [
        tokenizer(texts[i : i + args.batch_size], padding=True, truncation=True, return_tensors="np")
        for i in range(0, len(texts), args.batch_size)
    ]
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()

    def torch_logits(batch: dict) -> np.ndarray:
        with torch.inference_mode():
            return model(**{k: torch.from_numpy(v) for k, v in batch.items()}).logits.numpy()

    backends = {
        "pytorch fp32": torch_logits,
        "onnxruntime fp32": OnnxLogits(folder, threads=args.threads),
        "onnxruntime int8": OnnxLogits(folder, quantized=True, threads=args.threads),
    }
    results = {}
    for name, run in backends.items():
        best = float("inf")
        for _ in range(args.repeats):
            start = time.perf_counter()
            logits = np.concatenate([run(batch) for batch in batches])
            best = min(best, time.perf_counter() - start)
        results[name] = (logits, best)

    reference = results["pytorch fp32"][0]
    parity = np.abs(results["onnxruntime fp32"][0][: args.parity_rows] - reference[: args.parity_rows]).max()
    print(f"max |logit difference|, pytorch fp32 vs onnxruntime fp32, first {args.parity_rows} rows: {parity:.2e}")
    baseline = results["pytorch fp32"][1]
    print(f"{'backend':<18} {'accuracy':>9} {'rows/s':>8} {'vs pytorch':>10}   ({len(texts)} rows of {args.split}, "
          f"batch {args.batch_size}, {args.threads} threads)")  # fmt: skip
    for name, (logits, seconds) in results.items():
        accuracy = float((logits.argmax(-1) == labels).mean())
        print(f"{name:<18} {accuracy:>9.4f} {len(texts) / seconds:>8.1f} {baseline / seconds:>9.2f}x")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
