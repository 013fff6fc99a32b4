"""ONNX export of a fine-tuned model: logits parity with PyTorch, int8 accuracy, and CPU speed of all three.

    python benchmarks/onnx_export.py logs/bert/version_0/hf_model --data ../shared/data/rotten_tomatoes

Copies the `hf_model/` export to a temporary folder, writes `model.onnx` and `model.int8.onnx` there with
`modules.outputs.onnx.export_onnx` (what `--export.onnx true --export.quantize true` runs), then on the data's test
split, in file order, in batches of `--batch_size` padded to their longest row:
- the largest |logit difference| between PyTorch fp32 and onnxruntime fp32 over the first `--parity_rows` rows;
- the task's score of PyTorch fp32, onnxruntime fp32 and onnxruntime int8 on the whole split, deciding as `predict`
  and `serve` do, by the rule the export records (`DecisionRule.from_config`: per-label tuned thresholds, else the
  run's `--model.threshold`, else 0.5; a binary decision for a target precision or recall): accuracy (single-label),
  micro-F1 (multi-label), RMSE (regression). The export's weights hold the calibration, so its logits are the
  calibrated ones;
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
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

from modules.data.tasks import TASKS
from modules.decisions.record import DecisionRule
from modules.decisions.thresholds import predicted
from modules.model.loss import task_outputs
from modules.outputs.onnx import OnnxLogits, export_onnx

METRICS = {"single_label": "accuracy", "multi_label": "micro-F1", "regression": "RMSE"}


def gold(values: list, task: str, label2id: dict[str, int], num_labels: int) -> np.ndarray:
    """The split's labels as the task scores them: ids (single-label), a 0/1 row per input (multi-label: lists of
    names or ids, or already 0/1 rows), values (regression). Label names map through `label2id`."""
    if task == "regression":
        return np.asarray(values, dtype=np.float64)
    if task == "single_label":
        return np.asarray([label2id[v] if isinstance(v, str) else int(v) for v in values])
    rows = np.zeros((len(values), num_labels))
    for row, labels in zip(rows, values):
        if (
            len(labels) == num_labels
            and all(v in (0, 1) for v in labels)
            and not any(isinstance(v, str) for v in labels)
        ):
            row[:] = labels  # already a 0/1 row
        else:
            row[[label2id[v] if isinstance(v, str) else int(v) for v in labels]] = 1
    return rows


def score(task: str, logits: np.ndarray, labels: np.ndarray, rule: DecisionRule, names: list[str]) -> float:
    """Accuracy (single-label), micro-F1 (multi-label) of the labels `rule` decides, or RMSE (regression)."""
    if task == "regression":
        return float(np.sqrt(((logits.reshape(-1) - labels) ** 2).mean()))
    decided = predicted(task, task_outputs(task, torch.from_numpy(logits).float()), rule, names).numpy()
    if task == "single_label":
        return float((decided == labels).mean())
    true_positives = float(((decided == 1) & (labels == 1)).sum())
    return 2 * true_positives / max(float(decided.sum() + labels.sum()), 1.0)


def describe_rule(task: str, rule: DecisionRule) -> str:
    """The rule in the table's header: `@0.5`, `@per-label` or `@pos>0.3`."""
    if rule.decision is not None:
        return f" @{rule.decision[0]}>{rule.decision[1]:.3g}"
    if task != "multi_label":
        return ""
    return " @per-label" if isinstance(rule.threshold, tuple) else f" @{rule.threshold:g}"


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

    config = AutoConfig.from_pretrained(args.model)
    task = TASKS[config.problem_type or ("regression" if config.num_labels == 1 else "single_label_classification")]
    rule = DecisionRule.from_config(config)
    names = [config.id2label[i] for i in range(config.num_labels)]
    rows = load_dataset(args.data, split=args.split)
    texts = list(rows[args.text_column])
    label2id = {name: i for i, name in enumerate(names)}  # from id2label, the names the rule and answers use
    labels = gold(list(rows[args.label_column]), task, label2id, config.num_labels)
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
    metric = METRICS[task] + describe_rule(task, rule)
    print(f"{'backend':<18} {metric:>14} {'rows/s':>8} {'vs pytorch':>10}   ({len(texts)} rows of {args.split}, "
          f"{task}, batch {args.batch_size}, {args.threads} threads)")  # fmt: skip
    for name, (logits, seconds) in results.items():
        value = score(task, logits, labels, rule, names)
        print(f"{name:<18} {value:>14.4f} {len(texts) / seconds:>8.1f} {baseline / seconds:>9.2f}x")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
