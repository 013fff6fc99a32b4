"""`LabelIssues`, the `--label_issues.*` flags: after `validate` or `test`, the rows whose given label the model's
calibrated probabilities contradict, found and ranked by cleanlab (confident learning) and written to
`<stage>_label_issues.csv` in the run folder. A data-cleaning aid, not a verdict (docs/label-issues.md).

cleanlab is optional (`pip install hf-lightning[quality]`) and imported only when the flag is on."""

import csv
import importlib.util
from typing import TYPE_CHECKING, Literal

import numpy as np
from lightning.pytorch import Callback, LightningModule, Trainer

from modules.decisions.outputs import EvalOutputs
from modules.errors import HFLightningError
from modules.model.loss import task_outputs
from modules.runs.paths import run_folder

if TYPE_CHECKING:
    from datasets import Dataset

RankBy = Literal["self_confidence", "normalized_margin", "confidence_weighted_entropy"]
# Columns a dataset commonly keys its rows by: copied into the CSV so a flagged row can be found in the source.
ID_COLUMNS = ("id", "idx")
RESULT_COLUMNS = ["given_label", "suggested_label", "given_probability", "suggested_probability", "label_quality"]


def find_issues(
    probabilities: np.ndarray, labels: np.ndarray, multi_label: bool, rank_by: RankBy = "self_confidence"
) -> tuple[np.ndarray, np.ndarray]:
    """The rows cleanlab flags as likely mislabelled, most likely first, and every row's label quality score.

    Args:
        probabilities: `(rows, num_labels)` out-of-sample probabilities (softmax rows, or one sigmoid per label).
        labels: the given labels: `(rows,)` class ids, or `(rows, num_labels)` 0/1 for multi-label.
        multi_label: whether `labels` is a 0/1 matrix (each label judged one-vs-rest, then aggregated per row).
        rank_by: cleanlab's label quality score, the order of the flagged rows.

    Returns:
        `(flagged, scores)`: the flagged rows' positions, ordered by ascending score (ties by position), and `(rows,)`
        scores in [0, 1], low where the given label is unlikely.
    """
    probabilities = np.array(probabilities, dtype=np.float64)  # a copy: changed below
    if multi_label:
        from cleanlab.multilabel_classification import filter as cleanlab_filter
        from cleanlab.multilabel_classification import rank as cleanlab_rank

        # cleanlab judges each label one-vs-rest: it refuses a label present in every row, and takes one absent from
        # every row (never flagging it: no row shows what the label looks like). The column turned round (absent,
        # probability 1 - p) scores the same (the scores are symmetric) and is taken.
        labels = np.asarray(labels).astype(bool)
        everywhere = labels.all(axis=0)
        labels[:, everywhere] = False
        probabilities[:, everywhere] = 1 - probabilities[:, everywhere]
        if not labels.any():  # every label in all rows or in none: no row's label stands out from the others
            return np.empty(0, dtype=np.int64), np.ones(len(labels))
        given = [np.flatnonzero(row).tolist() for row in labels]
    else:
        from cleanlab import filter as cleanlab_filter
        from cleanlab import rank as cleanlab_rank

        given = np.asarray(labels, dtype=np.int64)
    # n_jobs=1: no worker processes forked from a training process (they would copy the model and CUDA state).
    mask = cleanlab_filter.find_label_issues(given, probabilities, n_jobs=1)
    scores = cleanlab_rank.get_label_quality_scores(given, probabilities, method=rank_by)
    flagged = np.flatnonzero(mask)
    return flagged[np.argsort(scores[flagged], kind="stable")], scores


class LabelIssues(Callback):
    """Likely label errors of `validate` or `test`, ranked by cleanlab, in `<stage>_label_issues.csv`.

    The rows whose given label the model's calibrated probabilities contradict, most likely first, written to the
    run folder. A data-cleaning aid: review the rows it lists, do not relabel them blindly (docs/label-issues.md).
    Needs cleanlab (`pip install hf-lightning[quality]`); classifiers only.

    Args:
        enabled: Find and write the likely label errors of the split `validate` or `test` ran on, using the
            checkpoint's calibrated probabilities. The model must not have trained on that split.
        max_rows: Write at most this many rows (the most likely errors); unset (null) writes every flagged row.
        rank_by: cleanlab's label quality score, the CSV's order and `label_quality` column: `self_confidence`
            (the probability of the given label), `normalized_margin` (how far it is below the best other label)
            or `confidence_weighted_entropy`.
    """

    def __init__(self, enabled: bool = False, max_rows: int | None = None, rank_by: RankBy = "self_confidence") -> None:
        if max_rows is not None and max_rows < 1:
            raise HFLightningError(f"--label_issues.max_rows must be at least 1 (or null for all), got {max_rows}.")
        self.enabled = enabled
        self.max_rows = max_rows
        self.rank_by = rank_by

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if not self.enabled or stage not in ("validate", "test"):
            return
        contract = getattr(trainer.datamodule, "contract", None)
        spec = contract.label_spec if contract is not None else None
        if (spec.task if spec else pl_module.task) == "regression":
            raise HFLightningError("--label_issues.enabled true applies to classifiers, not regression: turn it off.")
        if importlib.util.find_spec("cleanlab") is None:
            raise HFLightningError(
                "--label_issues.enabled true needs cleanlab: `pip install hf-lightning[quality]` (or `pip install "
                "cleanlab`)."
            )  # fmt: skip

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.state.fn == "validate":  # not fit's validations: the decisions are still being fitted
            self._write(trainer, pl_module, "validation", getattr(pl_module, "val_outputs", None))

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._write(trainer, pl_module, "test", getattr(pl_module, "test_outputs", None))

    def _write(self, trainer: Trainer, pl_module: LightningModule, split: str, outputs: EvalOutputs | None) -> None:
        if not self.enabled or outputs is None or not len(outputs):
            return
        folder = run_folder(trainer)  # on every rank: a collective
        if not trainer.is_global_zero:
            return
        raw = pl_module.data_contract.raw_splits.get(split) if pl_module.data_contract else None
        columns = (*pl_module.data_contract.text_columns, None)[:2] if pl_module.data_contract else ("text", None)
        sources = source_columns(raw, *columns)
        rows, flagged = self.rows(pl_module, outputs, raw, sources)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{'validate' if split == 'validation' else split}_label_issues.csv"
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["index", *sources, *RESULT_COLUMNS])
            writer.writeheader()
            writer.writerows(rows)
        shown = f" (the first {len(rows)})" if len(rows) < flagged else ""
        print(f"Likely label errors: {flagged} of {len(outputs)} {split} rows{shown}, written to {path}")

    def rows(
        self, pl_module: LightningModule, outputs: EvalOutputs, raw: "Dataset | None", sources: dict[str, str]
    ) -> tuple[list[dict], int]:
        """The CSV rows of the flagged issues (at most `max_rows`, most likely first), and how many were flagged."""
        task, names = pl_module.task, [str(name) for name in pl_module.hparams.label_names]
        multi_label = task == "multi_label"
        probabilities = task_outputs(task, pl_module.calibrated(outputs.logits)).double().numpy()
        labels = outputs.labels.long().numpy()
        suggested = pl_module.decide(outputs.logits).long().numpy()  # as the run's decisions decide
        flagged, scores = find_issues(probabilities, labels, multi_label, self.rank_by)
        chosen = flagged[: self.max_rows]
        index = outputs.index[chosen].tolist()
        found = raw.select(index) if raw is not None and sources else None
        texts = {name: found[column] for name, column in sources.items()} if found is not None else {}
        rows = []
        for n, (position, row_index) in enumerate(zip(chosen.tolist(), index)):
            row = {"index": row_index, **{name: values[n] for name, values in texts.items()}}
            p = probabilities[position]
            if multi_label:
                given, model = np.flatnonzero(labels[position]), np.flatnonzero(suggested[position])
                row["given_label"] = ";".join(names[k] for k in given)
                row["suggested_label"] = ";".join(names[k] for k in model)
                row["given_probability"] = ";".join(f"{names[k]}={p[k]:.4f}" for k in given)
                row["suggested_probability"] = ";".join(f"{names[k]}={p[k]:.4f}" for k in model)
            else:
                given, model = labels[position], suggested[position]
                row["given_label"], row["suggested_label"] = names[given], names[model]
                row["given_probability"], row["suggested_probability"] = round(p[given], 4), round(p[model], 4)
            row["label_quality"] = round(float(scores[position]), 4)
            rows.append(row)
        return rows, len(flagged)


def source_columns(raw: "Dataset | None", text_column: str, text_pair_column: str | None) -> dict[str, str]:
    """CSV column -> the split's column it copies: `id` (the data's `id` or `idx`), `text` and `text_pair`, for
    those the split has, so a flagged row can be read and found in the source data."""
    present = raw.column_names if raw is not None else []
    wanted = {"id": next((c for c in ID_COLUMNS if c in present), None), "text": text_column}
    wanted["text_pair"] = text_pair_column
    return {name: column for name, column in wanted.items() if column and column in present}
