"""Fail fast when a model or dataset name cannot be loaded: local path, Hugging Face cache, or a reachable Hub."""

import os
import socket
from functools import cache
from pathlib import Path
from urllib.parse import urlparse

from modules.errors import HFLightningError

# Builder names that `datasets.load_dataset` resolves locally from `data_files`, never from the Hub.
PACKAGED_BUILDERS = {"csv", "json", "parquet", "text", "arrow"}


def hub_offline() -> bool:
    """True when the user asked for offline mode or the Hub's host does not answer within 3 seconds."""
    if os.environ.get("HF_HUB_OFFLINE", "0").upper() in {"1", "TRUE", "YES", "ON"}:
        return True
    return not _hub_reachable(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))


@cache
def _hub_reachable(endpoint: str) -> bool:
    # One cheap TCP probe instead of huggingface_hub's five retries with back-off (~25 s per name).
    host = urlparse(endpoint).hostname or "huggingface.co"
    try:
        with socket.create_connection((host, 443), timeout=3):
            return True
    except OSError:
        return False


def check_model_source(name_or_path: str, flag: str) -> None:
    """Raise one clear error when `name_or_path` is neither a local model folder nor loadable from cache or Hub."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file() and not (path / "tokenizer_config.json").is_file():
            raise HFLightningError(
                f"{flag} {name_or_path!r} is a folder but holds no config.json or tokenizer_config.json. "
                "Point it at a folder written by `save_pretrained` (config.json, weights, tokenizer files)."
            )
        return
    if _looks_like_path(name_or_path):
        raise HFLightningError(f"{flag} {name_or_path!r}: no such folder. Check the path, or pass a Hub model name.")
    if _in_hub_cache(name_or_path, "config.json", "model") or _in_hub_cache(
        name_or_path, "tokenizer_config.json", "model"
    ):
        return
    if hub_offline():
        raise HFLightningError(
            f"{flag} {name_or_path!r} is not a local folder, not in the Hugging Face cache, and the Hub cannot be "
            f"reached (offline). Pass a local folder instead, e.g. `{flag} /path/to/model` holding the files "
            "`save_pretrained` writes (config.json, model.safetensors, tokenizer files)."
        )


def check_dataset_source(dataset: str, flag: str = "--data.dataset") -> None:
    """Raise one clear error when `dataset` is a Hub name that cannot be reached, or a local path that is missing."""
    if dataset in PACKAGED_BUILDERS:
        return
    if Path(dataset).expanduser().exists():
        return
    if _looks_like_path(dataset):
        raise HFLightningError(
            f"{flag} {dataset!r}: no such file or folder. Pass a folder in Hub layout, a builder name "
            "(csv, json, parquet) with --data.data_files, or a Hub dataset name."
        )
    if _in_hub_cache(dataset, "README.md", "dataset") or _in_datasets_cache(dataset):
        return
    if hub_offline():
        raise HFLightningError(
            f"{flag} {dataset!r} is not a local folder, not cached, and the Hub cannot be reached (offline). "
            f"Pass a local copy instead: `{flag} /path/to/folder` (a folder in Hub layout, e.g. data/train-*.parquet) "
            f"or `{flag} csv --data.data_files '{{train: train.csv, validation: dev.csv}}'`."
        )


def _looks_like_path(name: str) -> bool:
    # Hub ids are `name` or `org/name`; anything else with a separator or a dot prefix is meant as a path.
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or os.sep in name and name.count("/") != 1


def _in_hub_cache(repo_id: str, filename: str, repo_type: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(repo_id, filename, repo_type=repo_type), str)
    except Exception:  # invalid repo id: treat as not cached, the offline error explains what to pass
        return False


def _in_datasets_cache(name: str) -> bool:
    import datasets

    return (Path(datasets.config.HF_DATASETS_CACHE) / name.replace("/", "___")).exists()
