"""Distillation (`--distill.*`): each task's soft loss and its mix with the gold loss, the teacher file recognised and
checked against the data's labels with one-line errors, the teacher's scores cached beside the tokenized rows, and
one multi-label fit of a 1-layer student from a teacher's export with an unlabelled file."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import load_dataset
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from helpers import TOPICS, write_base_config
from modules.cli.app import cli_main
from modules.data.labels import LabelSpec
from modules.distill.augment import augmented, perturb
from modules.distill.loss import DistillLoss, soft_loss
from modules.distill.targets import teacher_loader, with_teacher_logits
from modules.distill.teacher import read_teacher_file
from modules.errors import HFLightningError


def test_soft_loss_is_zero_at_the_teacher_and_is_the_scaled_kl_away_from_it():
    teacher = torch.tensor([[2.0, -1.0, 0.5], [0.0, 1.0, -2.0]])
    assert soft_loss("single_label", teacher, teacher, 2.0).item() == pytest.approx(0.0, abs=1e-6)
    student = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    p = torch.softmax(teacher / 2, -1)
    expected = (p * (p.log() - torch.log_softmax(student / 2, -1))).sum(-1).mean() * 4
    assert soft_loss("single_label", student, teacher, 2.0).item() == pytest.approx(expected.item(), rel=1e-5)
    # Multi-label: per-label BCE against the teacher's sigmoid, smallest (zero gradient) at the teacher's logits.
    logits = teacher.clone().requires_grad_(True)
    soft_loss("multi_label", logits, teacher, 3.0).backward()
    assert logits.grad.abs().max().item() < 1e-6
    assert soft_loss("regression", torch.tensor([[1.0], [3.0]]), torch.tensor([[2.0], [1.0]]), 5.0).item() == 2.5


def test_mix_weighs_soft_and_gold_and_unlabelled_rows_have_no_gold_loss():
    logits = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0]])
    batch = {
        "teacher_logits": torch.tensor([[0.0, 1.0], [0.0, 1.0], [1.0, 0.0]]),
        "labels": torch.tensor([0, 1, 0]),
        "index": torch.tensor([0, 5, 10]),  # 10: from the unlabelled file (the train split has 10 rows)
    }

    def gold(out, labels):
        return torch.nn.functional.cross_entropy(out, labels)

    soft = soft_loss("single_label", logits, batch["teacher_logits"], 2.0)
    mixed = DistillLoss("single_label", 0.25, 2.0, labeled_rows=10, unlabeled=True)(logits, batch, gold)
    assert mixed.item() == pytest.approx((0.25 * soft + 0.75 * gold(logits[:2], batch["labels"][:2])).item())
    only_unlabelled = {**batch, "index": torch.tensor([10, 11, 12])}
    loss = DistillLoss("single_label", 0.25, 2.0, labeled_rows=10, unlabeled=True)(logits, only_unlabelled, gold)
    assert loss.item() == pytest.approx(soft.item())


def _not_a_classifier(folder: Path) -> Path:
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    return folder


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda tmp: tmp / "nowhere", r"does not exist"),
        (lambda tmp: (tmp / "t.txt").write_text("x") and tmp / "t.txt", r"is not a checkpoint or an export"),
        (lambda tmp: (tmp / "t.ckpt").write_text("x") and tmp / "t.ckpt", r"is corrupt or not a checkpoint"),
        (lambda tmp: (tmp / "empty").mkdir() or tmp / "empty", r"is a folder without config.json"),
        (lambda tmp: _not_a_classifier(tmp / "body"), r"is not a sequence classifier"),
    ],
)
def test_a_file_that_is_not_a_teacher_is_one_line_naming_the_flag(tmp_path, make, message):
    with pytest.raises(HFLightningError, match=r"^--distill.teacher .*" + message) as error:
        read_teacher_file(make(tmp_path))
    assert "\n" not in str(error.value)


def test_teacher_labels_are_matched_by_name_and_other_labels_are_refused(topic_run):
    teacher = read_teacher_file(topic_run["export"])
    names = list(TOPICS)
    assert teacher.task == "multi_label" and sorted(teacher.labels) == sorted(names)
    reordered = tuple(reversed(teacher.labels))
    assert [teacher.labels[i] for i in teacher.columns_for(LabelSpec("multi_label", reordered))] == list(reordered)
    other = tuple("cinema" if name == "art" else name for name in teacher.labels)
    with pytest.raises(HFLightningError, match=r"missing from the teacher: \['cinema'\]; not in the data: \['art'\]"):
        teacher.columns_for(LabelSpec("multi_label", other))
    with pytest.raises(HFLightningError, match=r"was trained for multi_label, but the data gives single_label"):
        teacher.columns_for(LabelSpec("single_label", ("neg", "pos")))


def test_teacher_scores_are_the_teachers_logits_and_a_second_pass_reads_the_cache(tiny_model, tmp_path):
    texts = ["a brilliant film", "dull", "the plot was charming and moving", "superb", "funny funny"]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    raw = load_dataset("json", data_files=str(tmp_path / "rows.jsonl"), cache_dir=str(tmp_path / "cache"))["train"]
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    # Two windows of the second document, as `--data.long_text chunk` gives: both get its scores.
    tokenized = raw.map(
        lambda b, i: {"index": [*i[:2], 1, *i[2:]][: len(i) + 1]},
        batched=True,
        with_indices=True,
        remove_columns=["text"],
    )
    teacher = read_teacher_file(tiny_model)
    loaded = teacher_loader(teacher, torch.device("cpu"))
    scored = with_teacher_logits(tokenized, raw, 0, teacher, [1, 0], ["text"], 2, torch.device("cpu"), loaded)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model).eval()
    with torch.no_grad():
        direct = [model(**tokenizer(texts[i], return_tensors="pt")).logits[0].numpy() for i in scored["index"][:]]
    got = np.asarray(scored["teacher_logits"][:])
    np.testing.assert_allclose(got, np.asarray(direct)[:, [1, 0]], atol=1e-5)

    def no_teacher():
        raise AssertionError("the teacher ran again: the cached scores were not used")

    again = with_teacher_logits(tokenized, raw, 0, teacher, [1, 0], ["text"], 2, torch.device("cpu"), no_teacher)
    np.testing.assert_array_equal(np.asarray(again["teacher_logits"][:]), got)


def test_one_layer_student_learns_from_a_teacher_export_and_an_unlabelled_file(
    tiny_model, topic_run, reviews_dir, tmp_path, caplog
):
    unlabelled = tmp_path / "unlabelled.txt"
    rows = [json.loads(line)["text"] for line in Path(topic_run["files"]["test"]).read_text().splitlines()]
    unlabelled.write_text("\n".join(rows[:200]) + "\n\n")  # a blank line: skipped
    base = write_base_config(
        tmp_path,
        tiny_model,
        trainer={"max_epochs": 1},
        data={"batch_size": 16, "data_files": topic_run["files"], "label_column": "labels"},
    )
    cli = cli_main(["fit", "--config", str(base), "--model.num_layers", "1",
                    "--distill.teacher", str(topic_run["export"]), "--distill.unlabeled_file", str(unlabelled),
                    "--distill.alpha", "0.7", "--distill.augment", "1"])  # fmt: skip
    assert (
        f"Distilling from {topic_run['export']} (alpha 0.7, temperature 2.0), with 800 perturbed copies of the train "
        f"rows, with 200 unlabeled rows" in caplog.text
    )
    train = cli.datamodule.datasets["train"]
    assert len(train) == 800 + 800 + 200 and "teacher_logits" in train.column_names
    assert cli.model.model.config.num_hidden_layers == 1 and cli.trainer.global_step == -(-1800 // 16)
    # The student's own commands need no teacher: a config that still names a teacher that is gone tests fine.
    tested = cli_main(
        ["test", "--config", str(base), "--ckpt_path", "best", "--distill.teacher", str(tmp_path / "gone")]
    )
    assert "test_f1_macro" in tested.trainer.callback_metrics
    with pytest.raises(HFLightningError, match=r"^--distill.teacher .* was trained for multi_label"):
        cli_main(["fit", "--config", str(base), "--data.data_files", "null", "--data.label_column", "label",
                  "--data.dataset", str(reviews_dir), "--distill.teacher", str(topic_run["export"])])  # fmt: skip


def test_perturbed_copies_mask_words_cut_ngrams_and_repeat_with_the_seed(tmp_path):
    import random

    text = " ".join(f"w{i}" for i in range(40))
    copies = [perturb(text, random.Random(i), "[MASK]", ngram=True) for i in range(400)]
    masked = sum(c.split().count("[MASK]") for c in copies if len(c.split()) == 40) / (40 * 300)
    assert 0.07 < masked < 0.13  # about MASK_RATE (0.1) of the words of uncut copies
    cut = [c for c in copies if len(c.split()) <= 5]
    assert 70 < len(cut) < 130 and all(c in text or "[MASK]" in c for c in cut)  # about NGRAM_RATE: runs of words
    assert all(perturb("one", random.Random(i), None, ngram=True) == "one" for i in range(50))  # never empty
    rows = load_dataset("json", data_files=str(_jsonl(tmp_path, ["a b c d e f", "g h i j"])))["train"]
    first, again = (augmented(rows, ["text"], 3, seed=7, mask_token="[MASK]") for _ in range(2))
    assert first.column_names == ["text"] and len(first) == 6 and first["text"][:] == again["text"][:]
    assert augmented(rows, ["text"], 3, seed=8, mask_token="[MASK]")["text"][:] != first["text"][:]


def _jsonl(folder: Path, texts: list[str]) -> Path:
    path = folder / "texts.jsonl"
    path.write_text("".join(json.dumps({"text": t, "label": 0}) + "\n" for t in texts))
    return path


def test_an_export_without_problem_type_takes_transformers_rule(tmp_path):
    # One output and no `problem_type` is regression for transformers; more outputs, single-label.
    for num_labels, task in ((1, "regression"), (3, "single_label")):
        folder = tmp_path / f"head{num_labels}"
        folder.mkdir()
        id2label = {str(i): f"LABEL_{i}" for i in range(num_labels)}
        config = {"model_type": "bert", "architectures": ["BertForSequenceClassification"], "id2label": id2label}
        (folder / "config.json").write_text(json.dumps(config))
        teacher = read_teacher_file(folder)
        assert (teacher.task, teacher.labels) == (task, tuple(id2label.values()))
