"""Kill `fit` with SIGKILL at random moments, resume each time, and compare the end with an uninterrupted run.

    MINILM=$(../shared/scripts/get-minilm.sh)
    python benchmarks/kill_resume.py --model $MINILM --dataset ../shared/data/rotten_tomatoes

Both runs use configs/bert.yaml with the issue-2 acceptance flags (2 epochs, lr 5e-5, bf16-mixed) and `last.ckpt`
refreshed every `--every` steps. The interrupted run is killed `--kills` times, each at a random moment between its
first fresh checkpoint and the end, then resumed with `--ckpt_path last`. Prints each kill's step and the two runs'
final test metrics and weights; exact resume means they are equal.
"""

import argparse
import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]


def write_config(folder: Path, every: int) -> Path:
    """configs/bert.yaml with its logs in `folder` and `last.ckpt` refreshed every `every` steps."""
    config = yaml.safe_load((ROOT / "configs" / "bert.yaml").read_text())
    config["trainer"]["logger"]["init_args"]["save_dir"] = str(folder / "logs")
    for callback in config["trainer"]["callbacks"]:
        if callback["class_path"].endswith("RunCheckpoint"):
            callback["init_args"]["last_every_n_train_steps"] = every
    config["export"] = {"enabled": False}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def command(subcommand: str, config: Path, args: argparse.Namespace, *extra: str) -> list[str]:
    return [
        sys.executable,
        str(ROOT / "main.py"),
        subcommand,
        "--config",
        str(config),
        "--model.model_name_or_path",
        args.model,
        "--data.dataset",
        args.dataset,
        "--model.learning_rate",
        "5e-5",
        "--trainer.max_epochs",
        str(args.epochs),
        "--trainer.precision",
        args.precision,
        "--trainer.enable_progress_bar",
        "false",
        *extra,
    ]


def last_checkpoint(folder: Path) -> Path | None:
    found = sorted((folder / "logs").rglob("last.ckpt"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def run(cmd: list[str], log: Path) -> None:
    with log.open("a") as out:
        subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, check=True, cwd=ROOT)


def interrupted_fit(config: Path, folder: Path, args: argparse.Namespace, rng: random.Random) -> list[int]:
    """Fit with `args.kills` SIGKILLs at random moments; returns the step each kill's resume started from."""
    log, resumed_from = folder / "fit.log", []
    for kill in range(args.kills + 1):
        last = last_checkpoint(folder)
        resume = ["--ckpt_path", str(last)] if last else []
        if last:
            resumed_from.append(torch.load(last, weights_only=True, mmap=True)["global_step"])
        with log.open("a") as out:
            process = subprocess.Popen(command("fit", config, args, *resume), stdout=out, stderr=subprocess.STDOUT)
        if kill == args.kills:
            if process.wait() != 0:
                raise SystemExit(f"the final resumed fit failed: see {log}")
            break
        # Kill at a random moment once this process has written a checkpoint of its own (so each resume advances).
        start_mtime = last.stat().st_mtime if last else 0.0
        while process.poll() is None:
            newest = last_checkpoint(folder)
            if newest and newest.stat().st_mtime > start_mtime:
                break
            time.sleep(1)
        time.sleep(rng.uniform(0, args.max_delay))
        if process.poll() is not None:
            raise SystemExit(f"fit ended before kill {kill + 1}; lower --max_delay. See {log}")
        process.send_signal(signal.SIGKILL)
        process.wait()
        step = torch.load(last_checkpoint(folder), weights_only=True, mmap=True)["global_step"]
        print(f"kill {kill + 1}: SIGKILL; last.ckpt at step {step}")
    return resumed_from


def test_metrics(config: Path, folder: Path, args: argparse.Namespace) -> dict:
    run(command("test", config, args, "--ckpt_path", "best"), folder / "test.log")
    found = sorted((folder / "logs").rglob("test_metrics.json"), key=lambda p: p.stat().st_mtime)
    return json.loads(found[-1].read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="local model folder (all-MiniLM-L6-v2)")
    parser.add_argument("--dataset", required=True, help="local dataset folder (rotten_tomatoes)")
    parser.add_argument("--workdir", default="logs/kill_resume")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--precision", default="bf16-mixed")
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--every", type=int, default=50, help="refresh last.ckpt every N steps")
    parser.add_argument("--max_delay", type=float, default=60, help="kill up to this many seconds after a checkpoint")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    args = parser.parse_args()
    work = Path(args.workdir)

    whole = work / "uninterrupted"
    config = write_config(whole, args.every)
    started = time.monotonic()
    run(command("fit", config, args), whole / "fit.log")
    print(f"uninterrupted fit: {time.monotonic() - started:.0f} s")
    expected = test_metrics(config, whole, args)

    killed = work / "killed"
    config = write_config(killed, args.every)
    started = time.monotonic()
    resumed_from = interrupted_fit(config, killed, args, random.Random(args.seed))
    print(f"interrupted fit: {time.monotonic() - started:.0f} s, resumed from steps {resumed_from}")
    got = test_metrics(config, killed, args)

    a = torch.load(last_checkpoint(whole), weights_only=True)
    b = torch.load(last_checkpoint(killed), weights_only=True)
    equal = all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    print(f"final global_step: uninterrupted {a['global_step']}, interrupted {b['global_step']}")
    print(f"final weights bitwise equal: {equal}")
    for name in ("test_acc", "test_f1", "test_loss"):
        print(f"{name}: uninterrupted {expected['metrics'][name]:.4f}, interrupted {got['metrics'][name]:.4f}")


if __name__ == "__main__":
    main()
