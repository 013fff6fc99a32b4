"""hf-lightning: fine-tune Hugging Face transformers for text classification from one YAML file.

python main.py fit --config configs/bert.yaml
python main.py test --config configs/bert.yaml --ckpt_path best
"""

import json
import sys
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import MLFlowLogger, TensorBoardLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException

from modules.checkpoints import (
    checkpoint_search_root,
    find_checkpoint,
    load_checkpoint,
    log_folder,
    run_folder,
    run_version,
)
from modules.data import HFDataModule
from modules.errors import HFLightningError
from modules.export import HFExport, write_model_card
from modules.interrupts import stop_gracefully
from modules.model import TransformerModule
from modules.predictions import PredictionWriter
from modules.progress import default_progress_bar
from modules.report import TestReport


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
            self.parser.save(self.config, path, skip_none=False, overwrite=self.overwrite, multifile=self.multifile)
            for logger in trainer.loggers:
                if isinstance(logger, MLFlowLogger):
                    logger.experiment.log_artifact(logger.run_id, str(path))
            self.already_saved = True
        self.already_saved = trainer.strategy.broadcast(self.already_saved)


class HFLightningCLI(LightningCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # One home per value: the tokenizer and length limit follow the model being fine-tuned.
        parser.link_arguments("model.model_name_or_path", "data.model_name_or_path")
        parser.add_lightning_class_args(HFExport, "export")
        parser.add_lightning_class_args(PredictionWriter, "predictions")
        parser.add_lightning_class_args(TestReport, "report")

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        # Lightning's default bar is Rich's everywhere; in a log file its redraws pile up. A progress bar the config
        # names, `enable_progress_bar: false` or `barebones` win over our default.
        config = self._get(self.config_init, "trainer", default={})
        callbacks = kwargs.get("callbacks", config.get("callbacks")) or []
        callbacks = callbacks if isinstance(callbacks, list) else [callbacks]
        wanted = config.get("enable_progress_bar") is not False and not config.get("barebones")
        if wanted and not any(isinstance(c, ProgressBar) for c in callbacks):
            kwargs["callbacks"] = [*callbacks, default_progress_bar()]
        return super().instantiate_trainer(**kwargs)

    def _parse_ckpt_path(self) -> None:
        # `--ckpt_path best|last` in a separate command: find the file of this config's most recent fit run.
        subcommand = self.config.get("subcommand")
        self._run_version = None
        if subcommand:
            config = self.config[subcommand]
            if config.get("ckpt_path") in ("best", "last"):
                root = checkpoint_search_root(config.trainer.as_dict())
                path = find_checkpoint(config.ckpt_path, root)
                print(f"--ckpt_path {config.ckpt_path} -> {path}")
                config.ckpt_path = str(path)
                self._run_version = run_version(path)
            elif config.get("ckpt_path"):
                if not Path(config.ckpt_path).is_file():
                    raise HFLightningError(f"--ckpt_path {config.ckpt_path}: no such file (or use best / last).")
                load_checkpoint(config.ckpt_path, mmap=True)  # a truncated or foreign file: one-line error now
        super()._parse_ckpt_path()

    def after_instantiate_classes(self) -> None:
        super().after_instantiate_classes()
        if self.subcommand is None:
            return
        self.datamodule.check_sources()  # a clear error now, before any download or tokenization
        if self._run_version is not None:
            # TensorBoard appends safely: a later command on a run's checkpoint logs into that run's folder.
            # (CSVLogger would overwrite the run's metrics.csv, so it keeps its own new version.)
            for logger in self.trainer.loggers:
                if isinstance(logger, TensorBoardLogger):
                    logger._version = self._run_version

    def _run_subcommand(self, subcommand: str) -> None:
        # With --ckpt_path the checkpoint supplies the weights: skip loading the pretrained ones first.
        self.model.weights_from_checkpoint = bool(self.config[subcommand].get("ckpt_path"))
        if subcommand != "fit":
            return super()._run_subcommand(subcommand)
        with stop_gracefully(self.trainer):
            super()._run_subcommand(subcommand)

    def after_fit(self) -> None:
        callback = self.trainer.checkpoint_callback
        if self.trainer.is_global_zero and callback and callback.best_model_path:
            score = callback.best_model_score
            detail = f" ({callback.monitor} = {score:.4f})" if callback.monitor and score is not None else ""
            print(f"Best checkpoint: {callback.best_model_path}{detail}")

    def _write_metrics(self, stage: str) -> None:
        run_dir = run_folder(self.trainer)  # on every rank: `trainer.log_dir` is a collective under DDP
        if not self.trainer.is_global_zero:
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        metrics = {k: float(v) for k, v in self.trainer.callback_metrics.items() if not k.startswith("train_")}
        record = {"ckpt_path": self.trainer.ckpt_path, "metrics": metrics}
        path = run_dir / f"{stage}_metrics.json"
        path.write_text(json.dumps(record, indent=2))
        print(f"Wrote {stage} metrics to {path}")
        export_dir = run_dir / self.config[self.subcommand].export.dirname
        if (export_dir / "config.json").is_file():
            write_model_card(export_dir, run_dir)  # the card gains the test metrics

    def after_validate(self) -> None:
        self._write_metrics("validate")

    def after_test(self) -> None:
        self._write_metrics("test")


def cli_main(args: list[str] | None = None) -> HFLightningCLI:
    """Run the CLI; `args` lets tests drive it in-process (None reads `sys.argv`)."""
    return HFLightningCLI(
        TransformerModule,
        HFDataModule,
        save_config_callback=SaveRunConfig,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"default_env": True},
        args=args,
    )


def main() -> None:
    """Console entry point: bad input prints one `error:` line and exits with status 2; SIGTERM exits with 143,
    Ctrl-C with 130."""
    try:
        cli_main()
    except HFLightningError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except torch.OutOfMemoryError as error:
        print(
            f"error: out of memory ({str(error).splitlines()[0]}). Lower --data.batch_size and raise "
            "--trainer.accumulate_grad_batches to keep the effective batch, lower --data.max_length, or set "
            "--model.gradient_checkpointing true. Checkpoints already written are intact.",
            file=sys.stderr,
        )
        sys.exit(1)
    except SIGTERMException:
        # Lightning 2.6 stops gracefully on SIGTERM but exits 0; schedulers need to see the preemption.
        sys.exit(143)
    except KeyboardInterrupt:
        sys.exit(130)  # the shell's status for Ctrl-C; a graceful stop's checkpoint is written already


if __name__ == "__main__":
    main()
