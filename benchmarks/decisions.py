"""What calibration and the tuned thresholds do on a fitted run's test split, and that every consumer agrees.

    python benchmarks/decisions.py --config configs/bert.yaml --model.model_name_or_path $MINILM \
        --data.dataset ../shared/data/rotten_tomatoes --ckpt_path best

Takes `test`'s flags (a fitted run's config and `--ckpt_path`), runs `test` in-process, then prints, from the test
split's outputs:
- rows; single-label accuracy from raw and from calibrated scores (temperature scaling keeps every argmax);
  multi-label macro/micro F1 at the tuned thresholds and at `--model.threshold` on raw scores;
- ECE (15 bins) before and after calibration, and the ratio;
- the largest |probability difference| between `predict`'s file (the checkpoint, calibrated in the module) and
  `transformers.pipeline(..., top_k=None)` on the run's `hf_model/` export (calibration folded into its weights);
- rows in `test_errors.csv` against the wrong rows counted here (when the test report wrote one).
"""

import csv
import json
import sys
import tempfile
from pathlib import Path

from modules.cli.app import cli_main
from modules.decisions.calibration import expected_calibration_error
from modules.decisions.thresholds import f1_scores
from modules.model.loss import task_outputs
from modules.runs.paths import run_folder


def main(args: list[str]) -> None:
    cli = cli_main(["test", *args])
    module, folder = cli.model, run_folder(cli.trainer)
    outputs, task = module.test_outputs, module.task
    multi_label = task == "multi_label"
    raw = task_outputs(task, outputs.logits)
    calibrated = task_outputs(task, module.calibrated(outputs.logits))
    decided = module.decide(outputs.logits)
    print(f"rows: {len(outputs)}  task: {task}")
    if multi_label:
        untuned = raw > float(module.hparams.threshold)
        wrong = int((decided.bool() != outputs.labels.bool()).any(-1).sum())
        (tuned_macro, tuned_micro), (raw_macro, raw_micro) = (f1_scores(p, outputs.labels) for p in (decided, untuned))
        print(f"macro-F1 tuned: {tuned_macro:.4f}  at {module.hparams.threshold}: {raw_macro:.4f}")
        print(f"micro-F1 tuned: {tuned_micro:.4f}  at {module.hparams.threshold}: {raw_micro:.4f}")
    else:
        raw_acc = float((raw.argmax(-1) == outputs.labels).float().mean())
        calibrated_acc = float((calibrated.argmax(-1) == outputs.labels).float().mean())
        wrong = int((decided != outputs.labels).sum())
        print(f"accuracy raw: {raw_acc:.6f}  calibrated: {calibrated_acc:.6f}  decided: {1 - wrong / len(outputs):.6f}")
    before = expected_calibration_error(raw, outputs.labels, multi_label)
    after = expected_calibration_error(calibrated, outputs.labels, multi_label)
    print(f"ECE before: {before:.4f}  after: {after:.4f}  ratio: {after / max(before, 1e-12):.3f}")

    errors = folder / "test_errors.csv"
    if errors.is_file():
        with errors.open() as f:
            print(f"test_errors.csv rows: {sum(1 for _ in csv.DictReader(f))}  wrong rows: {wrong}")

    export = folder / "hf_model"
    if not (export / "config.json").is_file():
        print("no hf_model/ export in the run folder: pipeline comparison skipped")
        return
    predictions = Path(tempfile.mkdtemp()) / "predictions.jsonl"
    cli_main(["predict", *args, "--predictions.output_path", str(predictions)])
    rows = [json.loads(line) for line in predictions.read_text().split("\n") if line]  # not splitlines: U+2028 in texts
    from transformers import pipeline

    column = cli.datamodule.text_column
    texts = [row[column] for row in rows]
    classifier = pipeline("text-classification", model=str(export), top_k=None, function_to_apply=(
        "sigmoid" if multi_label else "softmax"), truncation=True)  # fmt: skip
    largest = 0.0
    for row, scores in zip(rows, classifier(texts, batch_size=64)):
        from_pipeline = {item["label"]: item["score"] for item in scores}
        largest = max(largest, max(abs(p - from_pipeline[label]) for label, p in row["probabilities"].items()))
    print(f"predict vs pipeline(top_k=None) on the export: largest |probability difference| {largest:.2e} "
          f"over {len(rows)} rows")  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1:])
