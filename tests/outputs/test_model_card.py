"""The model card (modules/outputs/model_card.py): its `pipeline(...)` snippet gives what predict decides."""

import json

import pytest

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
