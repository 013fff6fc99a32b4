"""The test report a person reads: what the run decided (calibration, thresholds), precision/recall/F1 per label,
calibration before and after, the labels the model mixes up, a regression's residuals, the wrong rows
(`test_errors.csv`, modules/outputs/errors.py) and the figures (modules/outputs/figures.py).

How to read each file: docs/outputs.md, "The test report".
"""

import csv
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import MLFlowLogger, TensorBoardLogger

from modules.decisions.calibration import BINS, expected_calibration_error, reliability
from modules.decisions.callback import describe
from modules.decisions.collapse import ADVICE, collapse_findings
from modules.decisions.thresholds import f1_scores
from modules.errors import HFLightningError
from modules.model.loss import task_outputs
from modules.outputs import breakdown, errors
from modules.outputs import figures as drawing
from modules.runs.paths import run_folder

WORST_PRINTED = 10  # regression: the rows with the largest errors the report prints


class TestReport(Callback):
    """The report of `test`: per-label scores, calibration, the labels mixed up and the wrong rows.

    Prints the report and writes into the run folder `test_per_class.csv` (precision, recall, F1, support per label;
    multi-label adds each label's threshold and whether it was tuned), `test_errors.csv` (the wrong rows, most
    confident first), and with matplotlib `test_confusion_matrix.png` (single-label) and `test_reliability.png`
    (classifiers). TensorBoard gets the figures, MLflow every file. Every test row counts once, also across
    processes and with `--data.long_text chunk` (one row per document). docs/outputs.md says how to read it.

    Args:
        enabled: Write the report at the end of `test`.
        errors: Write `test_errors.csv`.
        regression_errors: Regression: the rows of `test_errors.csv`, those with the largest absolute errors.
    """

    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, enabled: bool = True, errors: bool = True, regression_errors: int = 100) -> None:
        if regression_errors < 1:
            raise HFLightningError(f"--report.regression_errors must be at least 1, got {regression_errors}.")
        self.enabled = enabled
        self.errors = errors
        self.regression_errors = regression_errors

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        outputs = getattr(pl_module, "test_outputs", None)
        if not self.enabled or outputs is None or not len(outputs):
            return
        folder = run_folder(trainer)  # on every rank: a collective
        if not trainer.is_global_zero:
            return
        folder.mkdir(parents=True, exist_ok=True)
        task, names = pl_module.task, [str(name) for name in pl_module.hparams.label_names]
        predicted = pl_module.decide(outputs.logits)
        probabilities = task_outputs(task, pl_module.calibrated(outputs.logits))
        print(f"\nTest report ({len(outputs):,} rows)")
        for line in describe(pl_module.decisions) if pl_module.decisions is not None else ():
            print(line)
        figures: dict = {}
        files = (
            [] if task == "regression" else [self._classification(folder, pl_module, predicted, probabilities, figures)]
        )
        source, columns = _inputs(pl_module.data_contract)
        if task == "regression":
            worst = errors.error_rows(task, outputs.index, outputs.labels, predicted, probabilities, names,
                                      regression_rows=WORST_PRINTED)  # fmt: skip
            _print_regression(breakdown.residual_summary(predicted, outputs.labels),
                              errors.with_inputs(worst, source, columns))  # fmt: skip
        if self.errors:
            files.append(self._write_errors(folder, pl_module, predicted, probabilities, source, columns))
        findings = collapse_findings(predicted, outputs.labels, names, task)
        if findings:
            print(f"warning: the model's test predictions look collapsed: {'; '.join(findings)}. {ADVICE}.")
        files += _save_figures(folder, figures, trainer)
        for logger in trainer.loggers:
            if isinstance(logger, MLFlowLogger):
                for path in files:
                    logger.experiment.log_artifact(logger.run_id, str(path))
        print(f"Wrote {', '.join(p.name for p in files)} to {folder}")

    def _classification(self, folder: Path, pl_module, predicted, probabilities, figures: dict) -> Path:
        outputs, task = pl_module.test_outputs, pl_module.task
        names = [str(name) for name in pl_module.hparams.label_names]
        multi_label = task == "multi_label"
        if multi_label:
            rows = breakdown.multi_label_rows(predicted, outputs.labels, names)
            _add_thresholds(rows, pl_module)
        else:
            matrix = breakdown.confusion_matrix(predicted, outputs.labels, len(names))
            rows = breakdown.per_class_rows(matrix, names)
            figures["test_confusion_matrix"] = lambda: drawing.confusion_figure(matrix, names)
        table = folder / "test_per_class.csv"
        with table.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        print(breakdown.markdown_table(rows))
        raw = task_outputs(task, outputs.logits)
        if multi_label:
            _print_f1(pl_module, predicted, raw)
        calibrated = pl_module.decisions is not None and pl_module.decisions.calibration is not None
        curves = {"raw": raw, "calibrated": probabilities} if calibrated else {"raw (not calibrated)": raw}
        curves = {
            name: (
                reliability(p, outputs.labels, multi_label),
                expected_calibration_error(p, outputs.labels, multi_label),
            )
            for name, p in curves.items()
        }
        print(f"ECE ({BINS} bins): " + ", ".join(f"{name} {ece:.4f}" for name, (_, ece) in curves.items()))
        what = "each label's probability" if multi_label else "the predicted label's probability"
        figures["test_reliability"] = lambda: drawing.reliability_figure(curves, what)
        pairs = breakdown.confused_pairs(predicted, outputs.labels, names)
        kind = "gold label -> a label predicted instead, in wrong rows" if multi_label else "gold -> predicted"
        shown = ", ".join(f"{p['gold']} -> {p['predicted']} ({p['rows']})" for p in pairs) or "none"
        print(f"Most confused ({kind}): {shown}")
        return table

    def _write_errors(self, folder: Path, pl_module, predicted, probabilities, source, columns: list[str]) -> Path:
        outputs, task = pl_module.test_outputs, pl_module.task
        names = [str(name) for name in pl_module.hparams.label_names]
        thresholds = pl_module.decision_rule().per_label(len(names)) if task == "multi_label" else ()
        rows = errors.error_rows(task, outputs.index, outputs.labels, predicted, probabilities, names, thresholds,
                                 self.regression_errors)  # fmt: skip
        path = folder / "test_errors.csv"
        errors.write_errors(path, errors.with_inputs(rows, source, columns), errors.header(task, columns))
        what = "largest errors" if task == "regression" else "wrong rows, most confident first"
        print(f"test_errors.csv: {len(rows):,} {what}")
        return path


def _inputs(contract) -> tuple[object, list[str]]:
    """The test split's cleaned rows (None when the data keeps none) and the columns test_errors.csv repeats."""
    if contract is None:
        return None, []
    source = contract.raw_splits.get("test")
    return source, errors.input_columns(source, list(contract.text_columns))


def _add_thresholds(rows: list[dict], pl_module) -> None:
    """Multi-label: each label's threshold, whether it was tuned, and if not, why."""
    rule, decisions = pl_module.decision_rule(), pl_module.decisions
    tuned = isinstance(rule.threshold, Sequence)  # else one threshold for every label
    for row, threshold in zip(rows, rule.per_label(len(rows))):
        if tuned:
            why = decisions.untuned.get(row["label"], "")
        elif decisions is not None and decisions.thresholds is not None:
            why = f"this command's --model.threshold {threshold} replaces the tuned thresholds"
        else:
            why = "the checkpoint has no tuned thresholds (--decisions.tune_thresholds false)"
        row.update(threshold=round(threshold, 6), tuned=not why, untuned_because=why)


def _print_f1(pl_module, predicted: torch.Tensor, raw: torch.Tensor) -> None:
    """Multi-label: macro and micro F1 as decided, beside `--model.threshold` on the raw scores."""
    labels, threshold = pl_module.test_outputs.labels, float(pl_module.hparams.threshold)
    rule = pl_module.decision_rule()
    decided = "tuned thresholds" if isinstance(rule.threshold, Sequence) else f"threshold {rule.threshold}"
    calibrated = pl_module.decisions is not None and pl_module.decisions.calibration is not None
    rows = []
    for name, decisions in ((f"{decided}, {'calibrated' if calibrated else 'raw'} scores", predicted),
                            (f"--model.threshold {threshold}, raw scores", raw > threshold)):  # fmt: skip
        macro, micro = f1_scores(decisions, labels)
        rows.append({"decided at": name, "macro F1": macro, "micro F1": micro})
    print(breakdown.markdown_table(rows))


def _print_regression(summary: dict[str, float], worst: list[dict]) -> None:
    print("Residuals (predicted - gold): " + ", ".join(f"{k} {v:.4f}" for k, v in summary.items()))
    print(f"The {len(worst)} largest errors:")
    for row in worst:
        inputs = [str(v) for k, v in row.items() if k not in ("index", "gold", "predicted", "error")]
        text = " | ".join(inputs) or f"row {row['index']}"
        text = text if len(text) <= 80 else text[:77] + "..."
        print(f"  gold {row['gold']:.4f}  predicted {row['predicted']:.4f}  {text}")


def _save_figures(folder: Path, figures: dict[str, Callable], trainer: Trainer) -> list[Path]:
    """Each figure (name -> what draws it) as `<name>.png`, and into TensorBoard; one line instead without
    matplotlib."""
    if not figures:
        return []
    try:
        built = {name: draw() for name, draw in figures.items()}
    except ImportError:
        print(f"No figures ({', '.join(f'{n}.png' for n in figures)}): matplotlib is not installed "
              "(`pip install hf-lightning[plots]`).")  # fmt: skip
        return []
    paths = []
    for name, figure in built.items():
        paths.append(folder / f"{name}.png")
        figure.savefig(paths[-1], dpi=120)
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_figure(name, figure, trainer.global_step, close=False)
    return paths
