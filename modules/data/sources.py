"""Where rows and models come from: a Hub name, a local folder in Hub layout, or data files (csv, tsv, json(l),
parquet, txt). Names that cannot be loaded (no such path, offline and not cached) fail fast with the fix."""

import csv
import glob
import os
import re
import socket
from functools import cache
from pathlib import Path
from urllib.parse import urlparse

from datasets import Dataset, DatasetDict, load_dataset
from datasets.exceptions import DatasetGenerationError
from lightning.pytorch.utilities import rank_zero_info
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from modules.errors import HFLightningError

# Builder that reads each file extension; `.tsv` is read by the csv builder with a tab separator.
BUILDERS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet", ".txt": "text"}
# Common spellings of split names in user files, mapped to the names this project uses.
SPLIT_ALIASES = {"valid": "validation", "val": "validation", "dev": "validation", "eval": "validation"}

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
    folder = Path(dataset).expanduser()
    if folder.is_dir() and not _holds_data(folder):
        raise HFLightningError(
            f"{flag} {dataset!r}: the folder holds no data files ({', '.join(sorted(BUILDERS))}, .arrow). Put them "
            f"there (e.g. {dataset}/train.csv), or pass them with --data.data_files '{{train: train.csv}}'."
        )
    if folder.exists():
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


def _holds_data(folder: Path) -> bool:
    # What `load_dataset(folder)` reads: data files (any depth), a saved dataset, or a loading script.
    suffixes = {*BUILDERS, ".arrow", ".py"}
    return any(p.suffix.lower() in suffixes or p.name == "dataset_dict.json" for p in folder.rglob("*") if p.is_file())


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


# --------------------------------------------------------------------------------------------------- loading
def file_list(data_files: object) -> list[str]:
    """Every path in a `data_files` value (a path, a list, or a split -> path(s) mapping)."""
    if data_files is None:
        return []
    if isinstance(data_files, str):
        return [data_files]
    if isinstance(data_files, dict):
        return [f for v in data_files.values() for f in file_list(v)]
    return [f for v in data_files for f in file_list(v)]


def expand_folders(data_files: object) -> object:
    """The same `data_files` value with each folder replaced by the data files inside it."""
    if isinstance(data_files, str):
        if "://" in data_files:
            return data_files
        path = Path(data_files).expanduser()
        if path.is_dir():
            found = sorted(str(p.resolve()) for p in path.iterdir() if p.suffix.lower() in BUILDERS)
            if not found:
                raise HFLightningError(
                    f"--data.data_files {data_files!r}: the folder holds no data files ({', '.join(sorted(BUILDERS))})."
                    " Put them there, or name the files themselves."
                )
            return found
        # Relative to the folder the command runs from (where the user typed it), not to --data.dataset's folder.
        return os.path.abspath(path)
    if isinstance(data_files, dict):
        return {k: expand_folders(v) for k, v in data_files.items()}
    return [f for v in data_files for f in file_list(expand_folders(v))]


def load_files(builder: str | None, data_files: object, config: str | None = None) -> DatasetDict:
    """Load data files with `builder`, or the builder their extension names (`.tsv` read tab-separated)."""
    files = file_list(data_files)
    suffixes = {Path(f).suffix.lower() for f in files}
    if builder in PACKAGED_BUILDERS and {BUILDERS.get(s) for s in suffixes} - {builder, None}:
        raise HFLightningError(
            f"--data.dataset {builder} does not read files ending in {sorted(suffixes)}: set --data.dataset to "
            f"{' or '.join(sorted({BUILDERS[s] for s in suffixes if s in BUILDERS}))}, or leave it unset to follow "
            "the file extension."
        )
    builder = builder or _builder_for(suffixes)
    kwargs = {}
    if builder == "csv" and suffixes == {".tsv"}:
        kwargs["sep"] = "\t"
    try:
        return load_dataset(builder, config, data_files=data_files, **kwargs)
    except DatasetGenerationError as error:
        cause = error.__cause__ or error.__context__ or error
        raise HFLightningError(f"could not parse {_describe(files)}: {cause}".strip()) from None
    except ValueError as error:
        empty = re.search(r'Instruction "(\w+)" corresponds to no data', str(error))
        if empty:
            raise HFLightningError(
                f"the {empty.group(1)} split is empty: check its file in --data.data_files."
            ) from None
        raise


def load_splits(
    dataset: str | None,
    dataset_config: str | None,
    data_files: object,
    predict_file: str | None,
    predict_split: str,
    text_column: str,
) -> DatasetDict:
    """Every split the source has, under this project's split names, plus `predict` (a file, or a named split)."""
    if dataset is None and data_files is None:
        raw = DatasetDict()  # predict on a file with --ckpt_path alone: the checkpoint holds the labels
    elif dataset is None or data_files is not None:
        expanded = expand_folders(data_files) if data_files is not None else None
        # A local folder with data_files named on their own: the files decide the format, not the folder.
        builder = None if dataset is not None and Path(dataset).expanduser().is_dir() else dataset
        raw = load_files(builder, expanded, dataset_config)
    else:
        try:
            raw = load_dataset(dataset, dataset_config)
        except DatasetGenerationError as error:
            cause = error.__cause__ or error.__context__ or error
            raise HFLightningError(f"could not parse the files of {dataset!r}: {cause}") from None
        except ValueError as error:
            if "config" in str(error).lower():
                raise HFLightningError(f"--data.dataset_config: {error}") from None
            raise
    if isinstance(raw, Dataset):
        raw = DatasetDict(train=raw)
    raw = DatasetDict({SPLIT_ALIASES.get(name, name): split for name, split in raw.items()})
    if predict_file:
        raw["predict"] = load_text_file(predict_file, text_column)
    elif predict_split in raw:
        raw["predict"] = raw[predict_split]
    return raw


def load_text_file(path: str, text_column: str) -> Dataset:
    """Unlabelled rows from one file (`--data.predict_file`, `--distill.unlabeled_file`): CSV, JSON lines, Parquet
    or plain text (one input per line, read as `text_column`). Arrow on disk, memory-mapped: any size."""
    rows = load_files(None, path)["train"]
    if list(rows.column_names) == ["text"] and text_column != "text":
        rows = rows.rename_column("text", text_column)
    return rows


def file_line(path: str, index: int) -> int | None:
    """The line of `path` on which data row `index` (0-based, as loaded) starts, for error messages; None when the
    format has no lines to point at (Parquet, a JSON array) or the file cannot be read.

    CSV/TSV: after the header, blank lines skipped and quoted line breaks followed as the reader does. JSON lines:
    blank lines skipped. Plain text: one row per line.
    """
    suffix = Path(path).suffix.lower()
    try:
        with open(os.path.expanduser(path), newline="", encoding="utf-8") as f:
            if suffix in (".csv", ".tsv"):
                reader = csv.reader(f, delimiter="\t" if suffix == ".tsv" else ",")
                records = 0
                start = reader.line_num + 1
                for number, row in enumerate(reader):
                    if row and number > 0:  # record 0 is the header
                        if records == index:
                            return start
                        records += 1
                    start = reader.line_num + 1
            elif suffix in (".jsonl", ".txt"):
                rows = 0
                for number, line in enumerate(f, start=1):
                    if suffix == ".txt" or line.strip():
                        if rows == index:
                            return number
                        rows += 1
    except (OSError, UnicodeDecodeError, csv.Error):
        return None
    return None


def check_files_exist(paths: list[str]) -> None:
    """Fail on the first data file (or glob) that matches nothing."""
    for path in paths:
        if not glob.glob(os.path.expanduser(path)):
            raise HFLightningError(f"data file {path!r} does not exist. Check --data.data_files / --data.predict_file.")


def load_tokenizer(name_or_path: str) -> PreTrainedTokenizerBase:
    """The tokenizer, with a pad token: decoder-only models (GPT-2, Llama) ship without one; EOS is the usual fix."""
    tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def select_splits(raw: DatasetDict, wanted: tuple[str, ...], validation_size: float, seed: int) -> dict[str, Dataset]:
    """The `wanted` splits, non-empty; without a validation split one is carved out of train (seeded)."""
    splits = dict(raw)
    if "validation" in wanted and "validation" not in splits and "train" in splits:
        carved = splits["train"].train_test_split(test_size=validation_size, seed=seed)
        splits["train"], splits["validation"] = carved["train"], carved["test"]
        rank_zero_info(
            f"No validation split: carved {len(carved['test'])} rows ({validation_size:.0%}) out of train "
            f"with seed {seed} (--data.validation_size, --data.seed)."
        )
    missing = [name for name in wanted if name not in splits]
    if missing:
        name = missing[0]
        hint = {
            "predict": f"--data.predict_split names a split ({sorted(raw)}) or --data.predict_file a file",
            "train": "give a train split (data_files: {train: ...})",
        }.get(name, f"add it via --data.data_files '{{{name}: path}}'")
        raise HFLightningError(f"the data has no {name!r} split (it has {sorted(raw)}): {hint}.")
    for name in wanted:
        if len(splits[name]) == 0:
            raise HFLightningError(f"the {name} split is empty: check the file or --data.data_files.")
    return {name: splits[name] for name in wanted}


def _builder_for(suffixes: set[str]) -> str:
    builders = {BUILDERS.get(s) for s in suffixes}
    if len(builders) != 1 or None in builders:
        raise HFLightningError(
            f"cannot tell the format of data files with extensions {sorted(suffixes)}: use one of "
            f"{sorted(BUILDERS)} or set --data.dataset csv|json|parquet|text."
        )
    return builders.pop()


def _describe(files: list[str]) -> str:
    return files[0] if len(files) == 1 else f"one of {files}"
