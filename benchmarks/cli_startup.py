"""Seconds until `main.py` answers `--help` and a misspelled key, for one or two checkouts run back to back.

    python benchmarks/cli_startup.py                     # this checkout
    python benchmarks/cli_startup.py /tmp/main-checkout  # that checkout, then this one, alternating each repeat

Prints the median and the spread of `--repeats` runs of each command (a fresh process each time).
"""

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

COMMANDS = {
    "--help": ["--help"],
    "config typo": ["fit", "--config", "configs/demo.yaml", "--model.learnin_rate", "0.1"],
}


def seconds(checkout: Path, args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "main.py", *args], cwd=checkout, capture_output=True, check=False)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("baseline", nargs="?", type=Path, help="another checkout to time first, alternating")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    checkouts = ([args.baseline] if args.baseline else []) + [Path(__file__).resolve().parents[1]]
    times: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.repeats):
        for name, command in COMMANDS.items():
            for checkout in checkouts:
                times.setdefault((str(checkout), name), []).append(seconds(checkout, command))
    for (checkout, name), values in times.items():
        spread = f"(min {min(values):.2f}, max {max(values):.2f})"
        print(f"{checkout:<30} {name:<12} median {statistics.median(values):6.2f} s  {spread}")


if __name__ == "__main__":
    main()
