"""Helpers of benchmarks/gpu.sh, one per subcommand (run from the repository root):

    python benchmarks/gpu_pass.py preflight OUT_JSON           # versions, the GPU, and unmet package requirements
    python benchmarks/gpu_pass.py model TOKENIZER DEST [LAYERS HIDDEN]  # random-init BERT of TOKENIZER's config
    python benchmarks/gpu_pass.py time -v COMMAND...           # stand-in for GNU time's max RSS line, if it is missing
    python benchmarks/gpu_pass.py check_json LOG OUT_JSON      # check_vs_fit.py's printed figures as JSON
    python benchmarks/gpu_pass.py summary OUT STEPS_TSV        # the table printed at the end

It prints numbers and asserts nothing about them.
"""

import importlib.metadata
import json
import platform
import re
import resource
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHOWN = (
    "torch", "transformers", "huggingface_hub", "tokenizers", "lightning", "jsonargparse", "datasets", "pyarrow",
    "accelerate", "torchmetrics", "litserve", "fastapi", "uvicorn", "pydantic", "onnxruntime", "numpy",
)  # fmt: skip


def unmet_requirements() -> list[str]:
    """Requirements, walked from this project's (with the serve and bench extras) and the naive server's, that the
    running interpreter does not meet: missing distributions and versions outside the range."""
    import tomllib  # Python 3.11+: the device has 3.12
    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    todo = [(Requirement(r), "") for r in project["dependencies"]]
    todo += [(Requirement(r), "") for extra in ("serve", "bench") for r in project["optional-dependencies"][extra]]
    todo += [(Requirement("fastapi"), ""), (Requirement("uvicorn"), "")]
    unmet, seen = [], set()
    while todo:
        requirement, needed_by = todo.pop()
        if requirement.marker and not any(
            requirement.marker.evaluate({"extra": extra}) for extra in ("", *requirement.extras)
        ):
            continue
        try:
            version = importlib.metadata.version(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            unmet.append(f"{requirement} (for {needed_by or 'hf-lightning'}): not installed")
            continue
        if requirement.specifier and not requirement.specifier.contains(version, prereleases=True):
            unmet.append(f"{requirement} (for {needed_by or 'hf-lightning'}): {version} installed")
        key = (requirement.name.lower().replace("_", "-"), frozenset(requirement.extras))
        if key in seen:
            continue
        seen.add(key)
        for line in importlib.metadata.requires(requirement.name) or []:
            child = Requirement(line)
            if child.marker and not any(child.marker.evaluate({"extra": e}) for e in ("", *requirement.extras)):
                continue
            todo.append((child, requirement.name))
    return sorted(set(unmet))


def cpu_name() -> str:
    names = [line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")]
    return names[0] if names else platform.machine()


def preflight(out: str) -> None:
    import torch

    cuda = torch.cuda.is_available()
    info = {
        "python": platform.python_version(),
        "cuda": cuda,
        "device": torch.cuda.get_device_name() if cuda else cpu_name(),
        "torch_cuda": torch.version.cuda,
        "cpu_count": len(__import__("os").sched_getaffinity(0)),
        "versions": {},
    }
    if cuda:
        free, total = torch.cuda.mem_get_info()
        info["gpu_memory_gib"] = round(total / 2**30, 1)
    for name in SHOWN:
        try:
            info["versions"][name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            info["versions"][name] = None
    info["unmet_requirements"] = unmet_requirements()
    Path(out).write_text(json.dumps(info, indent=2))
    print(f"python {info['python']}, {info['device']}, cuda {cuda} (torch built for {info['torch_cuda']})")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()))
    for line in info["unmet_requirements"]:
        print(f"warning: unmet requirement {line}")
    if not info["unmet_requirements"]:
        print("requirements: all met")


def model(tokenizer: str, dest: str, layers: int = 0, hidden: int = 0) -> None:
    """A seeded random-init classifier with `tokenizer`'s config (MiniLM's: 6 layers, hidden 384), or that config
    cut to `layers` x `hidden` (the CPU test run's tiny model), saved with the tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    config = AutoConfig.from_pretrained(tokenizer, num_labels=2)
    if layers:
        config.num_hidden_layers, config.hidden_size, config.intermediate_size = layers, hidden, 4 * hidden
        config.num_attention_heads = max(1, hidden // 32)
    torch.manual_seed(0)
    classifier = AutoModelForSequenceClassification.from_config(config)
    classifier.save_pretrained(dest)
    AutoTokenizer.from_pretrained(tokenizer).save_pretrained(dest)
    size = sum(p.numel() for p in classifier.parameters())
    print(f"wrote {dest}: {config.num_hidden_layers} layers, hidden {config.hidden_size}, {size:,} parameters")


def time_v(command: list[str]) -> None:
    """`/usr/bin/time -v COMMAND`'s exit status and its max-RSS line (check_vs_fit.py reads that line), for machines
    without GNU time. RUSAGE_CHILDREN's peak is that of the largest waited-for descendant, as GNU time reports."""
    if command[:1] == ["-v"]:
        command = command[1:]
    code = subprocess.call(command)
    print(
        f"\tMaximum resident set size (kbytes): {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}",
        file=sys.stderr,
    )
    sys.exit(code)


def check_json(log: str, out: str) -> None:
    """The figures check_vs_fit.py printed, as JSON (it writes none itself)."""
    text = Path(log).read_text()
    patterns = {
        "check_epoch_seconds": r"check: epoch_seconds ([\d.e+-]+)",
        "check_peak_memory_bytes": r"peak_memory_bytes (\d+)",
        "fit_epoch_seconds": r"fit:\s+epoch seconds ([\d.]+)",
        "fit_max_rss_bytes": r"max RSS bytes (\d+)",
        "fit_cuda_peak_bytes": r"CUDA peak allocated bytes (\d+)",
        "epoch_ratio": r"check/fit: epoch ([\d.]+)",
        "memory_ratio_rss": r"check/fit: epoch [\d.]+\s+memory ([\d.]+)",
        "memory_ratio_cuda": r"check/fit memory \(CUDA\) ([\d.]+)",
    }
    found = {key: re.search(pattern, text) for key, pattern in patterns.items()}
    record = {key: float(match.group(1)) if match else None for key, match in found.items()}
    for key in ("check_peak_memory_bytes", "fit_max_rss_bytes", "fit_cuda_peak_bytes"):
        record[key] = None if record[key] is None else int(record[key])
    Path(out).write_text(json.dumps(record, indent=2))


def _load(path: Path) -> object:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def summary(out: str, steps_tsv: str) -> None:
    folder = Path(out)
    lines = []
    env = _load(folder / "env.json") or {}
    lines.append(f"machine: {env.get('device')}, torch {env.get('versions', {}).get('torch')}, cuda {env.get('cuda')}")
    lines.append("\nstep              status     seconds")
    for row in Path(steps_tsv).read_text().splitlines() if Path(steps_tsv).exists() else []:
        name, status, seconds = row.split("\t")
        lines.append(f"{name:<18}{status:<11}{seconds:>7}")
    throughput = _load(folder / "throughput.json")
    if throughput:
        lines.append(f"\nthroughput: {throughput['settings']}")
        lines.append(f"{'tool':<13}{'precision':<10}{'samples/s':>10}{'min-max':>18}{'real tok':>9}{'of peak':>9}")
        rates = {}
        for row in throughput["summary"]:
            rates[row["tool"], row["precision"]] = row["samples_per_s"]
            spread = f"{row['samples_per_s_min']:.1f}-{row['samples_per_s_max']:.1f}"
            lines.append(
                f"{row['tool']:<13}{row['precision']:<10}{row['samples_per_s']:>10.1f}{spread:>18}"
                f"{row['real_token_fraction']:>9.1%}{row['fraction_of_peak']:>9.1%}"
            )
        for (tool, precision), rate in rates.items():
            if tool != "ours":
                lines.append(f"ours/{tool} {precision}: {rates.get(('ours', precision), float('nan')) / rate:.2f}x")
    check = _load(folder / "check_vs_fit.json")
    if check:
        lines.append("\ncheck vs fit (one epoch)")
        lines.append(
            f"epoch seconds: check {check['check_epoch_seconds']}, fit {check['fit_epoch_seconds']}, "
            f"check/fit {check['epoch_ratio']}"
        )

        def gib(key: str) -> str:
            return "-" if check[key] is None else f"{check[key] / 2**30:.3f} GiB"

        memory = f"peak memory: check {gib('check_peak_memory_bytes')}"
        if check["fit_cuda_peak_bytes"]:
            memory += f", fit CUDA peak {gib('fit_cuda_peak_bytes')}, check/fit {check['memory_ratio_cuda']}"
        memory += f"; fit max RSS {gib('fit_max_rss_bytes')}, check/RSS {check['memory_ratio_rss']}"
        lines.append(memory)
    for name in ("serve_load.json", "serve_load_bf16.json"):
        rows = _load(folder / name)
        if rows:
            lines.append(f"\n{name}")
            lines.append(f"{'server':8} {'conc':>4} {'rows/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'failed':>6} {'4xx':>8}")
            for r in rows:
                lines.append(
                    f"{r['server']:8} {r['concurrency']:>4} {r['rows_per_s']:>8.1f} {r['p50_ms']:>8.1f} "
                    f"{r['p99_ms']:>8.1f} {r['failed']:>6} {r['malformed_4xx']:>8}"
                )
            for server in dict.fromkeys(r["server"] for r in rows):
                mine = next(r for r in rows if r["server"] == server)
                if "rss_before_gb" in mine:
                    lines.append(
                        f"{server}: RSS {mine['rss_before_gb']:.3f} GB before, {mine['rss_after_gb']:.3f} after"
                    )
    text = "\n".join(lines)
    (folder / "summary.txt").write_text(text + "\n")
    print(text)


def main(argv: list[str]) -> None:
    command, args = argv[0], argv[1:]
    if command == "preflight":
        preflight(*args)
    elif command == "model":
        model(args[0], args[1], *(int(a) for a in args[2:]))
    elif command == "time":
        time_v(args)
    elif command == "check_json":
        check_json(*args)
    elif command == "summary":
        summary(*args)
    else:
        sys.exit(f"error: unknown command {command!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
