"""Teacher against students of fewer layers, each trained plain and distilled: test accuracy, fit time, and
`predict` speed on a file, every run in a fresh process.

    MINILM=$(../shared/scripts/get-minilm.sh)
    python benchmarks/distill.py --model $MINILM --data ../shared/data/rotten_tomatoes --layers 1 2 3 4 \
        --out /tmp/distill [--teacher_run /tmp/distill/teacher/version_0]

The recipe is the README's (configs/bert.yaml, lr 5e-5, 2 epochs, fp32 unless `--flags` says otherwise). For each
model: `fit` (with the export, ONNX and int8 files for serving), `test --ckpt_path <best>`, then `predict
--ckpt_path <best>` on `--predict_rows` texts (the train split's, cycled), timed from process start to exit.
Students: `--model.num_layers N` of the same pretrained model, plain and with `--distill.teacher <teacher's export>`
(its scores on the train split are computed once; each distilled fit's time includes reading them, the first one's
also computing them), and with `--augment K` also distilled with `--distill.augment K` (K perturbed copies of each
train row, labelled by the teacher). Prints a markdown table; rows/s and ratios compare only within one run of this
script.
"""

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(args: list[str], log: Path) -> float:
    """Run `main.py args` in a fresh process, output to `log`; seconds from start to exit."""
    start = time.perf_counter()
    with log.open("w") as out:
        done = subprocess.run([sys.executable, str(ROOT / "main.py"), *args], stdout=out, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"failed ({done.returncode}): main.py {' '.join(args)}; see {log}")
    return seconds


def fit_and_test(name: str, flags: list[str], out: Path, extra: list[str]) -> dict:
    """Fit into `out/name/version_0`, test its best checkpoint; the run's folder, fit seconds and test_acc."""
    folder = out / name / "version_0"
    if not (folder / "test_metrics.json").is_file():
        logger = ["--trainer.logger.init_args.save_dir", str(out), "--trainer.logger.init_args.name", name]
        export = ["--export.enabled", "true", "--export.onnx", "true", "--export.quantize", "true"]
        seconds = run(["fit", *flags, *logger, *export, *extra], out / f"{name}.fit.log")
        summary = json.loads((folder / "fit_summary.json").read_text())
        (folder / "bench_fit_seconds.txt").write_text(f"{seconds:.1f}")
        run(["test", *flags, *logger, *extra, "--ckpt_path", summary["best_checkpoint"]], out / f"{name}.test.log")
    summary = json.loads((folder / "fit_summary.json").read_text())
    metrics = json.loads((folder / "test_metrics.json").read_text())["metrics"]
    return {
        "name": name,
        "folder": folder,
        "best": summary["best_checkpoint"],
        "fit_s": float((folder / "bench_fit_seconds.txt").read_text()),
        "test_acc": metrics.get("test_acc"),
        "parameters": summary.get("parameters"),
    }


def predict_speed(result: dict, texts: Path, out: Path) -> None:
    """`predict` on `texts` with the run's best checkpoint, in a fresh process: wall seconds and rows/s."""
    rows = sum(1 for _ in csv.DictReader(texts.open()))
    target = out / f"{result['name']}.predictions.csv"
    seconds = run(
        ["predict", "--ckpt_path", result["best"], "--data.predict_file", str(texts),
         "--predictions.output_path", str(target)],
        out / f"{result['name']}.predict.log",
    )  # fmt: skip
    result["predict_s"], result["predict_rows_s"] = seconds, rows / seconds


def write_texts(data: str, rows: int, path: Path) -> Path:
    from datasets import load_dataset

    train = load_dataset(data, split="train")["text"][:]
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text"])
        for i in range(rows):
            writer.writerow([train[i % len(train)]])
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="the pretrained teacher/student base (a local folder)")
    parser.add_argument("--data", required=True, help="a dataset folder in Hub layout (train/validation/test)")
    parser.add_argument("--layers", type=int, nargs="+", default=[3], help="student depths")
    parser.add_argument("--out", type=Path, required=True, help="where runs and logs go (kept: reruns reuse them)")
    parser.add_argument("--predict_rows", type=int, default=8000)
    parser.add_argument("--augment", type=int, default=0, help="also distil with --distill.augment N (a third row)")
    parser.add_argument("--flags", nargs=argparse.REMAINDER, default=[], help="more flags for every fit and test")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    os.chdir(ROOT)
    flags = ["--config", "configs/bert.yaml", "--model.model_name_or_path", args.model, "--data.dataset", args.data,
             "--model.learning_rate", "5e-5", "--trainer.max_epochs", "2", *args.flags]  # fmt: skip
    texts = write_texts(args.data, args.predict_rows, args.out / f"predict_{args.predict_rows}.csv")

    teacher = fit_and_test("teacher", flags, args.out, [])
    export = teacher["folder"] / "hf_model"
    results = [teacher]
    for layers in args.layers:
        results.append(fit_and_test(f"student{layers}_plain", flags, args.out, ["--model.num_layers", str(layers)]))
        distill = ["--model.num_layers", str(layers), "--distill.teacher", str(export)]
        results.append(fit_and_test(f"student{layers}_distilled", flags, args.out, distill))
        if args.augment:
            augment = [*distill, "--distill.augment", str(args.augment)]
            results.append(fit_and_test(f"student{layers}_distilled_aug{args.augment}", flags, args.out, augment))
    for result in results:
        predict_speed(result, texts, args.out)

    base = teacher["predict_rows_s"]
    print(f"\npredict on {args.predict_rows:,} rows (wall time from start to exit); fits: {' '.join(flags)}\n")
    print("| model | parameters | test_acc | vs teacher (points) | fit s | predict s | predict rows/s | vs teacher |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        points = 100 * (r["test_acc"] - teacher["test_acc"])
        print(f"| {r['name']} | {r['parameters']:,} | {r['test_acc']:.4f} | {points:+.2f} | {r['fit_s']:.0f} | "
              f"{r['predict_s']:.1f} | {r['predict_rows_s']:.1f} | {r['predict_rows_s'] / base:.2f}x |")  # fmt: skip
    print("\nexports (hf_model/ with model.onnx and model.int8.onnx) for serve_load.py:")
    for r in results:
        print(f"  {r['name']}: {r['folder'] / 'hf_model'}")


if __name__ == "__main__":
    main()
