"""Long documents through the CLI: test accuracy of `--data.long_text truncate` vs `chunk` on generated reviews whose
one sentiment word sits only past `--max_length` tokens. Chance is 0.5.

    python benchmarks/long_text.py [--model MODEL_DIR]

For each mode: `main.py fit` (the tiny demo BERT by default), `main.py test --ckpt_path last` (metrics per document),
and `main.py predict` on the test split, checking there is one prediction per document. Prints the accuracies, the
windows per split and the time of each mode.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

from modules.data.demo import long_reviews, write_reviews, write_tiny_bert

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model folder; default: the tiny demo BERT, generated")
    parser.add_argument("--max_length", type=int, default=16)
    parser.add_argument("--stride", type=int, default=4)
    parser.add_argument("--filler", type=int, default=30, help="neutral words before the sentiment word's 5")
    parser.add_argument("--train", type=int, default=400)
    parser.add_argument("--test", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--learning_rate", type=float, default=3e-3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="long-text-"))
    model = args.model or str(write_tiny_bert(work / "tiny-bert"))
    sizes = {"train": args.train, "validation": args.test, "test": args.test}
    data = write_reviews(work / "data", sizes, lambda n, seed: long_reviews(n, seed, args.filler))
    for mode in ("truncate", "chunk"):
        folder = work / mode
        config = {
            "seed_everything": 42,
            "trainer": {
                "max_epochs": args.epochs, "accelerator": "cpu", "devices": 1, "enable_progress_bar": False,
                "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger",
                           "init_args": {"save_dir": str(folder), "name": "run"}},
            },
            "model": {"model_name_or_path": model, "learning_rate": args.learning_rate},
            "data": {"dataset": str(data), "max_length": args.max_length, "long_text": mode, "stride": args.stride},
            "export": {"enabled": False},
        }  # fmt: skip
        folder.mkdir()
        (folder / "config.yaml").write_text(yaml.safe_dump(config))
        base = [sys.executable, "main.py"]
        start = time.perf_counter()
        output = ["--predictions.output_path", str(folder / "pred.csv")]
        for command in (["fit"], ["test", "--ckpt_path", "last"], ["predict", "--ckpt_path", "last", *output]):
            done = subprocess.run([*base, command[0], "--config", str(folder / "config.yaml"), *command[1:]], cwd=ROOT,
                                  capture_output=True, text=True)  # fmt: skip
            if done.returncode:
                sys.exit(done.stderr[-3000:])
            windows = [line for line in done.stderr.splitlines() + done.stdout.splitlines() if " windows of " in line]
            for line in windows:
                print(f"  {mode} {command[0]}: {line.strip()}")
        seconds = time.perf_counter() - start
        (report,) = folder.glob("run/version_*/test_metrics.json")  # the test command's run folder
        accuracy = json.loads(report.read_text())["metrics"]["test_acc"]
        predictions = pd.read_csv(folder / "pred.csv")
        print(f"{mode}: test accuracy {accuracy:.3f} per document ({args.test} documents, {len(predictions)} "
              f"predictions), fit + test + predict {seconds:.0f} s")  # fmt: skip


if __name__ == "__main__":
    main()
