"""`predict` on a large file against `transformers.pipeline(..., batch_size=32)`: rows/s, labels, peak RSS.

    python benchmarks/predict_speed.py logs/bert/version_0/checkpoints/BEST.ckpt --data ../shared/data/rotten_tomatoes \
        --rows 20000 200000

Writes a CSV of `--rows` texts (the data's train split, cycled) for each size, then in fresh processes, one at a time:
- ours: `python main.py predict --ckpt_path CKPT --data.predict_file FILE --predictions.output_path OUT.csv`;
- pipeline: `pipeline("text-classification", model=<the run's hf_model>, batch_size=32)` over the same texts, with
  the same truncation to the model's max_length, writing its labels to a CSV (only for the first size by default:
  `--pipeline_rows`).
Each is timed from process start to exit (loading, tokenization and writing included) and its peak RSS read from the
kernel (the child's own `ru_maxrss`). Prints rows/s, peak RSS, and whether the labels are identical.
"""

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PIPELINE = """
import csv, sys, torch
from transformers import pipeline
torch.set_num_threads({threads})
texts = [row["text"] for row in csv.DictReader(open({source!r}))]
classify = pipeline("text-classification", model={model!r}, batch_size=32, device="cpu")
with open({output!r}, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["prediction"])
    for answer in classify(texts, truncation=True, max_length={max_length}):
        writer.writerow([answer["label"]])
"""


def run(command: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (GB) of a child process, from its own rusage (`wait4`)."""
    with tempfile.TemporaryFile("w+") as log:
        start = time.perf_counter()
        child = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, text=True)
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode != 0:
            log.seek(0)
            sys.exit(f"{' '.join(command[:4])} failed:\n{log.read()[-3000:]}")
    return seconds, usage.ru_maxrss / 2**20


def labels(path: Path) -> list[str]:
    with path.open() as f:
        return [row["prediction"] for row in csv.DictReader(f)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="a .ckpt of a fit whose run folder has hf_model/")
    parser.add_argument("--data", required=True, help="dataset folder or name whose train split gives the texts")
    parser.add_argument("--rows", type=int, nargs="+", default=[20_000])
    parser.add_argument("--pipeline_rows", type=int, nargs="*", default=None, help="sizes to run pipeline on")
    parser.add_argument("--max_length", type=int, default=128, help="the run's --data.max_length")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--flags", default="", help="extra flags for our predict, e.g. '--data.eval_batch_size 64'")
    args = parser.parse_args()
    from datasets import load_dataset

    checkpoint = Path(args.checkpoint).resolve()
    model = checkpoint.parent.parent / "hf_model"
    texts = list(load_dataset(args.data, split="train")["text"])
    work = Path(tempfile.mkdtemp(prefix="predict-bench-"))
    pipeline_rows = args.rows[:1] if args.pipeline_rows is None else args.pipeline_rows
    for rows in args.rows:
        source = work / f"texts-{rows}.csv"
        with source.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["text"])
            writer.writerows([texts[i % len(texts)]] for i in range(rows))
        ours = work / f"ours-{rows}.csv"
        command = [sys.executable, "main.py", "predict", "--ckpt_path", str(checkpoint), "--data.predict_file",
                   str(source), "--predictions.output_path", str(ours), "--trainer.logger", "false",
                   "--data.max_length", str(args.max_length), *args.flags.split()]  # fmt: skip
        seconds, peak = run(command)
        print(f"ours     {rows:>8} rows  {rows / seconds:7.1f} rows/s  {seconds:7.1f} s  peak RSS {peak:.3f} GB")
        if rows in pipeline_rows:
            theirs = work / f"pipeline-{rows}.csv"
            script = PIPELINE.format(
                threads=args.threads, source=str(source), model=str(model), output=str(theirs),
                max_length=args.max_length,
            )  # fmt: skip
            seconds, peak = run([sys.executable, "-c", script])
            print(f"pipeline {rows:>8} rows  {rows / seconds:7.1f} rows/s  {seconds:7.1f} s  peak RSS {peak:.3f} GB")
            same = labels(ours) == labels(theirs)
            print(
                f"labels identical: {same}"
                + ("" if same else f" ({sum(a != b for a, b in zip(labels(ours), labels(theirs)))} differ)")
            )  # noqa: E501


if __name__ == "__main__":
    main()
