"""The server's pass planning (modules/serve/api.py): rows sorted by length, cut into forward passes; and the
decision rule its answers apply (the export's thresholds or binary decision, or a request's own threshold)."""

import itertools
import json
import random

import pytest
from transformers import AutoConfig, AutoTokenizer, BertForSequenceClassification

from modules.decisions.record import DecisionRule
from modules.serve.limits import Limits, RequestError, check_payload, request_options

pytest.importorskip("litserve")
api = pytest.importorskip("modules.serve.api")  # imports litserve
plan_passes = api.plan_passes


def cost(lengths: list[int], passes: list[slice], overhead: int) -> int:
    return sum(overhead + (part.stop - part.start) * lengths[part.start] for part in passes)


def test_passes_cover_every_row_once_in_order_and_respect_the_row_limit():
    lengths = sorted((random.Random(0).randint(3, 60) for _ in range(100)), reverse=True)
    passes = plan_passes(lengths, most_rows=16, overhead=64)
    assert [row for part in passes for row in range(part.start, part.stop)] == list(range(100))
    assert all(0 < part.stop - part.start <= 16 for part in passes)


def test_the_plan_is_the_cheapest_cut():
    rng = random.Random(1)
    for _ in range(50):
        lengths = sorted((rng.randint(1, 40) for _ in range(rng.randint(1, 9))), reverse=True)
        most_rows, overhead = rng.randint(1, 5), rng.choice([0, 8, 64])
        cheapest = min(
            cost(lengths, cuts, overhead)
            for cuts in (
                [slice(a, b) for a, b in itertools.pairwise((0, *inner, len(lengths)))]
                for k in range(len(lengths))
                for inner in itertools.combinations(range(1, len(lengths)), k)
            )
            if all(c.stop - c.start <= most_rows for c in cuts)
        )
        assert cost(lengths, plan_passes(lengths, most_rows, overhead), overhead) == cheapest


def test_equal_lengths_take_the_fewest_passes_and_costly_passes_are_full():
    assert len(plan_passes([20] * 10, most_rows=4, overhead=1)) == 3
    lengths = [60, 50, 40, 30, 20, 10]
    assert plan_passes(lengths, most_rows=64, overhead=10**6) == [slice(0, 6)]
    assert plan_passes(lengths, most_rows=64, overhead=0) == [slice(i, i + 1) for i in range(6)]
    assert plan_passes([], most_rows=8, overhead=64) == []


LABELS = ["art", "food", "news"]
MULTI_LABEL = Limits(multi_label=True, labels=tuple(LABELS))


def test_a_request_threshold_replaces_every_labels_or_the_named_ones():
    info = {
        "task": "multi_label",
        "labels": LABELS,
        "threshold": 0.5,
        "thresholds": {"news": 0.7, "art": 0.2, "food": 0.4},
    }
    rule = api.served_rule(info)
    assert rule == DecisionRule(threshold=(0.2, 0.4, 0.7))  # id order, whatever the map's order
    assert api.request_rule(rule, None, LABELS) == rule
    assert api.request_rule(rule, 0.6, LABELS) == DecisionRule(threshold=0.6)
    assert api.request_rule(rule, {"food": 0.9}, LABELS) == DecisionRule(threshold=(0.2, 0.9, 0.7))
    untuned = api.served_rule({"task": "multi_label", "labels": LABELS, "threshold": 0.3})
    assert api.request_rule(untuned, {"art": 0.1}, LABELS) == DecisionRule(threshold=(0.1, 0.3, 0.3))
    decision = api.served_rule(
        {"task": "single_label", "labels": ["neg", "pos"], "decision": {"label": "pos", "threshold": 0.3}}
    )
    assert decision == DecisionRule(decision=("pos", 0.3))


@pytest.mark.parametrize(
    ("threshold", "says"),
    [
        ({"arts": 0.3, "art": 0.2}, "`threshold` names unknown label(s) ['arts']: this model's labels are ['art', "),
        ({"art": 1.0}, '`threshold` of "art" must be a number between 0 and 1 (exclusive), got 1.0'),
        ({"art": True}, '`threshold` of "art" must be a number'),
        ({}, "`threshold` is an empty object"),
        ([0.3], "or an object {label: number}, got [0.3]"),
    ],
    ids=["unknown-label", "range", "bool", "empty", "list"],
)
def test_a_bad_request_threshold_is_a_422_that_says_why(threshold, says):
    with pytest.raises(RequestError) as refused:
        check_payload(json.dumps({"inputs": ["x"], "threshold": threshold}).encode(), MULTI_LABEL)
    assert refused.value.status == 422 and says in str(refused.value)


def test_a_threshold_map_passes_and_hugging_faces_shape_takes_none():
    payload = check_payload(json.dumps({"inputs": ["x"], "threshold": {"news": 0.3}}).encode(), MULTI_LABEL)
    assert request_options(payload).threshold == {"news": 0.3}
    for body in (
        {"inputs": "x", "parameters": {}, "threshold": 0.3},
        {"inputs": "x", "parameters": {"threshold": 0.3}},
    ):
        with pytest.raises(RequestError, match="applies to the server's own shape") as refused:
            check_payload(json.dumps(body).encode(), MULTI_LABEL)
        assert refused.value.status == 422


def test_a_binary_decision_answers_its_label_above_its_threshold(tiny_model, tmp_path):
    folder = tmp_path / "model"
    model = BertForSequenceClassification.from_pretrained(
        tiny_model, num_labels=2, id2label={0: "neg", 1: "pos"}, ignore_mismatched_sizes=True
    )
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(folder)
    texts = ["a wonderful film", "the plot was dull and tedious", "fine", "a wonderful and moving story, well told"]

    def served(request: dict) -> list:
        classifier = api.ClassifierAPI(folder, api.describe(folder, None), rows_per_pass=8, threads=1)
        classifier.setup("cpu")
        return classifier.predict(request_options(request))["predictions"]

    every = served({"inputs": texts, "top_k": None})  # every label's score, best first
    named = "neg" if every[0][0]["label"] == "pos" else "pos"  # the label the first text does not pick
    other = "pos" if named == "neg" else "neg"
    scores = [next(s["score"] for s in row if s["label"] == named) for row in every]
    cut = scores[0] - 1e-4  # just below the first text's score of `named` (under 0.5): the decision picks it there
    config = AutoConfig.from_pretrained(folder)
    config.hf_lightning_decision = {"label": named, "threshold": cut}
    config.save_pretrained(folder)
    labels = [p["label"] for p in served({"inputs": texts})]
    assert labels[0] == named and labels == [named if s > cut else other for s in scores]
