"""The end of a study: the table of its trials (printed and `trials.csv`) and the best trial's config (`best.yaml`).

The table shows, beside the objective, every other `val_*` metric of the validation that gave each trial's best
checkpoint (`val_acc` when the objective is `val_loss`; `val_loss` when it is `val_f1_macro` and the checkpoint
callback monitors `val_loss`), which a trial records with `ValidationMetrics`.
"""

import csv
import shutil
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback

from modules.tune.search_space import Parameter


class ValidationMetrics(Callback):
    """Each validation's `val_*` metrics (and the checkpoint's monitor), so the trial can read them at its best
    checkpoint.

    Args:
        monitor: The metric the checkpoint callback selects the best checkpoint by.
    """

    def __init__(self, monitor: str) -> None:
        self.monitor = monitor
        self.validations: list[dict[str, float]] = []

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.sanity_checking:
            return
        metrics = trainer.callback_metrics
        self.validations.append(
            {k: float(v) for k, v in metrics.items() if (k.startswith("val_") or k == self.monitor) and v.numel() == 1}
        )

    def at(self, score: float) -> dict[str, float]:
        """The metrics of the validation whose monitored value is `score` (the best checkpoint's): the first one, as
        the checkpoint callback keeps the first of equal values."""
        found = [v for v in self.validations if self.monitor in v]
        if not found:
            return {}
        best = min(found, key=lambda v: abs(v[self.monitor] - score))
        return dict(sorted(best.items()))


def write_report(study: Any, space: list[Parameter], output_dir: Path) -> None:
    """Print the table of trials, write it as `trials.csv`, and copy the best trial's config to `best.yaml`."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    rows = []
    metric_names = sorted({name for trial in trials for name in trial.user_attrs.get("metrics", {})})
    for trial in trials:
        end = trial.datetime_complete
        seconds = trial.user_attrs.get("seconds") or (
            (end - trial.datetime_start).total_seconds() if end and trial.datetime_start else None
        )
        rows.append(
            {
                "number": trial.number,
                "state": trial.state.name + (" (baseline)" if trial.user_attrs.get("baseline") else ""),
                "value": trial.value,
                **{name: trial.user_attrs.get("metrics", {}).get(name) for name in metric_names},
                **{p.key: trial.params.get(p.key) for p in space},
                "seconds": round(seconds, 1) if seconds is not None else None,
                "error": trial.user_attrs.get("error", ""),
            }
        )
    with open(output_dir / "trials.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["number"])
        writer.writeheader()
        writer.writerows(rows)
    widths = {k: max(len(k), *(len(_cell(r[k])) for r in rows)) for k in (rows[0] if rows else {})}
    print("  ".join(k.ljust(w) for k, w in widths.items()))
    for row in rows:
        print("  ".join(_cell(row[k]).ljust(w) for k, w in widths.items()))
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete:
        print("No trial completed: no best.yaml.")
        return
    best = study.best_trial
    config = Path(best.user_attrs["run_dir"]) / "config.yaml"
    shutil.copyfile(config, output_dir / "best.yaml")
    print(f"Best: trial {best.number}, value {best.value:.6g}, {best.params}")
    print(f"Wrote {output_dir / 'best.yaml'} (python main.py fit --config {output_dir / 'best.yaml'})")


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else str(value)
