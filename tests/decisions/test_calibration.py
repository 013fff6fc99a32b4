"""Calibration and thresholds on synthetic outputs: what they recover, and that folding into the head is exact."""

import torch
from transformers import AutoModelForSequenceClassification

from modules.decisions import calibration
from modules.decisions.record import Calibration, DecisionRule, Decisions, Target
from modules.decisions.thresholds import best_f1, for_target, predicted, tune_binary, tune_multi_label


def _overconfident(n: int, temperature: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels drawn from softmax(true logits); the model reports those logits times `temperature`."""
    generator = torch.Generator().manual_seed(seed)
    true_logits = torch.randn(n, 3, generator=generator) * 2
    labels = torch.multinomial(torch.softmax(true_logits, -1), 1, generator=generator).squeeze(1)
    return true_logits * temperature, labels


def test_temperature_recovers_overconfidence_and_keeps_every_argmax():
    logits, labels = _overconfident(20000, 3.0, seed=0)
    fitted = calibration.fit(logits, labels, multi_label=False)
    assert fitted.method == "temperature" and abs(1 / fitted.scale[0] - 3.0) < 0.15
    assert fitted.ece_after < 0.02 < fitted.ece_before and fitted.nll_after < fitted.nll_before
    after = calibration.apply(logits, fitted)
    assert torch.equal(after.argmax(-1), logits.argmax(-1))  # accuracy cannot change
    held_out, held_labels = _overconfident(20000, 3.0, seed=1)  # the same distribution: ECE falls there too
    ece = calibration.expected_calibration_error
    before = ece(torch.softmax(held_out, -1), held_labels, False)
    assert ece(torch.softmax(calibration.apply(held_out, fitted), -1), held_labels, False) < 0.6 * before


def test_platt_per_label_and_a_perfectly_separated_label_stays_finite():
    generator = torch.Generator().manual_seed(0)
    labels = (torch.rand(5000, 3, generator=generator) < torch.tensor([0.5, 0.2, 0.01])).float()
    logits = (labels * 2 - 1) * torch.tensor([0.5, 4.0, 3.0]) + torch.randn(5000, 3, generator=generator)
    logits[:, 0] = (labels[:, 0] * 2 - 1) * 10.0  # separates perfectly: the likelihood alone would scale to infinity
    fitted = calibration.fit(logits, labels, multi_label=True)
    assert fitted.method == "platt" and len(fitted.scale) == len(fitted.bias) == 3
    assert max(fitted.scale) < 50 and fitted.nll_after < fitted.nll_before
    assert fitted.ece_after < fitted.ece_before


def test_folding_into_the_head_equals_applying_to_logits(tiny_model):
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=3, ignore_mismatched_sizes=True)
    model.eval()
    inputs = {"input_ids": torch.randint(5, 40, (4, 9)), "attention_mask": torch.ones(4, 9, dtype=torch.long)}
    with torch.no_grad():
        raw = model(**inputs).logits
    platt = Calibration("platt", scale=(0.5, 2.0, 1.5), bias=(0.3, -1.0, 0.0))
    calibration.fold_into_head(model, platt, 3)
    with torch.no_grad():
        folded = model(**inputs).logits
    assert calibration.head_layer(model, 3) is model.classifier
    assert torch.allclose(folded, calibration.apply(raw, platt), atol=1e-5)


def test_best_f1_threshold_reproduces_its_f1_and_targets_are_met():
    generator = torch.Generator().manual_seed(0)
    positive = torch.rand(4000, generator=generator) < 0.2
    scores = torch.sigmoid(positive.float() * 2 - 1 + torch.randn(4000, generator=generator))
    threshold, f1 = best_f1(scores, positive)
    chosen = scores > threshold
    true_positives = (chosen & positive).sum().item()
    assert abs(2 * true_positives / (chosen.sum().item() + positive.sum().item()) - f1) < 1e-9
    for cut in (0.3, 0.5, 0.7):  # no other cut does better
        other = scores > cut
        assert 2 * (other & positive).sum().item() / (other.sum().item() + positive.sum().item()) <= f1 + 1e-9
    threshold, reached = for_target(scores, positive, "precision", 0.8)
    chosen = scores > threshold
    assert reached >= 0.8 and abs((chosen & positive).sum().item() / chosen.sum().item() - reached) < 1e-9
    threshold, reached = for_target(scores, positive, "recall", 0.95)
    assert reached >= 0.95 and ((scores > threshold) & positive).sum().item() / positive.sum().item() >= 0.95


def test_binary_target_precision_holds_on_a_test_split_of_the_same_distribution():
    def split(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        generator = torch.Generator().manual_seed(seed)
        labels = (torch.rand(20000, generator=generator) < 0.4).long()
        logit = (labels.float() * 2 - 1) * 1.2 + torch.randn(20000, generator=generator) * 1.5
        return torch.stack([-logit, logit], -1).softmax(-1), labels

    validation, test = split(0), split(1)
    target = tune_binary(*validation, ["neg", "pos"], "pos", "precision", 0.9)
    decided = predicted("single_label", test[0], DecisionRule(decision=("pos", target.threshold)), ["neg", "pos"])
    precision = ((decided == 1) & (test[1] == 1)).sum().item() / (decided == 1).sum().item()
    assert abs(precision - 0.9) < 0.02 and target.reached >= 0.9


def test_labels_without_enough_positives_keep_the_default_and_say_why():
    generator = torch.Generator().manual_seed(0)
    labels = torch.zeros(200, 3)
    labels[:60, 0], labels[:2, 2] = 1, 1
    probabilities = torch.rand(200, 3, generator=generator) * 0.5 + labels * 0.3
    thresholds, untuned, _ = tune_multi_label(probabilities, labels, ["a", "b", "c"], 0.3, 5)
    assert thresholds[1:] == (0.3, 0.3) and thresholds[0] != 0.3
    assert set(untuned) == {"b", "c"} and "0 positive(s)" in untuned["b"] and "2 positive(s)" in untuned["c"]


def test_decisions_round_trip_and_the_export_keys_and_rule_agree():
    decisions = Decisions(
        "multi_label", ("a", "b"), Calibration("platt", (1.5, 0.7), (0.1, -0.2), 100), 0.3, (0.2, 0.6),
        {"b": "why"}, (), "f1",
    )  # fmt: skip
    again = Decisions.from_dict(decisions.to_dict())
    assert again == decisions
    keys = decisions.export_keys()
    assert keys["hf_lightning_thresholds"] == {"a": 0.2, "b": 0.6} and keys["hf_lightning_threshold"] == 0.3

    class Config:
        id2label = {0: "a", 1: "b"}
        num_labels = 2
        hf_lightning_thresholds = keys["hf_lightning_thresholds"]

    assert DecisionRule.from_config(Config()) == decisions.rule() == DecisionRule(threshold=(0.2, 0.6))
    assert decisions.rule(0.5) == DecisionRule(threshold=0.5)  # a command's own value replaces every threshold
    binary = Decisions("single_label", ("neg", "pos"), targets=(Target("pos", "precision", 0.9, 0.8, 0.91),))
    assert binary.rule() == DecisionRule(decision=("pos", 0.8))
