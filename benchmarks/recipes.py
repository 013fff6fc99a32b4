"""Run recipes end to end (fit, then test on the best checkpoint) and print the README's recipe table rows.

    MINILM=$(../shared/scripts/get-minilm.sh)
    python benchmarks/recipes.py --model $MINILM --dataset ../shared/data/rotten_tomatoes

For each recipe: fit wall time, the fit process's peak resident memory, trainable parameters and test metrics.
Run it on an otherwise idle machine: the times are the point.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def recipes(model: str, dataset: str) -> dict[str, list[str]]:
    minilm = [
        "--config",
        "configs/bert.yaml",
        "--model.model_name_or_path",
        model,
        "--data.dataset",
        dataset,
        "--trainer.max_epochs",
        "2",
        "--trainer.precision",
        "bf16-mixed",
    ]
    return {
        "bert.yaml (MiniLM, full fine-tune)": [*minilm, "--model.learning_rate", "5e-5"],
        "bert.yaml + lora.yaml (MiniLM, LoRA r=8)": [*minilm, "--config", "configs/lora.yaml"],
        "demo.yaml (tiny BERT, generated data)": ["--config", "configs/demo.yaml"],
    }


def run(args: list[str], log: Path) -> tuple[float, float]:
    """Run `python main.py ARGS`; return (wall seconds, peak RSS in GiB) of that process."""
    started = time.monotonic()
    with log.open("a") as out:
        process = subprocess.Popen([sys.executable, "main.py", *args], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"`main.py {' '.join(args)}` failed: see {log}")
    return time.monotonic() - started, usage.ru_maxrss / 2**20  # ru_maxrss is in KiB on Linux


def newest(root: Path, name: str) -> Path:
    return max(root.rglob(name), key=lambda p: p.stat().st_mtime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="local model folder (all-MiniLM-L6-v2)")
    parser.add_argument("--dataset", required=True, help="local dataset folder (rotten_tomatoes)")
    parser.add_argument("--workdir", default="logs/recipes")
    parser.add_argument("--only", help="run only the recipes whose name contains this")
    args = parser.parse_args()
    work = (ROOT / args.workdir).resolve()
    hardware = f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()})"
    if not (ROOT / "demo_data").is_dir():
        subprocess.run([sys.executable, "-m", "modules.data.demo", "demo_data"], cwd=ROOT, check=True)

    print("| recipe | hardware | fit time | peak memory (fit) | trainable parameters | test metrics |")
    print("|---|---|---|---|---|---|")
    for name, flags in recipes(args.model, args.dataset).items():
        if args.only and args.only not in name:
            continue
        folder = work / name.split(" ")[0].replace(".yaml", "") / ("lora" if "lora" in name else "full")
        logs = ["--trainer.logger.init_args.save_dir", str(folder), "--trainer.enable_progress_bar", "false"]
        folder.mkdir(parents=True, exist_ok=True)
        seconds, peak = run(["fit", *flags, *logs], folder.with_suffix(".log"))
        run(["test", *flags, *logs, "--ckpt_path", "best"], folder.with_suffix(".log"))
        summary = json.loads(newest(folder, "fit_summary.json").read_text())
        metrics = json.loads(newest(folder, "test_metrics.json").read_text())["metrics"]
        trainable = summary.get("trainable_parameters")
        total = summary.get("parameters")
        counts = f"{trainable:,} of {total:,}" if trainable and total else "n/a"
        shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k in ("test_acc", "test_f1"))
        print(f"| {name} | {hardware} | {seconds / 60:.1f} min | {peak:.2f} GiB | {counts} | {shown} |", flush=True)


if __name__ == "__main__":
    main()
