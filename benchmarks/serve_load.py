"""Bounded load test of `python -m modules.serve` against the naive FastAPI + `pipeline` server, on 127.0.0.1 only.

    python benchmarks/serve_load.py logs/bert/version_0/hf_model --data ../shared/data/rotten_tomatoes

For each server and each concurrency (1, 8, 32): `--requests` requests of one text each (texts of the data's test
split, in order), of which `--malformed` (10%) are broken JSON, sent by that many client threads over kept-alive
connections, stopped at `--time_cap` seconds. Prints rows/s and p50/p99 latency of the well-formed requests, how many
of them failed, how many malformed ones got a 4xx, and the server's memory (RSS of its process tree) before and
after. Each server runs alone; the client shares the machine with it (the same for both).
"""

import argparse
import http.client
import json
import os
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree_rss_bytes(pid: int) -> int:
    """RSS of a process and all its descendants (LitServe runs its HTTP server and workers as child processes)."""
    children = {}
    for status in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = status.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(status.parent.name))
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        todo += children.get(current, [])
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def start(command: list[str], port: int) -> subprocess.Popen:
    process = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/health")
            if connection.getresponse().status == 200:
                return process
        except OSError:
            time.sleep(0.5)
    process.kill()
    raise TimeoutError(f"{command} did not answer /health")


def run_level(port: int, bodies: list[tuple[bool, bytes]], concurrency: int, time_cap: float) -> dict:
    local = threading.local()
    stop_at = time.monotonic() + time_cap
    results = []

    def send(item: tuple[bool, bytes]) -> tuple[bool, int, float]:
        valid, body = item
        if time.monotonic() > stop_at:
            return valid, -1, 0.0
        if not hasattr(local, "connection"):
            local.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        start_time = time.perf_counter()
        try:
            local.connection.request("POST", "/predict", body, {"Content-Type": "application/json"})
            response = local.connection.getresponse()
            response.read()
            status = response.status
        except (OSError, http.client.HTTPException):
            local.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            status = 0
        return valid, status, time.perf_counter() - start_time

    began = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(send, bodies))
    wall = time.perf_counter() - began
    good = [(status, seconds) for valid, status, seconds in results if valid and status != -1]
    ok = sorted(seconds for status, seconds in good if status == 200)
    malformed = [status for valid, status, _ in results if not valid and status != -1]
    return {
        "concurrency": concurrency,
        "rows_per_s": len(ok) / wall,
        "p50_ms": 1000 * statistics.median(ok) if ok else float("nan"),
        "p99_ms": 1000 * ok[min(len(ok) - 1, int(0.99 * len(ok)))] if ok else float("nan"),
        "failed": len(good) - len(ok),
        "not_sent": sum(status == -1 for _, status, _ in results),
        "malformed_4xx": f"{sum(400 <= s < 500 for s in malformed)}/{len(malformed)}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="an hf_model/ export")
    parser.add_argument("--data", required=True, help="a dataset folder with a test split (rotten_tomatoes)")
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--malformed", type=float, default=0.1)
    parser.add_argument("--time_cap", type=float, default=120.0, help="seconds per concurrency level")
    parser.add_argument("--servers", nargs="+", default=["ours", "naive"], choices=["ours", "naive"])
    parser.add_argument("--serve_args", default="", help="extra flags for `python -m modules.serve`, one string")
    parser.add_argument("--json", help="also write the results here")
    options = parser.parse_args()
    from datasets import load_dataset

    texts = load_dataset(options.data, split="test")["text"][: options.requests]
    every = round(1 / options.malformed) if options.malformed else 0
    bodies = [  # (well-formed?, body)
        (False, b'{"inputs": ["unterminated')
        if every and i % every == every - 1
        else (True, json.dumps({"inputs": [t]}).encode())
        for i, t in enumerate(texts)
    ]
    rows = []
    for name in options.servers:
        port = free_port()
        if name == "ours":
            command = [sys.executable, "-m", "modules.serve", options.model, "--port", str(port)]
            command += shlex.split(options.serve_args)
        else:
            command = [sys.executable, str(ROOT / "benchmarks" / "naive_server.py"), options.model, "--port", str(port)]
        process = start(command, port)
        try:
            run_level(port, bodies[:20], 4, 60)  # warm-up
            before = tree_rss_bytes(process.pid)
            for concurrency in options.concurrency:
                row = {"server": name, **run_level(port, bodies, concurrency, options.time_cap)}
                rows.append(row)
                print(json.dumps(row), flush=True)
            after = tree_rss_bytes(process.pid)
            print(f"{name}: RSS {before / 1e9:.3f} GB before, {after / 1e9:.3f} GB after "
                  f"({100 * (after - before) / before:+.1f}%)", flush=True)  # fmt: skip
            for row in rows:
                if row["server"] == name:
                    row.update(rss_before_gb=before / 1e9, rss_after_gb=after / 1e9)
        finally:
            process.terminate()
            try:
                process.wait(timeout=60)
            finally:
                try:
                    os.killpg(process.pid, signal.SIGKILL)  # anything of that server still running
                except ProcessLookupError:
                    pass
    print(f"\n{'server':8} {'conc':>4} {'rows/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'failed':>6} {'malformed 4xx':>14}")
    for r in rows:
        print(f"{r['server']:8} {r['concurrency']:>4} {r['rows_per_s']:>8.1f} {r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f} "
              f"{r['failed']:>6} {r['malformed_4xx']:>14}")  # fmt: skip
    if options.json:
        Path(options.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
