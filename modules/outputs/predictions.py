"""PredictionWriter: one row per input, in input order, written to JSONL or CSV (merged across processes)."""

import csv
import json
from pathlib import Path

import torch
import torch.distributed as dist
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter

from modules.data.labels import TASKS
from modules.run.paths import run_folder


class PredictionWriter(BasePredictionWriter):
    """Write `predict` outputs with the input text(s), the predicted label name(s) and each label's probability.

    Args:
        output_path: File to write; `.csv` writes CSV, anything else JSON lines. None writes
            `predictions.jsonl` in the run's folder.
    """

    def __init__(self, output_path: str | None = None) -> None:
        super().__init__(write_interval="epoch")
        self.output_path = output_path

    def write_on_epoch_end(
        self, trainer: Trainer, pl_module: LightningModule, predictions: list, batch_indices
    ) -> None:
        default_path = run_folder(trainer) / "predictions.jsonl"  # on every rank: `log_dir` is a collective
        outputs = predictions[0] if predictions and isinstance(predictions[0], list) else predictions
        index = torch.cat([o["index"] for o in outputs]) if outputs else torch.empty(0, dtype=torch.long)
        values = torch.cat([o["outputs"] for o in outputs]) if outputs else torch.empty(0)
        if dist.is_available() and dist.is_initialized() and trainer.world_size > 1:
            gathered = [None] * trainer.world_size if trainer.is_global_zero else None
            dist.gather_object((index, values), gathered, dst=0)
            if trainer.is_global_zero:
                index = torch.cat([g[0] for g in gathered])
                values = torch.cat([g[1] for g in gathered])
        if not trainer.is_global_zero:
            return
        order = torch.argsort(index)
        index, values = index[order], values[order]
        raw = trainer.datamodule.predict_raw
        if index.tolist() != list(range(len(raw))):
            raise RuntimeError(f"predictions cover rows {len(index)} of {len(raw)}: some rows are missing or repeated.")
        path = Path(self.output_path or default_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = self._rows(trainer.datamodule, pl_module.hparams, raw, values)
        if path.suffix == ".csv":
            with path.open("w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(_flatten(rows[0])) if rows else [])
                writer.writeheader()
                writer.writerows(_flatten(row) for row in rows)
        else:
            with path.open("w") as f:
                f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        print(f"Wrote {len(rows)} predictions to {path}")

    @staticmethod
    def _rows(datamodule, hparams, raw, values: torch.Tensor) -> list[dict]:
        columns = list(raw.column_names)  # the input's own columns (an `id`, say) come back with each prediction
        texts = {c: raw[c][:] for c in columns}
        names, task = list(hparams.label_names), TASKS[hparams.problem_type]
        rows = []
        for i, value in enumerate(values.tolist()):
            row = {c: texts[c][i] for c in columns}
            if task == "regression":
                row["prediction"] = value
            elif task == "multi_label":
                row["prediction"] = [n for n, p in zip(names, value) if p > hparams.threshold]
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
