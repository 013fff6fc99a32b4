"""Where a run's files live: its run folder, and the best or last checkpoint of a config's most recent `fit`, so a
later command can use it."""

import os
import re
from pathlib import Path

import torch
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from modules.errors import HFLightningError
from modules.runs.record import RunRecord


def checkpoint_search_root(trainer_config: dict) -> Path:
    """The folder a config's checkpoints land under: a ModelCheckpoint `dirpath`, else the logger's run root."""
    for callback in config_entries(trainer_config.get("callbacks")):
        if isinstance(callback, dict) and "Checkpoint" in str(callback.get("class_path", "")):
            dirpath = (callback.get("init_args") or {}).get("dirpath")
            if dirpath:
                return Path(dirpath)
    root = Path(trainer_config.get("default_root_dir") or ".")
    for logger in config_entries(trainer_config.get("logger")):
        if isinstance(logger, dict):
            init_args = logger.get("init_args") or {}
            if str(logger.get("class_path", "")).endswith("MLFlowLogger"):
                return _mlflow_root(init_args, root)
            save_dir = init_args.get("save_dir") or init_args.get("root_dir") or root
            name = init_args.get("name", "lightning_logs")
            return Path(save_dir) / (name or "")
    return root / "lightning_logs"


def _mlflow_root(init_args: dict, default_root_dir: Path) -> Path:
    """`<save dir>/<experiment id>`: where Lightning puts an MLflow run's checkpoints (`<run id>/checkpoints`).

    The save dir is the file store's folder, or `default_root_dir` with a database tracking URI; the experiment id
    is looked up by name in the tracking store.
    """
    from mlflow.tracking import MlflowClient

    uri = init_args.get("tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI")
    uri = uri or f"file:{init_args.get('save_dir') or './mlruns'}"
    name = init_args.get("experiment_name") or "lightning_logs"
    experiment = MlflowClient(uri).get_experiment_by_name(name)
    if experiment is None:
        raise HFLightningError(
            f"--ckpt_path: the MLflow experiment {name!r} does not exist in {uri}. Run `fit` with this config first, "
            "or pass the checkpoint's path."
        )
    save_dir = Path(uri.removeprefix("file:")) if uri.startswith("file:") else default_root_dir
    return save_dir / experiment.experiment_id


def find_checkpoint(which: str, root: Path) -> Path:
    """Resolve `best` or `last` to a file under `root`, from the run whose `last*.ckpt` was written most recently."""
    candidates = sorted(root.rglob("last*.ckpt"), key=lambda p: p.stat().st_mtime, reverse=True)
    candidates = candidates or sorted(root.rglob("*.ckpt"), key=lambda p: p.stat().st_mtime, reverse=True)
    if not candidates:
        raise HFLightningError(
            f"--ckpt_path {which}: no checkpoint found under {root}/. Run `fit` with this config first, "
            "or pass the checkpoint's path."
        )
    newest = candidates[0]
    if which == "last":
        return newest
    best = best_model_path(newest)
    if best is None or not Path(best).is_file():
        raise HFLightningError(
            f"--ckpt_path best: {newest} records no best checkpoint (ModelCheckpoint with a `monitor` saves one); "
            "pass --ckpt_path last or a path."
        )
    return Path(best)


def best_model_path(checkpoint: Path) -> str | None:
    """The `best_model_path` a ModelCheckpoint recorded in `checkpoint` (memory-mapped: weights are not read)."""
    state = load_checkpoint(checkpoint, mmap=True)
    for key, value in state.get("callbacks", {}).items():
        if "Checkpoint" in key.split("{")[0] and value.get("best_model_path"):
            return value["best_model_path"]
    return None


def load_checkpoint(path: str | Path, mmap: bool = False) -> dict:
    """`torch.load` a Lightning checkpoint safely (`weights_only`), with a one-line error for a bad file."""
    path = Path(path)
    if not path.is_file():
        raise HFLightningError(f"checkpoint {path} does not exist: check --ckpt_path.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as error:  # truncated zip, not a checkpoint, unsafe pickle: all unusable the same way
        raise HFLightningError(f"checkpoint {path} is corrupt or not a checkpoint ({type(error).__name__}).") from None


def checkpoint_settings(path: str | Path) -> RunRecord:
    """What a checkpoint knows of its run, so `predict` needs nothing else: the base model, tokenizer, length limit,
    long-text handling, problem type and label names (memory-mapped: weights are not read)."""
    return RunRecord.from_checkpoint(load_checkpoint(path, mmap=True))


def run_version(checkpoint: Path) -> int | None:
    """N when `checkpoint` lies in `.../version_N/checkpoints/`, so later commands log into that run's folder."""
    match = re.fullmatch(r"version_(\d+)", checkpoint.parent.parent.name)
    return int(match.group(1)) if match and checkpoint.parent.name == "checkpoints" else None


def log_folder(trainer) -> Path:
    """This command's own run folder, the one that holds its `checkpoints/`, `config.yaml` and Hugging Face export.

    TensorBoard and CSV: the logger's `log_dir`. Other loggers (MLflow, ...) have no local folder of their own:
    Lightning's ModelCheckpoint then writes to `<save_dir or default_root_dir>/<name>/<version>` (for MLflow
    `<default_root_dir>/<experiment id>/<run id>`), and so do we. No logger: `default_root_dir`.
    Call it on every rank: it broadcasts from rank 0, where the logger knows its name and version.
    """
    logger = trainer.loggers[0] if trainer.loggers else None
    if logger is None or isinstance(logger, TensorBoardLogger | CSVLogger):
        return Path(trainer.log_dir)  # `default_root_dir` without a logger
    folder = None
    if trainer.is_global_zero:
        version = logger.version if isinstance(logger.version, str) else f"version_{logger.version}"
        folder = str(Path(logger.save_dir or trainer.default_root_dir, str(logger.name), version))
    return Path(trainer.strategy.broadcast(folder))


def run_folder(trainer) -> Path:
    """Where a command's outputs go: the folder of the run whose checkpoint it loaded, else its own `log_folder`.

    Call it on every rank (see `log_folder`).
    """
    if trainer.ckpt_path:
        checkpoint = Path(trainer.ckpt_path)
        if checkpoint.parent.name == "checkpoints":
            return checkpoint.parent.parent
    return log_folder(trainer)


def config_entries(value: object) -> list:
    """The entries of a trainer config's `callbacks` or `logger` value: none for unset or `true`/`false` (Lightning's
    switches for its defaults), one for a single `class_path` entry, else the list itself."""
    if value is None or isinstance(value, bool):
        return []
    return value if isinstance(value, list) else [value]


def run_name(config_files: list[str], dataset: str | None, data_files: object) -> str:
    """A run name for a logger left at its default (`lightning_logs`): the last `--config` file's stem, else the data's
    folder or file name, so runs of different data never share a run folder (nor `--ckpt_path best`)."""
    if config_files:
        return Path(str(config_files[-1])).stem
    source = dataset
    if source is None and data_files is not None:
        files = data_files
        if isinstance(data_files, dict):
            files = data_files.get("train") or next(iter(data_files.values()), None)
        if isinstance(files, list):
            files = files[0] if files else None
        source = str(files) if files else None
    if not source:
        return "lightning_logs"
    path = Path(source.rstrip("/"))
    # `mydata/train.csv` names the run `mydata`: the file's own stem is usually just the split.
    return path.parent.name if path.suffix and path.parent.name not in ("", ".") else path.stem or path.name


_NAMED_LOGGERS = ("TensorBoardLogger", "CSVLogger")


def name_unnamed_loggers(trainer_config: dict, name: str) -> None:
    """Give `name` to each TensorBoard/CSV logger (class_path dicts, in place) whose name is still the default."""
    for logger in config_entries(trainer_config.get("logger")):
        if not hasattr(logger, "get") or not str(logger.get("class_path", "")).endswith(_NAMED_LOGGERS):
            continue
        init_args = logger.get("init_args")
        if init_args is not None and init_args.get("name") == "lightning_logs":
            init_args["name"] = name
