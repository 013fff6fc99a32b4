"""Export a checkpoint in Hugging Face format (config with label names, safetensors, tokenizer, model card).

LoRA checkpoints are exported with the adapters merged into the base weights, so the folder is a plain model.

After the fact: `python main.py export CHECKPOINT OUTPUT_DIR [--onnx [--quantize]]`; ONNX files for an existing
export folder: `python main.py export HF_MODEL_DIR --onnx [--quantize]` (written into it). The folder then loads with
`pipeline("text-classification", model=OUTPUT_DIR)` or `AutoModelForSequenceClassification.from_pretrained`.
"""

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from transformers import AutoTokenizer

from modules.cli.plain_parser import PlainParser
from modules.console.quiet import plain_output
from modules.data.contract import clamp_max_length
from modules.decisions.calibration import fold_into_head
from modules.decisions.record import Decisions
from modules.errors import HFLightningError
from modules.model import trained_model
from modules.model.lora import parameter_counts
from modules.outputs.int8_check import describe as describe_int8
from modules.outputs.int8_check import int8_check
from modules.outputs.model_card import write_model_card
from modules.outputs.onnx import INT8_FILE, export_onnx, require_onnxruntime
from modules.runs.paths import load_checkpoint, log_folder
from modules.runs.record import RunRecord


def export_checkpoint(
    checkpoint_path: str | Path, output_dir: str | Path, tokenizer_name_or_path: str | None = None
) -> Path:
    """Write the Hugging Face model and tokenizer of a Lightning checkpoint to `output_dir`; returns it."""
    state = load_checkpoint(checkpoint_path)
    record = RunRecord.from_checkpoint(state)
    model = trained_model(state)  # LoRA adapters merged in: a plain model that needs no peft to load
    output_dir = Path(output_dir)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_name_or_path or record.tokenizer)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if record.max_length:
        # The length the run was trained and evaluated at, clamped by the one rule (a checkpoint of an earlier
        # version may hold the length asked for): `pipeline(..., truncation=True)` and `serve` cut there too.
        tokenizer.model_max_length = clamp_max_length(record.max_length, model.config, tokenizer.model_max_length)
    if record.long_text == "chunk":
        # How the run read long texts, so `serve` windows them as `predict` does (modules/serve/api.py `describe`).
        model.config.hf_lightning_long_text = "chunk"
        model.config.hf_lightning_stride = record.stride
    if record.problem_type == "multi_label_classification" and record.threshold is not None:
        # The threshold predict and test used, so `serve` decides as they did (modules/serve/api.py `describe`).
        model.config.hf_lightning_threshold = record.threshold
    decisions = Decisions.from_checkpoint(state)
    if decisions is not None:
        # Calibrated probabilities for any reader of the folder (`pipeline`, ONNX, another server): the calibration
        # goes into the head's last layer; the thresholds into the config, where `serve` reads them.
        if decisions.calibration is not None:
            fold_into_head(model, decisions.calibration, model.config.num_labels)
        for key, value in decisions.export_keys().items():
            setattr(model.config, key, value)
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    # Some writers create files 0600 (temporary file, then rename); the export is for sharing: the user's umask.
    umask = os.umask(0)
    os.umask(umask)
    for path in output_dir.iterdir():
        if path.is_file():
            path.chmod(0o666 & ~umask)
    return output_dir


def hardware() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


class HFExport(Callback):
    """The Hugging Face export, with a model card, written at the end of `fit`.

    Records the run in `fit_summary.json` and exports the best checkpoint (else the last) in Hugging Face format to
    `<run folder>/<dirname>`.

    Args:
        enabled: Export at the end of fit (the summary is written either way).
        dirname: Folder name inside the run folder.
        onnx: Also write `model.onnx` (fp32, dynamic batch and sequence axes) into the export (docs/serve.md).
        quantize: Also write `model.int8.onnx`, int8 dynamic quantization of `model.onnx`; needs `onnx`.
    """

    def __init__(
        self, enabled: bool = True, dirname: str = "hf_model", onnx: bool = False, quantize: bool = False
    ) -> None:
        if quantize and not onnx:
            raise HFLightningError("--export.quantize true quantizes the ONNX export: add --export.onnx true")
        if onnx and not enabled:
            raise HFLightningError("--export.onnx true converts the Hugging Face export: drop --export.enabled false")
        if onnx:
            require_onnxruntime()  # when the config is read, not after training
        self.enabled = enabled
        self.dirname = dirname
        self.onnx = onnx
        self.quantize = quantize
        self._start = 0.0

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start = time.perf_counter()

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        callback = trainer.checkpoint_callback
        checkpoint = (callback.best_model_path or callback.last_model_path) if callback else ""
        run_dir = log_folder(trainer)  # on every rank: a collective
        if trainer.is_global_zero:
            run_dir.mkdir(parents=True, exist_ok=True)
            contract = pl_module.data_contract  # what the data told the model (modules/data/contract.py)
            trainable, total = getattr(pl_module, "parameter_counts", None) or parameter_counts(pl_module)
            summary = {
                "base_model": pl_module.hparams.model_name_or_path,
                "dataset": contract.dataset,
                "data_files": contract.data_files,
                "example_text": contract.example_text,
                "best_checkpoint": checkpoint,
                "monitor": callback.monitor if callback else None,
                "best_score": float(callback.best_model_score)
                if callback and callback.best_model_score is not None
                else None,
                "val_metrics": {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val_")},
                "train_seconds": time.perf_counter() - self._start,
                "hardware": hardware(),
                "epochs": trainer.current_epoch,
                "global_step": trainer.global_step,
                "parameters": total,
                "trainable_parameters": trainable,
            }
            (run_dir / "fit_summary.json").write_text(json.dumps(summary, indent=2, default=str))
            if self.enabled and checkpoint and not trainer.interrupted:
                output_dir = export_checkpoint(checkpoint, run_dir / self.dirname, contract.tokenizer_name_or_path)
                write_model_card(output_dir, run_dir)
                print(f"Exported {checkpoint} in Hugging Face format to {output_dir}")
                if self.onnx:
                    print(f"Exported ONNX to {export_onnx(output_dir, quantize=self.quantize)}")
                if self.quantize:
                    self._check_int8(output_dir, pl_module)
        trainer.strategy.barrier()

    @staticmethod
    def _check_int8(output_dir: Path, pl_module: LightningModule) -> None:
        """Compare `model.int8.onnx` with `model.onnx` on the validation split; recorded for `serve --backend auto`."""
        contract = pl_module.data_contract
        rows = contract.raw_splits.get("validation")
        if pl_module.task == "regression" or rows is None or not len(rows):
            return
        columns = contract.text_columns
        pairs = rows[columns[1]][:] if len(columns) > 1 else None
        check = int8_check(output_dir, rows[columns[0]][:], pairs, rows["labels"][:], "validation")
        print(describe_int8(check))


def main(args: list[str] | None = None) -> None:
    """`main.py export`: a checkpoint to a Hugging Face folder (and ONNX), or ONNX files for an existing folder."""
    parser = PlainParser("export", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "checkpoint",
        metavar="CHECKPOINT|HF_MODEL_DIR",
        help="a Lightning .ckpt written by `fit`, or an hf_model/ export folder (with --onnx: model.onnx goes into it)",
    )
    parser.add_argument(
        "output_dir", nargs="?", help="for a checkpoint: the folder to write the model, tokenizer and model card to"
    )
    parser.add_argument(
        "--tokenizer", help="tokenizer name or folder (default: the one the checkpoint was trained with)"
    )
    parser.add_argument("--onnx", action="store_true", help="also write model.onnx (docs/serve.md)")
    parser.add_argument("--quantize", action="store_true", help="also write model.int8.onnx (needs --onnx)")
    parsed = parser.parse_args(args)
    source = Path(parsed.checkpoint)
    if not source.exists():
        parser.error(f"{source} does not exist: pass a checkpoint (.ckpt) or an hf_model/ export folder")
    if parsed.quantize and not parsed.onnx:
        parser.error("--quantize quantizes the ONNX export: add --onnx")
    if source.is_dir() and (not parsed.onnx or parsed.output_dir or parsed.tokenizer):
        parser.error(f"{source} is a folder: `export HF_MODEL_DIR --onnx [--quantize]` adds ONNX files to an export")
    if not source.is_dir() and parsed.output_dir is None:
        parser.error(f"name the folder to export {source} to: `export CHECKPOINT OUTPUT_DIR`")
    if not sys.stderr.isatty():
        plain_output()  # a log file gets no redrawn bars of the model's loading and saving
    try:
        if parsed.onnx:
            require_onnxruntime()  # before the Hugging Face export: no half-done work
        output_dir = source
        if not source.is_dir():
            output_dir = export_checkpoint(source, parsed.output_dir, parsed.tokenizer)
            run_dir = source.parent.parent if source.parent.name == "checkpoints" else source.parent
            write_model_card(output_dir, run_dir)
            print(f"Exported {source} to {output_dir}")
        if parsed.onnx:
            path = export_onnx(output_dir, quantize=parsed.quantize)
            print(f"Exported ONNX to {path}" + (f" and {path.parent / INT8_FILE}" if parsed.quantize else ""))
    except HFLightningError as error:
        parser.error(str(error))


if __name__ == "__main__":
    main()
