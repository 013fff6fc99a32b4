"""PredictionWriter: one row per input, in input order, written to JSONL or CSV (merged across processes).

Memory stays flat in the file's size: each batch's outputs go into one float array (4 bytes per row and label) as
they come, in whatever order the length-sorted batches run; at the end the rows are written in input order, a chunk
of the input's columns at a time.
"""

import csv
import json
from pathlib import Path

import torch
import torch.distributed as dist
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter

from modules.data.labels import TASKS
from modules.run.paths import run_folder

CHUNK_ROWS = 4096  # rows of the input read and written at a time


class PredictionWriter(BasePredictionWriter):
    """Write `predict` outputs with the input text(s), the predicted label name(s) and each label's probability.

    Args:
        output_path: File to write; `.csv` writes CSV, anything else JSON lines. None writes
            `predictions.jsonl` in the run's folder.
    """

    def __init__(self, output_path: str | None = None) -> None:
        super().__init__(write_interval="batch")
        self.output_path = output_path
        self._values: torch.Tensor | None = None
        self._filled: torch.Tensor | None = None

    def on_predict_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._values, self._filled = None, torch.zeros(len(trainer.datamodule.predict_raw), dtype=torch.bool)

    def write_on_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, prediction: dict, batch_indices, batch, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:  # fmt: skip
        index, values = prediction["index"], prediction["outputs"].float()
        if self._values is None:
            self._values = torch.zeros((len(self._filled), *values.shape[1:]))
        self._values[index] = values
        self._filled[index] = True

    def on_predict_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        default_path = run_folder(trainer) / "predictions.jsonl"  # on every rank: `log_dir` is a collective
        values, filled = self._values, self._filled
        if values is None:
            values = torch.zeros(len(filled))
        if dist.is_available() and dist.is_initialized() and trainer.world_size > 1:
            # Each rank ran its own rows: the sums of the ranks' arrays (zeros elsewhere) are the full outputs.
            device = pl_module.device  # NCCL reduces GPU tensors only
            values, counts = values.to(device), filled.to(device, torch.int32)
            dist.all_reduce(values, op=dist.ReduceOp.SUM)
            dist.all_reduce(counts, op=dist.ReduceOp.SUM)
            values, counts = values.cpu(), counts.cpu()
            filled = counts == 1
            if int(counts.max()) > 1:
                raise RuntimeError("some rows were predicted on more than one process")
        self._values = self._filled = None
        if not trainer.is_global_zero:
            return
        raw = trainer.datamodule.predict_raw
        if not bool(filled.all()):
            raise RuntimeError(f"predictions cover {int(filled.sum())} of {len(raw)} rows: some rows are missing.")
        path = Path(self.output_path or default_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        names, task = list(pl_module.hparams.label_names), TASKS[pl_module.hparams.problem_type]
        with path.open("w", newline="" if path.suffix == ".csv" else None) as f:
            writer = None
            for start in range(0, len(raw), CHUNK_ROWS):
                rows = self._rows(raw[start : start + CHUNK_ROWS], names, task, pl_module.hparams.threshold,
                                  values[start : start + CHUNK_ROWS])  # fmt: skip
                if path.suffix != ".csv":
                    f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
                    continue
                if writer is None:
                    writer = csv.DictWriter(f, fieldnames=list(_flatten(rows[0])))
                    writer.writeheader()
                writer.writerows(_flatten(row) for row in rows)
        print(f"Wrote {len(raw)} predictions to {path}")

    @staticmethod
    def _rows(columns: dict, names: list, task: str, threshold: float, values: torch.Tensor) -> list[dict]:
        """Rows of one chunk: the input's own columns (an `id`, say) come back with each prediction."""
        rows = []
        for i, value in enumerate(values.tolist()):
            row = {c: column[i] for c, column in columns.items()}
            if task == "regression":
                row["prediction"] = value
            elif task == "multi_label":
                row["prediction"] = [n for n, p in zip(names, value) if p > threshold]
                row["probabilities"] = dict(zip(names, value))
            else:
                row["prediction"] = names[max(range(len(value)), key=value.__getitem__)]
                row["probabilities"] = dict(zip(names, value))
            rows.append(row)
        return rows


def _flatten(row: dict) -> dict:
    """CSV cells: probabilities become `prob_<label>` columns, label lists a `;`-joined string."""
    flat = {}
    for key, value in row.items():
        if isinstance(value, dict):
            flat.update({f"prob_{k}": v for k, v in value.items()})
        elif isinstance(value, list):
            flat[key] = ";".join(map(str, value))
        else:
            flat[key] = value
    return flat
