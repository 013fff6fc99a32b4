"""The LightningCLI app behind fit, validate, test, predict and check: one home per value, `best`/`last`
checkpoints, atomic checkpoint writes, graceful stops. `cli_main(args)` runs it in-process (tests, the tuner)."""

import inspect
import sys
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelSummary, ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.plugins.io import CheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException

from modules.check.precision_guard import PrecisionGuard
from modules.cli.commands import DESCRIPTION, LIGHTNING_COMMANDS, summary
from modules.cli.parser import ArgumentParser, HelpFormatter
from modules.console.progress import LogInterval, PlainModelSummary, default_progress_bar
from modules.console.quiet import plain_output, quiet_library_noise
from modules.data import HFDataModule
from modules.data.arrow_rows import ReleaseMappedPages
from modules.decisions.callback import FitDecisions
from modules.decisions.label_issues import LabelIssues
from modules.distill.callback import Distill
from modules.errors import HFLightningError
from modules.model import TransformerModule
from modules.outputs.export import HFExport
from modules.outputs.predictions import PredictionWriter
from modules.outputs.report import TestReport
from modules.outputs.run_files import SaveRunConfig, write_metrics
from modules.runs import AtomicCheckpointIO, RNGState
from modules.runs.interrupts import stop_gracefully
from modules.runs.paths import (
    checkpoint_search_root,
    checkpoint_settings,
    find_checkpoint,
    load_checkpoint,
    name_unnamed_loggers,
    run_name,
    run_version,
)
from modules.runs.trainer import HFTrainer


class HFLightningCLI(LightningCLI):
    """LightningCLI with one home per value, `best`/`last` checkpoints, atomic checkpoint writes, graceful stops.

    Lightning's automatic `--optimizer` / `--lr_scheduler` flags are off (`auto_configure_optimizers=False`): they
    would replace the model's AdamW groups, warmup schedule and clipping path. Optimizer settings are `--model.*`.
    """

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        # `check` takes every `fit` flag: the model and data are built from the config, as for `fit`.
        return {**LightningCLI.subcommands(), "check": {"model", "datamodule"}}

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # One home per value: the tokenizer and length limit follow the model being fine-tuned.
        parser.link_arguments("model.model_name_or_path", "data.model_name_or_path")
        parser.add_lightning_class_args(FitDecisions, "decisions")  # before the export, which reads what it fits
        parser.add_lightning_class_args(LabelIssues, "label_issues")  # after decisions: reads the calibration
        parser.add_lightning_class_args(Distill, "distill")
        parser.add_lightning_class_args(HFExport, "export")
        parser.add_lightning_class_args(PredictionWriter, "predictions")
        parser.add_lightning_class_args(TestReport, "report")
        # `fit --print_config` gives a template that runs as is once data is filled in: a run folder under logs/
        # (named after the config, see `run_name`) with the best-by-val_loss checkpoint and last.ckpt.
        parser.set_defaults(
            {
                "trainer.logger": {
                    "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                    "init_args": {"save_dir": "logs"},
                },
                "trainer.callbacks": [
                    {
                        "class_path": "modules.runs.RunCheckpoint",
                        "init_args": {"monitor": "val_loss", "mode": "min", "save_last": True},
                    }
                ],
            }
        )

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        super().parse_arguments(parser, args)
        self._args = args  # parsed again over the checkpoint's hyperparameters: `_given_over_checkpoint`
        self._name_loggers()
        self._run_version = self._resolve_ckpt_path()

    def _name_loggers(self) -> None:
        """A logger left at `lightning_logs` is named after the config or data: runs never collide."""
        subcommand = self.config.get("subcommand")
        if subcommand:
            config = self.config[subcommand]
            name = run_name(config.get("config") or [], config.data.dataset, config.data.data_files)
            name_unnamed_loggers(config.trainer, name)

    def _resolve_ckpt_path(self) -> int | None:
        """`--ckpt_path best|last` in a separate command: the file of this config's most recent fit run; a path must
        be a readable checkpoint. Returns the run's version number when the file lies in a `version_N` folder."""
        subcommand = self.config.get("subcommand")
        config = self.config[subcommand] if subcommand else None
        ckpt_path = config.get("ckpt_path") if config else None
        if ckpt_path in ("best", "last"):
            path = find_checkpoint(ckpt_path, checkpoint_search_root(config.trainer.as_dict()))
            print(f"--ckpt_path {ckpt_path} -> {path}")
            config.ckpt_path = str(path)
            return run_version(path)
        if ckpt_path:
            if not Path(ckpt_path).is_file():
                raise HFLightningError(f"--ckpt_path {ckpt_path}: no such file (or use best / last).")
            load_checkpoint(ckpt_path, mmap=True)  # a truncated or foreign file: one-line error now
        return None

    def before_instantiate_classes(self) -> None:
        if self.subcommand is None:
            return
        self._given_over_checkpoint()
        self._settings_from_checkpoint()
        if self._run_version is None:
            return
        # TensorBoard appends safely: a later command on a run's checkpoint logs into that run's folder. (CSVLogger
        # would overwrite the run's metrics.csv, so it keeps its own new version.)
        loggers = self.config[self.subcommand].trainer.get("logger")
        for logger in loggers if isinstance(loggers, list) else [loggers]:
            if str(getattr(logger, "class_path", "")).endswith("TensorBoardLogger"):
                logger.init_args.version = self._run_version

    def _given_over_checkpoint(self) -> None:
        """With `--ckpt_path`, Lightning puts the checkpoint's hyperparameters over every `--model.*` value, so
        `test --model.threshold 0.15` ran at the checkpoint's threshold. Here they are defaults instead: the command
        is parsed again over them, and what it is given (flag, `--config` file, environment variable) wins."""
        config = self.config[self.subcommand]
        ckpt_path = config.get("ckpt_path")
        if not ckpt_path:
            return
        hyperparameters = load_checkpoint(ckpt_path, mmap=True).get("hyper_parameters") or {}
        known = set(inspect.signature(TransformerModule.__init__).parameters) - {"self"}  # an older run's: skipped
        defaults = {f"{self.subcommand}.model.{k}": v for k, v in hyperparameters.items() if k in known}
        self.parser.set_defaults(defaults)
        seed = config.get("seed_everything")  # the seed Lightning drew already, kept as the config records it
        super().parse_arguments(self.parser, self._args)
        config = self.config[self.subcommand]
        config.ckpt_path, config.seed_everything = ckpt_path, seed  # `best`/`last` stay resolved
        self._name_loggers()

    def _settings_from_checkpoint(self) -> None:
        """`--ckpt_path` with no dataset or train file (only `--data.predict_file`, or `--data.data_files '{test: x}'`):
        the model, tokenizer and labels are the checkpoint's, so `predict --ckpt_path X --data.predict_file new.csv`
        and `test --ckpt_path X --data.data_files '{test: new.csv}'` need no other flag."""
        config = self.config[self.subcommand]
        data_files = config.data.data_files
        has_train = data_files is not None and (not isinstance(data_files, dict) or "train" in data_files)
        if not config.get("ckpt_path") or config.data.dataset is not None or has_train:
            return
        record = checkpoint_settings(config.ckpt_path)  # a RunRecord (modules/runs/record.py)
        for key in ("model_name_or_path", "problem_type", "label_names"):
            if getattr(record, key) is not None:
                config.model[key] = getattr(record, key)
        config.data.model_name_or_path = config.model.model_name_or_path
        for key in ("tokenizer_name_or_path", "max_length", "long_text", "stride"):
            if getattr(record, key) is not None:
                config.data[key] = getattr(record, key)

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        config = self._get(self.config_init, "trainer", default={})
        # Lightning's default bar is Rich's everywhere; in a log file its redraws pile up. A progress bar the config
        # names, `enable_progress_bar: false` or `barebones` win over our default.
        callbacks = kwargs.get("callbacks", config.get("callbacks")) or []
        callbacks = callbacks if isinstance(callbacks, list) else [callbacks]
        added = []
        wanted = config.get("enable_progress_bar") is not False and not config.get("barebones")
        if wanted and not any(isinstance(c, ProgressBar) for c in callbacks):
            added.append(default_progress_bar())
        # In a log file, Lightning's plain summary table (Rich's is drawn for a terminal).
        summary = config.get("enable_model_summary") is not False and not config.get("barebones")
        if summary and not sys.stdout.isatty() and not any(isinstance(c, ModelSummary) for c in callbacks):
            added.append(PlainModelSummary())
        # A short epoch still logs its training loss (Lightning's default interval is 50 batches).
        if config.get("log_every_n_steps") is None and not config.get("barebones"):
            added.append(LogInterval())
        if added:
            kwargs["callbacks"] = [*callbacks, *added]
        # Every checkpoint written whole or not at all, unless the config brings its own CheckpointIO.
        plugins = kwargs.get("plugins", config.get("plugins")) or []
        plugins = plugins if isinstance(plugins, list) else [plugins]
        if not any(isinstance(p, CheckpointIO) for p in plugins):
            kwargs["plugins"] = [*plugins, AtomicCheckpointIO()]
        return super().instantiate_trainer(**kwargs)

    def after_instantiate_classes(self) -> None:
        super().after_instantiate_classes()
        if self.subcommand is None:
            return
        self.datamodule.check_sources()  # a clear error now, before any download or tokenization
        # With --ckpt_path the checkpoint supplies the weights: skip loading the pretrained ones first.
        self.model.weights_from_checkpoint = bool(self.config[self.subcommand].get("ckpt_path"))

    def before_fit(self) -> None:
        for callback in self.trainer.callbacks:  # files `fit` will need, checked before any data is read
            if isinstance(callback, Distill):
                callback.check_files()

    def fit(self, model: LightningModule, **kwargs: Any) -> None:
        with stop_gracefully(self.trainer):
            self.trainer.fit(model, **kwargs)

    def after_fit(self) -> None:
        callback = self.trainer.checkpoint_callback
        if self.trainer.is_global_zero and callback and callback.best_model_path:
            score = callback.best_model_score
            detail = f" ({callback.monitor} = {score:.4f})" if callback.monitor and score is not None else ""
            print(f"Best checkpoint: {callback.best_model_path}{detail}")

    def after_validate(self) -> None:
        self._write_metrics("validate")

    def after_test(self) -> None:
        self._write_metrics("test")

    def _write_metrics(self, stage: str) -> None:
        path = write_metrics(self.trainer, stage, self.config[self.subcommand].export.dirname)
        if path is not None:
            print(f"Wrote {stage} metrics to {path}")


def cli_main(args: list[str] | None = None, callbacks: list[Callback] | None = None) -> HFLightningCLI:
    """Run the CLI; `args` lets tests and the tuner drive it in-process (None reads `sys.argv`). `callbacks` are
    added to the Trainer's without entering the saved config (the tuner's pruning callback)."""
    quiet_library_noise()
    if not sys.stderr.isatty():
        plain_output()
    return HFLightningCLI(
        TransformerModule,
        HFDataModule,
        save_config_callback=SaveRunConfig,
        save_config_kwargs={"overwrite": True},
        trainer_class=HFTrainer,
        trainer_defaults={"callbacks": [RNGState(), PrecisionGuard(), ReleaseMappedPages(), *(callbacks or [])]},
        parser_kwargs={
            "default_env": True,
            "description": DESCRIPTION,
            "formatter_class": HelpFormatter,
            # Our own one-line descriptions: Lightning's are cut off mid-sentence in `test --help`.
            **{name: {"description": summary(name)} for name in LIGHTNING_COMMANDS},
        },
        parser_class=ArgumentParser,
        auto_configure_optimizers=False,
        args=args,
    )


def main(args: list[str] | None = None) -> None:
    """`main.py fit|validate|test|predict|check ...`: bad input prints one `error:` line and exits with status 2;
    SIGTERM exits with 143, Ctrl-C with 130."""
    try:
        cli_main(args)
        _release_process_group()
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


def _release_process_group() -> None:
    """A finished multi-process run hands its process group back before the interpreter exits. Left to the
    interpreter's teardown, gloo's threads once ended a rank whose fit had finished with SIGABRT ("terminate called
    without an active exception"), failing the launch. Every collective is done by now; single-process runs have none.
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
