"""The model card (modules/outputs/model_card.py): its `pipeline(...)` snippet gives what predict decides."""

import json

import pytest
from huggingface_hub import ModelCard, metadata_load

from modules.outputs.model_card import write_model_card


def _card(tmp_path, config: dict) -> str:
    run, export = tmp_path / "run", tmp_path / "run" / "hf_model"
    export.mkdir(parents=True)
    (run / "fit_summary.json").write_text(json.dumps({"base_model": "tiny", "example_text": "a fine film"}))
    (export / "config.json").write_text(json.dumps(config))
    write_model_card(export, run)
    return (export / "README.md").read_text()


@pytest.mark.parametrize("threshold", [0.3, None], ids=["recorded", "not-recorded"])
def test_a_multi_label_card_shows_every_labels_score_and_the_threshold(tmp_path, threshold):
    config = {"problem_type": "multi_label_classification", "id2label": {"0": "art", "1": "news"}}
    card = _card(tmp_path, config | ({"hf_lightning_threshold": threshold} if threshold else {}))
    assert "top_k=None)" in card  # the pipeline's default keeps the top label only
    assert f'if s["score"] > {threshold or 0.5}]' in card


def test_a_single_label_card_keeps_the_top_label(tmp_path):
    card = _card(tmp_path, {"problem_type": "single_label_classification", "id2label": {"0": "neg", "1": "pos"}})
    assert "top_k" not in card and "classifier('a fine film')" in card


def _export(tmp_path, config: dict, summary: dict, test: dict | None = None, per_class: str | None = None):
    """A fake run folder with its export: config.json, fit_summary.json and, when given, the test's files."""
    run, export = tmp_path / "run", tmp_path / "run" / "hf_model"
    export.mkdir(parents=True)
    (export / "config.json").write_text(json.dumps(config))
    (run / "fit_summary.json").write_text(json.dumps(summary))
    (run / "config.yaml").write_text("data:\n  dataset_config: plain_text\n")
    if test is not None:
        (run / "test_metrics.json").write_text(json.dumps({"ckpt_path": "best.ckpt", "metrics": test}))
    if per_class is not None:
        (run / "test_per_class.csv").write_text(per_class)
    write_model_card(export, run)
    return export / "README.md"


SINGLE = {
    "problem_type": "single_label_classification",
    "id2label": {"0": "neg", "1": "pos"},
    "hf_lightning_decision": {"label": "pos", "threshold": 0.73},
    "hf_lightning_calibration": {
        "method": "temperature", "scale": [0.5], "bias": [], "rows": 100, "nll_before": 0.61, "nll_after": 0.42,
        "ece_before": 0.12, "ece_after": 0.03, "folded_into_weights": True,
    },
}  # fmt: skip


def test_the_card_metadata_names_hub_sources_and_the_test_metrics_in_the_model_index(tmp_path):
    summary = {"base_model": "google-bert/bert-base-uncased", "dataset": "stanfordnlp/imdb", "data_files": None,
               "val_metrics": {"val_acc": 0.5}}  # fmt: skip
    test = {"test_loss": 0.3, "test_acc": 0.875, "test_f1": 0.86, "test_precision_neg": 0.9, "test_recall_neg": 0.8}
    per_class = "label,precision,recall,f1,support\nneg,0.9,0.8,0.847,50\npos,0.82,0.91,0.863,50\n"
    path = _export(tmp_path, SINGLE, summary, test, per_class)
    meta = metadata_load(path)
    assert meta["base_model"] == "google-bert/bert-base-uncased" and meta["datasets"] == ["stanfordnlp/imdb"]
    assert meta["pipeline_tag"] == "text-classification" and meta["library_name"] == "transformers"
    assert "hf-lightning" in meta["tags"] and "single-label" in meta["tags"]
    results = ModelCard.load(path).data.eval_results  # the Hub's own parser of model-index
    by_type = {r.metric_type: r for r in results}
    assert by_type["accuracy"].metric_value == 0.875 and by_type["f1"].metric_args == {"average": "macro"}
    assert {(r.task_type, r.dataset_type, r.dataset_split, r.dataset_config) for r in results} == {
        ("text-classification", "stanfordnlp/imdb", "test", "plain_text")
    }
    assert len(results) == 3  # loss, accuracy, F1: the per-label precision and recall sit in the label table
    card = path.read_text()
    assert "| neg | 0.9000 | 0.8000 | 0.8470 | 50 | most probable of the others |" in card
    assert "| pos | 0.8200 | 0.9100 | 0.8630 | 50 | 0.7300 |" in card
    assert "T = 2.0000" in card and "ECE 0.1200 -> 0.0300" in card and "folded into the classification head" in card
    assert "label = 'pos' if scores['pos'] > 0.73 else others" in card  # the pipeline snippet decides as serve does


def test_local_sources_stay_out_of_the_metadata_and_validation_stands_in_for_test(tmp_path):
    base = tmp_path / "tiny-bert"
    base.mkdir()
    summary = {"base_model": str(base), "dataset": str(tmp_path / "reviews"), "data_files": None,
               "val_metrics": {"val_loss": 0.4, "val_acc": 0.75, "val_f1": 0.7}}  # fmt: skip
    config = {"problem_type": "single_label_classification", "id2label": {"0": "neg", "1": "pos"}}
    path = _export(tmp_path, config, summary)
    meta = metadata_load(path)
    assert "base_model" not in meta and "datasets" not in meta  # a local path is no Hub id: the Hub refuses it
    results = ModelCard.load(path).data.eval_results
    assert {(r.dataset_name, r.dataset_split) for r in results} == {("reviews", "validation")}
    assert {r.metric_type: r.metric_value for r in results}["accuracy"] == 0.75
    card = path.read_text()
    assert "(a local folder: the metadata names no `base_model`)" in card
    assert "| neg | - | - | - | - | most probable |" in card and "## Calibration" not in card


def test_a_multi_label_card_gives_each_labels_tuned_threshold_scores_and_platt_calibration(tmp_path):
    config = {
        "problem_type": "multi_label_classification",
        "id2label": {"0": "art", "1": "news", "2": "rare"},
        "hf_lightning_threshold": 0.5,
        "hf_lightning_thresholds": {"art": 0.35, "news": 0.6, "rare": 0.5},
        "hf_lightning_calibration": {
            "method": "platt", "scale": [1.5, 0.8, 1.0], "bias": [-0.2, 0.1, 0.0], "rows": 300, "nll_before": 0.3,
            "nll_after": 0.25, "ece_before": 0.08, "ece_after": 0.02, "folded_into_weights": True,
        },
    }  # fmt: skip
    # Another writer's table: extra columns, and a row whose numbers do not parse, are read without failing.
    per_class = (
        "label,precision,recall,f1,support,threshold,tuned\n"
        "art,0.7,0.6,0.646,40,0.35,true\nnews,0.5,0.5,0.5,30,0.6,true\nrare,n/a,,,0,0.5,false\n"
    )
    summary = {"base_model": "tiny", "data_files": {"train": "t.jsonl"}, "val_metrics": {}}
    test = {"test_f1_macro": 0.55, "test_f1_micro": 0.6, "test_ece": 0.02, "test_ece_uncalibrated": 0.09}
    path = _export(tmp_path, config, summary, test, per_class)
    results = ModelCard.load(path).data.eval_results
    assert {r.metric_name: r.metric_value for r in results if r.metric_type == "f1"} == {
        "F1 (macro)": 0.55,
        "F1 (micro)": 0.6,
    }
    assert "datasets" not in metadata_load(path)  # local files
    card = path.read_text()
    assert "| art | 0.7000 | 0.6000 | 0.6460 | 40 | 0.3500 |" in card
    assert "| rare | - | - | - | 0 | 0.5000 |" in card
    assert "| news | 0.8000 | 0.1000 |" in card  # Platt a and b per label
    assert "Test ECE 0.0900 -> 0.0200." in card
    assert "top_k=None)" in card and 'if s["score"] > thresholds[s["label"]]]' in card
