"""Peak RSS and time to the first training step of `fit` on generated CSVs of growing size, streamed or not.

    python -m modules.data.demo demo_data
    python benchmarks/streaming_memory.py --rows 1000000 4000000 --streaming true
    python benchmarks/streaming_memory.py --rows 1000000 --streaming false

Writes `/tmp/hf-lightning-reviews-<rows>.csv` (demo reviews; kept for reruns) and a 2,000-row validation CSV, then
runs `main.py fit --config configs/demo.yaml` on them for `--max_steps` steps in a child process per size and prints
its peak RSS (ru_maxrss) and the seconds from start to the first training step. Issue 23 asks for streamed sizes
within 10% of each other in peak RSS, under 30 s to the first step, and non-streamed 1M rows below 0.73 GB.
"""

import argparse
import csv
import json
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

from lightning.pytorch import Callback

ROOT = Path(__file__).resolve().parents[1]
START = time.perf_counter()


class FirstStep(Callback):
    """Prints the seconds from process start to the first training batch."""

    def __init__(self) -> None:
        self.seen = False

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if not self.seen:
            self.seen = True
            print(f"FIRST_STEP_S {time.perf_counter() - START:.1f}", flush=True)


def write_csv(path: Path, rows: int, seed: int) -> Path:
    from modules.data.demo import review

    if path.exists():
        return path
    rng = random.Random(seed)
    partial = path.with_suffix(".partial")
    with partial.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        for _ in range(rows):
            label = rng.randint(0, 1)
            writer.writerow([review(rng, label), label])
    partial.rename(path)
    return path


def child(args: list[str]) -> None:
    sys.path.insert(0, str(ROOT))
    from modules.cli.app import cli_main

    cli_main(args + ["--trainer.callbacks+=__main__.FirstStep"])
    print(f"PEAK_RSS_GB {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.3f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 4_000_000])
    parser.add_argument("--streaming", choices=["true", "false"], default="true")
    parser.add_argument("--max_steps", type=int, default=50)
    parser.add_argument("--model", default=str(ROOT / "demo_data" / "model"))
    parser.add_argument("--out", default="/tmp/hf-lightning-streaming-bench")
    options = parser.parse_args()
    validation = write_csv(Path("/tmp/hf-lightning-reviews-val-2000.csv"), 2000, seed=1)
    results = []
    for rows in options.rows:
        train = write_csv(Path(f"/tmp/hf-lightning-reviews-{rows}.csv"), rows, seed=0)
        args = [
            "fit",
            "--config",
            str(ROOT / "configs" / "demo.yaml"),
            "--model.model_name_or_path",
            options.model,
            "--data.dataset",
            "null",
            "--data.data_files",
            json.dumps({"train": str(train), "validation": str(validation)}),
            "--trainer.max_steps",
            str(options.max_steps),
            "--trainer.precision",
            "32-true",
            "--trainer.logger.init_args.save_dir",
            f"{options.out}/logs",
        ]
        if options.streaming == "true":  # flags left out otherwise, so the script also measures older commits
            args += ["--data.streaming", "true", "--data.label_names", "[neg, pos]"]
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, __file__, "--child", json.dumps(args)], capture_output=True, text=True, cwd=ROOT
        )
        wall = time.perf_counter() - started
        lines = dict(
            line.split(" ", 1) for line in done.stdout.splitlines() if line.startswith(("FIRST_STEP_S", "PEAK_RSS_GB"))
        )
        if done.returncode != 0 or len(lines) < 2:
            print(done.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"fit on {rows} rows failed (exit {done.returncode})")
        results.append((rows, float(lines["PEAK_RSS_GB"]), float(lines["FIRST_STEP_S"]), wall))
    print(f"streaming={options.streaming} max_steps={options.max_steps}")
    print(f"{'rows':>10} {'peak RSS GB':>12} {'first step s':>13} {'wall s':>8}")
    for rows, rss, first, wall in results:
        print(f"{rows:>10} {rss:>12.3f} {first:>13.1f} {wall:>8.1f}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        child(json.loads(sys.argv[2]))
    else:
        main()
