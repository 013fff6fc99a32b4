"""The files that describe a run in its folder: the resolved config of each command, and each evaluation's metrics."""

import json
from pathlib import Path

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import MLFlowLogger

from modules.outputs.model_card import write_model_card
from modules.runs.paths import log_folder, run_folder


class SaveRunConfig(SaveConfigCallback):
    """Save the resolved config in the run folder (`config.yaml` for fit, `config_<command>.yaml` for the others) and
    hand it to MLflow as an artifact of the run.

    Lightning's own callback writes to `trainer.log_dir`, which for MLflow is one folder shared by every run (the file
    store) or None (a database): the second run clashes (Lightning #20184) or the first one fails. `log_folder` is
    per run for every logger.
    """

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.already_saved:
            return
        if stage != "fit":
            self.config_filename = f"config_{trainer.state.fn.value}.yaml"
        folder = log_folder(trainer)  # on every rank: a collective
        if trainer.is_global_zero:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / self.config_filename
            self.parser.save(self.config, path, skip_unset=False, overwrite=self.overwrite, multifile=self.multifile)
            for logger in trainer.loggers:
                if isinstance(logger, MLFlowLogger):
                    logger.experiment.log_artifact(logger.run_id, str(path))
            self.already_saved = True
        self.already_saved = trainer.strategy.broadcast(self.already_saved)


def write_metrics(trainer: Trainer, stage: str, export_dirname: str) -> Path | None:
    """`<stage>_metrics.json` in the run folder (the checkpoint used and every non-training metric); the export's
    model card, if the run has one, gains them. Call it on every rank; returns the file on rank 0."""
    run_dir = run_folder(trainer)  # on every rank: `trainer.log_dir` is a collective under DDP
    if not trainer.is_global_zero:
        return None
    run_dir.mkdir(parents=True, exist_ok=True)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if not k.startswith("train_")}
    record = {"ckpt_path": trainer.ckpt_path, "metrics": metrics}
    path = run_dir / f"{stage}_metrics.json"
    path.write_text(json.dumps(record, indent=2))
    export_dir = run_dir / export_dirname
    if (export_dir / "config.json").is_file():
        write_model_card(export_dir, run_dir)
    return path
