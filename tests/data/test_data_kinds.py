"""Any dataset, any labels, through the CLI: files as users have them, pairs, multi-label, regression, imbalance."""

import json
import random

import pandas as pd
import pytest
import torch
from transformers import AutoTokenizer

from helpers import read_metrics, run_dir, write_base_config
from modules.cli.app import cli_main
from modules.data import HFDataModule
from modules.data.demo import NEGATIVE, NEUTRAL, POSITIVE
from modules.errors import HFLightningError
from modules.runs.record import RunRecord
from modules.serve.api import describe

pytestmark = pytest.mark.e2e  # trains end to end: `make test-fast` skips it


def _words(rng: random.Random, n: int) -> list[str]:
    return [rng.choice(NEUTRAL) for _ in range(n)]


def _fit_test(tmp_path, model, *args, epochs: int = 3, export: bool = False, ckpt_path: str = "best"):
    base = write_base_config(tmp_path, model, trainer={"max_epochs": epochs}, export={"enabled": export})
    cli = cli_main(["fit", "--config", str(base), *args])
    cli_main(["test", "--config", str(base), *args, "--ckpt_path", ckpt_path])
    return cli, read_metrics(run_dir(tmp_path) / "test_metrics.json")


def _write_splits(tmp_path, make_rows, suffix: str, sizes=(400, 100, 100), names=("train", "validation", "test")):
    paths = {}
    for seed, (name, n) in enumerate(zip(names, sizes)):
        frame = pd.DataFrame(make_rows(n, seed))
        paths[name] = tmp_path / f"{name}{suffix}"
        if suffix == ".tsv":
            frame.to_csv(paths[name], sep="\t", index=False)
        elif suffix == ".jsonl":
            frame.to_json(paths[name], orient="records", lines=True)
        else:
            frame.to_csv(paths[name], index=False)
    return paths


def _files(paths) -> str:
    return json.dumps({k: str(v) for k, v in paths.items()})


def test_tsv_with_own_column_names(tmp_path, tiny_model, review_rows):
    def rows(n, seed):
        return [{"label": r["label"], "content": r["text"]} for r in review_rows(n, seed)]

    paths = _write_splits(tmp_path, rows, ".tsv", names=("train", "dev", "test"))
    files = f"{{train: {paths['train']}, validation: {paths['dev']}, test: {paths['test']}}}"
    _, metrics = _fit_test(
        tmp_path, tiny_model, "--data.dataset", "csv", "--data.data_files", files, "--data.text_column", "content"
    )
    assert metrics["test_acc"] > 0.8


def test_jsonl_sentence_pairs_with_string_labels(tmp_path, tiny_model):
    # The label follows the second sentence's sentiment word; the first sentence carries a distracting one.
    def rows(n, seed):
        rng = random.Random(seed)
        out = []
        for i in range(n):
            same = i % 2 == 0
            out.append(
                {
                    "sentence1": " ".join(_words(rng, rng.randint(2, 12)) + [rng.choice(POSITIVE + NEGATIVE)]),
                    "sentence2": " ".join(
                        [rng.choice(POSITIVE if same else NEGATIVE)] + _words(rng, rng.randint(2, 12))
                    ),
                    "label": "paraphrase" if same else "different",
                }
            )
        return out

    paths = _write_splits(tmp_path, rows, ".jsonl", sizes=(400, 100, 100))
    cli, metrics = _fit_test(
        tmp_path,
        tiny_model,
        "--data.data_files",
        _files(paths),
        "--data.text_column",
        "sentence1",
        "--data.text_pair_column",
        "sentence2",
        epochs=4,
        export=True,
    )
    row = cli.datamodule.datasets["train"][0]
    assert 1 in row["token_type_ids"] and row["input_ids"].count(3) == 2  # a real pair: segment ids, two [SEP]
    exported = json.loads((run_dir(tmp_path) / "hf_model" / "config.json").read_text())
    assert exported["id2label"] == {"0": "different", "1": "paraphrase"}
    assert metrics["test_acc"] > 0.8


def test_multi_label_list_column_beats_all_negative(tmp_path, tiny_model):
    # Tags per row: [], ["good"] (a positive word appears) or ["bad"] (a negative one does). The tiny model sits on
    # a plateau (one label learned) for a few epochs before it separates both, hence lr 1e-3 and 12 epochs.
    def rows(n, seed):
        rng = random.Random(seed)
        out = []
        for i in range(n):
            tags = [[], ["good"], ["bad"]][i % 3]
            words = _words(rng, rng.randint(3, 15))
            words += [rng.choice(POSITIVE)] if "good" in tags else []
            words += [rng.choice(NEGATIVE)] if "bad" in tags else []
            rng.shuffle(words)
            out.append({"text": " ".join(words), "tags": tags})
        return out

    paths = _write_splits(tmp_path, rows, ".jsonl", sizes=(600, 100, 100))
    cli, metrics = _fit_test(
        tmp_path,
        tiny_model,
        "--data.data_files",
        _files(paths),
        "--data.label_column",
        "tags",
        "--model.learning_rate",
        "1e-3",
        epochs=12,
    )
    assert cli.model.model.config.problem_type == "multi_label_classification"
    assert cli.model.hparams.label_names == ["bad", "good"]
    assert metrics["test_f1_micro"] > 0.8 and metrics["test_f1_macro"] > 0.8  # all-negative scores 0


def test_multi_label_from_several_01_columns(tmp_path, tiny_model, review_rows):
    def rows(n, seed):
        return [{"text": r["text"], "pos": r["label"], "neg": 1 - r["label"]} for r in review_rows(n, seed)]

    paths = _write_splits(tmp_path, rows, ".csv")
    cli, metrics = _fit_test(
        tmp_path, tiny_model, "--data.data_files", _files(paths), "--data.label_column", "[pos, neg]"
    )
    assert cli.model.hparams.label_names == ["pos", "neg"] and cli.model.task == "multi_label"
    assert metrics["test_f1_micro"] > 0.8


def test_regression_reaches_pearson(tmp_path, tiny_model):
    # The target counts positive words (0-3) and scales it: a known function of the text.
    def rows(n, seed):
        rng = random.Random(seed)
        out = []
        for _ in range(n):
            k = rng.randint(0, 3)
            words = _words(rng, rng.randint(3, 12)) + [rng.choice(POSITIVE) for _ in range(k)]
            rng.shuffle(words)
            out.append({"text": " ".join(words), "score": k * 0.5 + 0.25})
        return out

    paths = _write_splits(tmp_path, rows, ".csv", sizes=(800, 100, 100))
    cli, metrics = _fit_test(
        tmp_path, tiny_model, "--data.data_files", _files(paths), "--data.label_column", "score", epochs=6
    )
    assert cli.model.model.config.problem_type == "regression" and cli.model.model.config.num_labels == 1
    assert metrics["test_pearson"] > 0.8
    assert {"test_mse", "test_spearman"} <= set(metrics)


def test_float_01_labels_stay_single_label(tmp_path, tiny_model, review_rows):
    def rows(n, seed):
        return [{"text": r["text"], "label": float(r["label"])} for r in review_rows(n, seed)]

    paths = _write_splits(tmp_path, rows, ".csv")
    cli, metrics = _fit_test(tmp_path, tiny_model, "--data.data_files", _files(paths))
    assert cli.model.model.config.problem_type == "single_label_classification"
    assert metrics["test_acc"] > 0.8


def _imbalanced_rows(n, seed):
    # 1 in 10 rows is "rare". The cue word "charming" appears in 60% of rare rows but also in 10% of common ones,
    # so without weights the model's best guess for a cue row is still "common" (P(rare | cue) = 0.4).
    rng = random.Random(seed)
    out = []
    for i in range(n):
        rare = i % 10 == 0
        words = _words(rng, rng.randint(3, 12))
        if rng.random() < (0.6 if rare else 0.1):
            words.insert(rng.randrange(len(words)), "charming")
        out.append({"text": " ".join(words), "label": "rare" if rare else "common"})
    return out


def test_balanced_class_weights_raise_minority_recall(tmp_path, tiny_model):
    (tmp_path / "data").mkdir()
    paths = _write_splits(tmp_path / "data", _imbalanced_rows, ".csv", sizes=(1000, 200, 400))
    args = ["--data.data_files", _files(paths)]
    # The last checkpoint of each: val_loss (unweighted) would pick an early, majority-only epoch for both.
    _, plain = _fit_test(tmp_path / "none", tiny_model, *args, epochs=4, ckpt_path="last")
    _, weighted = _fit_test(
        tmp_path / "balanced", tiny_model, *args, "--model.class_weights", "balanced", epochs=4, ckpt_path="last"
    )
    print(f"rare-class recall: none {plain['test_recall_rare']:.3f}, balanced {weighted['test_recall_rare']:.3f}")
    assert weighted["test_recall_rare"] > plain["test_recall_rare"] + 0.2


def test_parse_error_names_file_and_line(tmp_path, tiny_model, review_rows):
    paths = _write_splits(tmp_path, lambda n, s: review_rows(n, s), ".csv", sizes=(40, 20, 20))
    with paths["validation"].open("a") as f:
        f.write("broken row,1,with,extra,fields\n")
    with pytest.raises(HFLightningError, match=r"could not parse .*validation\.csv.*line 22"):
        _fit_test(tmp_path, tiny_model, "--data.data_files", _files(paths))


def test_invalid_rows_dropped_with_count_or_rejected(tmp_path, tiny_model, review_rows, caplog):
    def rows(n, seed):
        out = review_rows(n, seed)
        out[1]["text"] = ""
        out[2]["text"] = None
        out[3]["label"] = None
        return out

    paths = _write_splits(tmp_path, rows, ".jsonl", sizes=(200, 50, 50))
    cli, _ = _fit_test(tmp_path, tiny_model, "--data.data_files", _files(paths), epochs=1)
    assert len(cli.datamodule.datasets["train"]) == 197
    with pytest.raises(
        HFLightningError, match=r"line 2 of .*train.jsonl has an empty text \(3 such rows in the train split\)"
    ):
        _fit_test(tmp_path, tiny_model, "--data.data_files", _files(paths), "--data.drop_invalid_rows", "false")


def test_max_length_clamped_to_model(tmp_path, tiny_model, reviews_dir):
    base = write_base_config(
        tmp_path, tiny_model, data={"dataset": str(reviews_dir)}, trainer={"max_epochs": 1}, export={"enabled": True}
    )
    with pytest.warns(UserWarning, match=r"--data.max_length 4096 is longer than the model accepts; using 128"):
        cli_main(["fit", "--config", str(base), "--data.max_length", "4096"])
    # One rule, and the clamped length is what the checkpoint saves, the export writes and serve reads.
    checkpoint = torch.load(run_dir(tmp_path) / "checkpoints" / "last.ckpt", weights_only=True)
    assert RunRecord.from_checkpoint(checkpoint).max_length == 128
    exported = run_dir(tmp_path) / "hf_model"
    assert AutoTokenizer.from_pretrained(exported).model_max_length == 128
    assert describe(exported, None)["max_length"] == describe(exported, 4096)["max_length"] == 128


def test_folder_of_files_and_validation_carved(tmp_path, tiny_model, review_rows):
    folder = tmp_path / "files"
    folder.mkdir()
    pd.DataFrame(review_rows(300, 0)).to_csv(folder / "part-0.csv", index=False)
    pd.DataFrame(review_rows(100, 1)).to_csv(folder / "part-1.csv", index=False)
    base = write_base_config(tmp_path, tiny_model, trainer={"max_epochs": 1})
    cli = cli_main(["fit", "--config", str(base), "--data.data_files", str(folder), "--data.validation_size", "0.25"])
    assert len(cli.datamodule.datasets["train"]) == 300 and len(cli.datamodule.datasets["validation"]) == 100


def test_monitor_must_exist_for_the_kind(tmp_path, tiny_model):
    def rows(n, seed):
        rng = random.Random(seed)
        return [{"text": " ".join(_words(rng, 5)), "label": rng.random()} for _ in range(n)]

    paths = _write_splits(tmp_path, rows, ".csv", sizes=(40, 20, 20))
    base = write_base_config(tmp_path, tiny_model)
    with pytest.raises(HFLightningError, match=r"monitors 'val_acc', which a regression run never logs.*'val_pearson'"):
        cli_main(
            ["fit", "--config", str(base), "--data.data_files", _files(paths)]
            + ["--trainer.callbacks+=EarlyStopping", "--trainer.callbacks.monitor=val_acc"]
        )


def test_long_pairs_truncate_longest_first(tmp_path, tiny_model):
    rows = [{"a": " ".join(["film"] * 40), "b": "great ending", "label": i % 2} for i in range(8)]
    path = tmp_path / "pairs.jsonl"
    pd.DataFrame(rows).to_json(path, orient="records", lines=True)
    data = HFDataModule(
        data_files={"train": str(path), "validation": str(path)},
        text_column="a",
        text_pair_column="b",
        max_length=12,
        model_name_or_path=str(tiny_model),
    )
    data.setup("fit")
    row = data.datasets["train"][0]
    tokens = data.tokenizer.convert_ids_to_tokens(row["input_ids"])
    # The long first text is cut; the short second one survives whole, after its own [SEP].
    assert len(tokens) == 12 and tokens[-3:] == ["great", "ending", "[SEP]"] and tokens.count("[SEP]") == 2
    assert row["token_type_ids"][-3:] == [1, 1, 1] and row["token_type_ids"][0] == 0


@pytest.mark.parametrize("form", ["single", "list"])
def test_data_files_as_one_path_or_a_list(tmp_path, tiny_model, review_rows, form):
    parts = [tmp_path / "a.csv", tmp_path / "b.csv"]
    pd.DataFrame(review_rows(120, 0)).to_csv(parts[0], index=False)
    pd.DataFrame(review_rows(80, 1)).to_csv(parts[1], index=False)
    files = str(parts[0]) if form == "single" else f"[{parts[0]}, {parts[1]}]"
    base = write_base_config(tmp_path, tiny_model, trainer={"max_epochs": 1})
    cli = cli_main(["fit", "--config", str(base), "--data.data_files", files])
    total = len(cli.datamodule.datasets["train"]) + len(cli.datamodule.datasets["validation"])
    assert total == (120 if form == "single" else 200)  # one train split, validation carved from it
