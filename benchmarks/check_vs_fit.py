"""How well `check` predicts a run: `check`, then the same `fit` for one epoch, back to back, each in a fresh process.

Prints check's `epoch_seconds` against the fit's measured first epoch (training and validation, timed by
`EpochTimer` below), and check's `peak_memory_bytes` against the fit's peak RSS (`/usr/bin/time -v`), with the
ratios. Prints numbers, asserts nothing. Run from the repository root:

    python benchmarks/check_vs_fit.py --config configs/bert.yaml --model.model_name_or_path $MINILM \\
        --data.dataset $DATA --trainer.precision 32-true
"""

import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from lightning.pytorch import Callback

ROOT = Path(__file__).resolve().parents[1]


class EpochTimer(Callback):
    """Print each epoch's wall time, training and validation (the validation at its end) together."""

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        print(f"EPOCH_SECONDS {trainer.current_epoch} {time.perf_counter() - self._start:.1f}", flush=True)
        if pl_module.device.type == "cuda":  # what `check` measures there: torch.cuda.max_memory_allocated
            print(f"CUDA_PEAK_BYTES {torch.cuda.max_memory_allocated(pl_module.device)}", flush=True)


def main(flags: list[str]) -> None:
    with tempfile.TemporaryDirectory() as logs:
        where = ["--trainer.logger.init_args.save_dir", logs]
        check = subprocess.run(
            [sys.executable, "main.py", "check", *flags, *where], cwd=ROOT, capture_output=True, text=True
        )
        found = re.search(r"Wrote (\S+check\.json)", check.stdout)
        if check.returncode or not found:
            sys.exit(f"check failed ({check.returncode}):\n{check.stdout[-2000:]}{check.stderr[-2000:]}")
        report = json.loads(Path(found.group(1)).read_text())
        fit = subprocess.run(
            ["/usr/bin/time", "-v", sys.executable, "main.py", "fit", *flags, *where, "--trainer.max_epochs", "1",
             "--trainer.callbacks+=benchmarks.check_vs_fit.EpochTimer"],
            cwd=ROOT, capture_output=True, text=True,
        )  # fmt: skip
        epoch = re.search(r"EPOCH_SECONDS 0 ([\d.]+)", fit.stdout)
        rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", fit.stderr)
        if fit.returncode or not epoch or not rss:
            sys.exit(f"fit failed ({fit.returncode}):\n{fit.stdout[-2000:]}{fit.stderr[-3000:]}")
    fit_epoch, fit_rss = float(epoch.group(1)), int(rss.group(1)) * 1024
    print(f"check: epoch_seconds {report['epoch_seconds']}  peak_memory_bytes {report['peak_memory_bytes']}")
    detail = ("warmup_seconds", "distinct_shapes", "validation_distinct_shapes", "steps_peak_memory_bytes",
              "end_of_fit_memory_bytes")  # fmt: skip
    print("check detail: " + "  ".join(f"{key} {report.get(key)}" for key in detail))
    print(f"fit:   epoch seconds {fit_epoch}  max RSS bytes {fit_rss}")
    epoch_ratio, memory_ratio = report["epoch_seconds"] / fit_epoch, report["peak_memory_bytes"] / fit_rss
    print(f"check/fit: epoch {epoch_ratio:.3f}  memory {memory_ratio:.3f}")
    cuda = re.search(r"CUDA_PEAK_BYTES (\d+)", fit.stdout)
    if cuda:  # on a GPU check's peak is the GPU's, so the ratio that counts is this one, not the RSS one above
        cuda_ratio = report["peak_memory_bytes"] / int(cuda.group(1))
        print(f"fit:   CUDA peak allocated bytes {cuda.group(1)}  check/fit memory (CUDA) {cuda_ratio:.3f}")


if __name__ == "__main__":
    main(sys.argv[1:])
