"""`python main.py check --config ...`: before a long run, the data, the model, the machine and the measured cost of
the run the same flags would start, printed and written to `<run root>/check/check.json`; exit status 2 when the
run cannot work (does not fit in memory, no rows, a monitored metric never logged).

Nothing a later `fit`/`test` reads is written: no checkpoint, no `version_N` folder, no weights on disk.
"""

import json
import os
from pathlib import Path

import torch
from lightning.pytorch import LightningModule, Trainer

from modules.check import cost
from modules.check.machine import machine_report, precision_warning
from modules.data.stats import data_stats
from modules.errors import HFLightningError
from modules.model.lora import parameter_counts
from modules.model.metrics import check_monitors

GIB = 2**30


class CheckFailed(HFLightningError):
    """A blocking problem found by `check`; its report is written first."""


def check_folder(trainer: Trainer) -> Path:
    """`<save_dir>/<name>/check`: beside the runs' `version_N` folders, never one of them, so `--ckpt_path best`
    and the next `fit`'s version number are unaffected."""
    logger = trainer.logger
    root = getattr(logger, "root_dir", None) if logger is not None else None
    if root is None and logger is not None:
        root = Path(logger.save_dir or trainer.default_root_dir, str(logger.name))
    return Path(root or trainer.default_root_dir) / "check"


def memory_limit_bytes(device_type: str, limit_gb: float | None) -> int:
    """`--memory_limit_gb`, else the GPU's memory, else the machine's physical memory."""
    if limit_gb is not None:
        return int(limit_gb * GIB)
    if device_type == "cuda":
        return torch.cuda.get_device_properties(0).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def memory_fix(datamodule, trainer: Trainer, model: LightningModule) -> str:
    """The ways to fit, each as the flags to pass."""
    batch, accumulate = datamodule.batch_size, trainer.accumulate_grad_batches
    fixes = []
    if batch > 1:
        fixes.append(
            f"--data.batch_size {batch // 2} --trainer.accumulate_grad_batches {accumulate * 2} (same effective batch)"
        )
    fixes.append(f"--data.max_length {max(8, datamodule.contract.max_length // 2)}")
    if not model.hparams.gradient_checkpointing:
        fixes.append("--model.gradient_checkpointing true")
    if not model.hparams.lora_r:
        fixes.append("--model.lora_r 8")
    return "; or ".join(fixes)


def run_check(trainer: Trainer, model: LightningModule, datamodule, memory_limit_gb: float | None = None) -> dict:
    datamodule.prepare_data()
    datamodule.setup("fit")
    contract = datamodule.contract  # what the data tells the model (modules/data/contract.py)
    spec = contract.label_spec
    check_monitors(trainer.callbacks, spec.task)  # unknown monitor: HFLightningError, exit 2
    data = data_stats(datamodule)
    rows = {name: split["rows"] for name, split in data["splits"].items()}
    problems = [f"the {name} split has no rows" for name, n in rows.items() if n == 0]
    if problems:
        raise CheckFailed(f"{'; '.join(problems)}: check --data.dataset / --data.data_files and the dropped rows.")
    machine = machine_report(trainer)
    measured = cost.measure(trainer, model, datamodule)
    trainable, total = parameter_counts(model.model)
    tokenizer = contract.tokenizer
    vocab_size = getattr(model.model.config, "vocab_size", None)
    run_seconds, epochs = cost.run_estimate(
        measured["epoch_seconds"],
        measured["batches_per_epoch"],
        trainer.accumulate_grad_batches,
        trainer.max_epochs,
        trainer.max_steps,
        measured["warmup_seconds"],
    )
    limit = memory_limit_bytes(trainer.strategy.root_device.type, memory_limit_gb)
    fits = measured["peak_memory_bytes"] <= limit
    files_kept = _checkpoint_files(trainer, epochs)
    report = {
        "rows": rows,
        # With --data.long_text chunk the rows are windows: one at max_length is a full window, nothing is cut.
        "truncated_share": {
            name: 0.0 if contract.long_text == "chunk" else split["tokens"]["truncated_share"]
            for name, split in data["splits"].items()
        },
        "long_text": contract.long_text,
        "data": data,
        "model": {
            "architecture": type(model.model).__name__,
            "parameters": total,
            "trainable_parameters": trainable,
            "vocab_size": vocab_size,
            "tokenizer_size": len(tokenizer),
            "tokenizer_matches_model": vocab_size is None or len(tokenizer) <= vocab_size,
        },
        "machine": machine,
        "native_precision": machine["native_precision"],
        **measured,
        "run_seconds": round(run_seconds, 1),
        "run_epochs": epochs,
        "memory_limit_bytes": limit,
        "fits": fits,
        "checkpoint_files_kept": files_kept,
        "checkpoint_disk_bytes": measured["checkpoint_bytes"] * files_kept,
        "warnings": [],
    }
    export_peak = measured["end_of_fit_memory_bytes"] > measured["steps_peak_memory_bytes"]
    if not fits:
        report["fix"] = memory_fix(datamodule, trainer, model)
        if export_peak:
            report["fix"] = (
                "--export.enabled false, then `python main.py export CHECKPOINT OUTPUT_DIR` in its own process; or "
                + report["fix"]
            )
    warning = precision_warning(machine["precision"], trainer.strategy.root_device.type)
    if warning:
        report["warnings"].append(warning)
    if not report["model"]["tokenizer_matches_model"]:
        report["warnings"].append(f"the tokenizer has {len(tokenizer)} tokens, the model {vocab_size} embeddings")
    folder = check_folder(trainer)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "check.json"
    path.write_text(json.dumps(report, indent=2))
    print(_summary(report))
    print(f"Wrote {path}")
    if not fits:
        moment = "the Hugging Face export at the end of fit" if export_peak else "the longest batch"
        raise CheckFailed(
            f"{moment} needs {measured['peak_memory_bytes'] / GIB:.2f} GiB, over the "
            f"{limit / GIB:.2f} GiB limit. Fix: {report['fix']}."
        )
    return report


def _checkpoint_files(trainer: Trainer, epochs: int) -> int:
    """Files the run's ModelCheckpoints keep at the end: top-k (all epochs with -1) plus `last`."""
    kept = 0
    for callback in trainer.checkpoint_callbacks:
        top_k = callback.save_top_k if callback.monitor else min(callback.save_top_k, 1)
        kept += (epochs if top_k == -1 else top_k) + bool(callback.save_last)
    return kept


def _summary(report: dict) -> str:
    model, machine = report["model"], report["machine"]
    lines = [
        f"data: rows {report['rows']}"
        + (", windows of long texts" if report["long_text"] == "chunk" else "")
        + f", truncated at max_length {report['truncated_share']}",
        f"model: {model['architecture']}, {model['parameters']:,} parameters ({model['trainable_parameters']:,} "
        f"trainable), tokenizer matches model: {model['tokenizer_matches_model']}",
        f"machine: {machine['device']} ({machine['cpu']}, {machine['cpu_isa']}), precision {machine['precision']} "
        f"native: {machine['native_precision']}",
        f"cost (steady state): {report['step_seconds']} s/step, epoch ~{report['epoch_seconds']:.0f} s including "
        f"{report['warmup_seconds']:.1f} s of warm-up, counted once per batch shape (rows x padded length): "
        f"{report['warmup_seconds_per_shape']} s for each of {report['distinct_shapes']} training shapes, "
        f"{report['validation_warmup_seconds_per_shape']} s for each of {report['validation_distinct_shapes']} "
        f"validation shapes; run ~{report['run_seconds']:.0f} s ({report['run_epochs']} epochs, warm-up in the first)",
        f"memory: peak {report['peak_memory_bytes'] / GIB:.2f} GiB of {report['memory_limit_bytes'] / GIB:.2f} "
        f"(steps {report['steps_peak_memory_bytes'] / GIB:.2f}"
        + (
            f", end of fit with the export {report['end_of_fit_memory_bytes'] / GIB:.2f}"
            if report["end_of_fit_memory_bytes"]
            else ""
        )
        + f"), checkpoints {report['checkpoint_disk_bytes'] / GIB:.2f} GiB on disk",
        f"verdict: {'fits' if report['fits'] else 'does not fit: ' + report['fix']}",
        *(f"warning: {w}" for w in report["warnings"]),
    ]
    return "\n".join(lines)
