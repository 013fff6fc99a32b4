"""How long `main.py serve` takes to answer its first `GET /health` with 200, and the memory of its process tree then.

    python benchmarks/serve_startup.py MODEL_DIR                          # this checkout
    python benchmarks/serve_startup.py MODEL_DIR --root /tmp/base         # another checkout (e.g. a git worktree)
    python benchmarks/serve_startup.py MODEL_DIR --workers_per_device 1   # unknown options go to serve

Starts `PYTHON -m modules.serve MODEL_DIR` (the alias every version has) in `--root`, `--repeats` times one after the
other, on a free local port. For each start prints the seconds from launch to the first 200 on /health (polled every
50 ms), and, at that moment, the RSS and PSS summed over the server's process tree (the server, its HTTP server and
its workers) with the tree's process count; then stops the server with SIGTERM. RSS counts pages that processes
share (forked ones share many) once per process; PSS splits them, so its sum is the tree's real footprint.
"""

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
from serve_load import free_port  # a sibling script: benchmarks/ is on sys.path when run

ROOT = Path(__file__).resolve().parents[1]


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def tree_memory(pid: int) -> tuple[int, int, int]:
    """(RSS bytes, PSS bytes, processes) of `pid` and all its descendants."""
    root = psutil.Process(pid)
    rss = pss = count = 0
    for process in [root, *root.children(recursive=True)]:
        try:
            info = process.memory_full_info()
        except psutil.NoSuchProcess:
            continue
        rss, pss, count = rss + info.rss, pss + info.pss, count + 1
    return rss, pss, count


def one_start(python: str, root: Path, model: str, flags: list[str], timeout: float) -> tuple[float, int, int, int]:
    port = free_port()
    command = [python, "-m", "modules.serve", model, "--port", str(port), *flags]
    env = {k: v for k, v in os.environ.items() if k != "HF_LIGHTNING_API_KEY"} | {"HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        while not healthy(port):
            if process.poll() is not None:
                raise RuntimeError(f"the server exited with status {process.returncode}: {' '.join(command)}")
            if time.perf_counter() - start > timeout:
                raise TimeoutError(f"not healthy after {timeout} s")
            time.sleep(0.05)
        seconds = time.perf_counter() - start
        return (seconds, *tree_memory(process.pid))
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="an hf_model/ export folder")
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout to run the server from")
    parser.add_argument("--python", default=sys.executable, help="the interpreter (the project's venv)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds before a start counts as failed")
    options, flags = parser.parse_known_args()  # the rest: serve's own options, passed on
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=options.root, capture_output=True, text=True)
    print(f"root {options.root} (commit {commit.stdout.strip()}), model {options.model}, flags {flags}")
    results = []
    for repeat in range(options.repeats):
        seconds, rss, pss, count = one_start(options.python, options.root, options.model, flags, options.timeout)
        results.append((seconds, rss, pss))
        print(f"start {repeat + 1}: healthy after {seconds:.2f} s, {count} processes, "
              f"RSS {rss / 2**20:.0f} MiB, PSS {pss / 2**20:.0f} MiB")  # fmt: skip
    seconds, rss, pss = (statistics.median(column) for column in zip(*results))
    print(f"median: {seconds:.2f} s to healthy, RSS {rss / 2**20:.0f} MiB, PSS {pss / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
