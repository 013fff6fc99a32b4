"""The test report of a single-label run: a confusion-matrix figure and a per-class precision/recall/F1 table.

matplotlib is optional (`pip install hf-lightning[plots]`): without it the table is still written.
"""

import csv

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import MLFlowLogger, TensorBoardLogger

from modules.runs.paths import run_folder


def per_class_rows(matrix: torch.Tensor, names: list[str]) -> list[dict]:
    """precision, recall, F1 and support per label from a confusion matrix (rows: true label, columns: predicted).

    A label never predicted has precision 0, one absent from the data recall 0 (torchmetrics' convention).
    """
    matrix = matrix.double()
    hits, predicted, support = matrix.diagonal(), matrix.sum(0), matrix.sum(1)
    precision = torch.where(predicted > 0, hits / predicted.clamp(min=1), 0.0)
    recall = torch.where(support > 0, hits / support.clamp(min=1), 0.0)
    f1 = torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall).clamp(min=1e-12), 0.0)
    return [
        {"label": name, "precision": p, "recall": r, "f1": f, "support": int(s)}
        for name, p, r, f, s in zip(names, precision.tolist(), recall.tolist(), f1.tolist(), support.tolist())
    ]


def markdown_table(rows: list[dict]) -> str:
    lines = ["| label | precision | recall | f1 | support |", "|---|---|---|---|---|"]
    lines += [
        f"| {r['label']} | {r['precision']:.4f} | {r['recall']:.4f} | {r['f1']:.4f} | {r['support']} |" for r in rows
    ]
    return "\n".join(lines)


def confusion_figure(matrix: torch.Tensor, names: list[str]):
    """A matplotlib Figure of the counts (no pyplot: no display or backend needed)."""
    from matplotlib.figure import Figure

    n = len(names)
    size = min(4 + 0.5 * n, 20)
    figure = Figure(figsize=(size, size))
    axes = figure.subplots()
    image = axes.imshow(matrix.numpy(), cmap="Blues")
    axes.set_xticks(range(n), labels=names, rotation=45, ha="right")
    axes.set_yticks(range(n), labels=names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(f"Test confusion matrix ({int(matrix.sum())} rows)")
    if n <= 30:  # beyond that the numbers no longer fit their cells
        high = matrix.max().item() / 2
        for i in range(n):
            for j in range(n):
                count = int(matrix[i, j])
                axes.text(j, i, count, ha="center", va="center", color="white" if count > high else "black")
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)  # as tall as the matrix
    figure.tight_layout()
    return figure


class TestReport(Callback):
    """The per-class report of `test` (single-label models): confusion matrix and precision/recall/F1 per label.

    Writes `test_confusion_matrix.png` and `test_per_class.csv` into the run folder, prints the per-class table, and
    adds the figure to TensorBoard (and both files to MLflow).

    The counts come from torchmetrics' confusion matrix, synchronised across processes: every test row once.

    Args:
        enabled: Write the report at the end of `test`.
    """

    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        matrix = getattr(pl_module, "test_confusion_matrix", None)
        if not self.enabled or matrix is None:
            return
        folder = run_folder(trainer)  # on every rank: a collective
        if not trainer.is_global_zero:
            return
        folder.mkdir(parents=True, exist_ok=True)
        names = [str(name) for name in pl_module.hparams.label_names]
        rows = per_class_rows(matrix, names)
        table = folder / "test_per_class.csv"
        with table.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        print(markdown_table(rows))
        files = [table]
        try:
            figure = confusion_figure(matrix, names)
        except ImportError:
            print("No confusion-matrix figure: matplotlib is not installed (`pip install hf-lightning[plots]`).")
        else:
            files.append(folder / "test_confusion_matrix.png")
            figure.savefig(files[-1], dpi=120)
            for logger in trainer.loggers:
                if isinstance(logger, TensorBoardLogger):
                    logger.experiment.add_figure("test_confusion_matrix", figure, trainer.global_step, close=False)
        for logger in trainer.loggers:
            if isinstance(logger, MLFlowLogger):
                for path in files:
                    logger.experiment.log_artifact(logger.run_id, str(path))
        print(f"Wrote {', '.join(p.name for p in files)} to {folder}")
