"""PredictionWriter: one row per input, in input order, written to JSONL or CSV (merged across processes).

Memory stays flat in the file's size: each batch's logits are added into one float array (4 bytes per row and label)
as they come, in whatever order the length-sorted batches run; at the end the rows are written in input order, a
chunk of the input's columns at a time. With `--data.long_text chunk` a row's windows are averaged there (max for
multi-label; `WindowTotals`, modules/data/long_text.py), so there is one prediction per input however many windows
it took. A row's fields come from `Prediction.row` (modules/outputs/answers.py), as the server's answers do, decided
by the module's `decision_rule()`: the run's tuned thresholds or binary decision, unless the command was given its own
`--model.threshold` (modules/decisions). The logits arrive calibrated (`predict_step`).
"""

import csv
import json
from pathlib import Path

import torch
import torch.distributed as dist
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter

from modules.data.long_text import WindowTotals
from modules.data.tasks import TASKS
from modules.decisions.record import DecisionRule
from modules.model.loss import task_outputs
from modules.outputs.answers import Prediction
from modules.runs.paths import run_folder

CHUNK_ROWS = 4096  # rows of the input read and written at a time


class PredictionWriter(BasePredictionWriter):
    """Write `predict` outputs with the input text(s), the predicted label name(s) and each label's probability.

    Args:
        output_path: File to write; `.csv` writes CSV, anything else JSON lines (an existing file is replaced, and
            the run says so). None writes `predictions.jsonl` in the run's folder, or `predictions-1.jsonl`, ...
            when an earlier predict wrote that one.
    """

    def __init__(self, output_path: str | None = None) -> None:
        super().__init__(write_interval="batch")
        self.output_path = output_path
        self._windows: WindowTotals | None = None  # per input row: its windows' logits, folded as they come

    def on_predict_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        multi_label = TASKS[pl_module.hparams.problem_type] == "multi_label"
        self._windows = WindowTotals(len(pl_module.data_contract.predict_raw), multi_label)

    def write_on_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, prediction: dict, batch_indices, batch, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:  # fmt: skip
        self._windows.add(prediction["logits"].float(), prediction["index"])

    def on_predict_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        default_path = run_folder(trainer) / "predictions.jsonl"  # on every rank: `log_dir` is a collective
        task = TASKS[pl_module.hparams.problem_type]
        windows, self._windows = self._windows, None
        logits, counts = windows.totals, windows.counts
        if logits is None:
            logits = torch.zeros(len(counts), 1)
        if dist.is_available() and dist.is_initialized() and trainer.world_size > 1:
            # Each rank ran its own rows (windows): reduce the ranks' arrays, empty elsewhere.
            device = pl_module.device  # NCCL reduces GPU tensors only
            logits, counts = logits.to(device), counts.to(device)
            dist.all_reduce(logits, op=dist.ReduceOp.MAX if task == "multi_label" else dist.ReduceOp.SUM)
            dist.all_reduce(counts, op=dist.ReduceOp.SUM)
            logits, counts = logits.cpu(), counts.cpu()
        windows.totals, windows.counts = logits, counts
        if not trainer.is_global_zero:
            return
        raw = pl_module.data_contract.predict_raw
        if not bool((counts > 0).all()):
            raise RuntimeError(f"predictions cover {int((counts > 0).sum())} of {len(raw)} rows: some are missing.")
        if pl_module.data_contract.long_text != "chunk" and len(counts) and int(counts.max()) > 1:
            raise RuntimeError("some rows were predicted more than once")
        values = task_outputs(task, windows.logits())  # a row's windows' mean (max for multi-label); one: itself
        path = output_file(self.output_path, default_path)
        if path.exists():
            print(f"Overwriting {path} (--predictions.output_path names an existing file)")
        path.parent.mkdir(parents=True, exist_ok=True)
        names = [str(name) for name in pl_module.hparams.label_names]
        rule = pl_module.decision_rule()
        with path.open("w", newline="" if path.suffix == ".csv" else None) as f:
            writer = None
            for start in range(0, len(raw), CHUNK_ROWS):
                chunk = slice(start, start + CHUNK_ROWS)
                rows = self._rows(raw[chunk], names, task, rule, values[chunk])
                if path.suffix != ".csv":
                    f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
                    continue
                if writer is None:
                    writer = csv.DictWriter(f, fieldnames=list(_flatten(rows[0])))
                    writer.writeheader()
                writer.writerows(_flatten(row) for row in rows)
        print(f"Wrote {len(raw)} predictions to {path}")

    @staticmethod
    def _rows(columns: dict, names: list, task: str, rule: DecisionRule, values: torch.Tensor) -> list[dict]:
        """Rows of one chunk: the input's own columns (an `id`, say) come back with each prediction."""
        return [
            {c: column[i] for c, column in columns.items()}
            | Prediction(task, names, value, rule.threshold, rule.decision).row()
            for i, value in enumerate(values.tolist())
        ]


def output_file(output_path: str | None, default_path: Path) -> Path:
    """The file to write: the one named, else `default_path` or, when an earlier predict wrote it, the first free
    `<stem>-N<suffix>` beside it: a run's predictions are never replaced unless the user names the file."""
    if output_path:
        return Path(output_path)
    path, n = default_path, 0
    while path.exists():
        n += 1
        path = default_path.with_name(f"{default_path.stem}-{n}{default_path.suffix}")
    return path


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
