"""Calling out a model that learned nothing: predictions that collapsed onto one label (or label set), labels
never predicted, validation metrics that do not move. One line each, with what to try."""

from collections import Counter

import torch

ADVICE = (
    "try a higher --model.learning_rate (small models take 1e-4 and more), more --trainer.max_epochs, or "
    "--model.class_weights balanced"
)


def collapse_findings(predicted: torch.Tensor, labels: torch.Tensor, names: list[str], task: str) -> list[str]:
    """What looks collapsed in one evaluation's decided predictions: `(rows,)` class ids or `(rows, labels)` 0/1."""
    rows = len(predicted)
    if rows < 20 or task == "regression":  # too few rows to tell
        return []
    findings = []
    if task == "single_label":
        counts = torch.bincount(predicted.long(), minlength=len(names))
        top = int(torch.argmax(counts))
        share, gold_share = float(counts[top]) / rows, float((labels == top).float().mean())
        if share >= 0.95 and gold_share < 0.9:
            findings.append(
                f"predicts {names[top]!r} for {share:.0%} of rows (it is {gold_share:.0%} of the gold labels)"
            )
        return findings
    sets = Counter(tuple(torch.nonzero(row).flatten().tolist()) for row in predicted.bool())
    common, count = sets.most_common(1)[0]
    gold_sets = Counter(tuple(torch.nonzero(row).flatten().tolist()) for row in labels.bool())
    gold_share = gold_sets.get(common, 0) / rows
    if count / rows >= 0.9 and gold_share < 0.8:
        shown = "no label" if not common else "{" + ", ".join(names[i] for i in common) + "}"
        findings.append(f"predicts {shown} for {count / rows:.0%} of rows ({gold_share:.0%} of the gold label sets)")
    present = labels.bool().any(0)
    never = present & ~predicted.bool().any(0)
    if int(present.sum()) >= 4 and int(never.sum()) * 2 >= int(present.sum()):
        findings.append(f"never predicts {int(never.sum())} of the {int(present.sum())} labels present in the data")
    return findings


def scores(task: str, predicted: torch.Tensor, labels: torch.Tensor, num_labels: int) -> dict[str, float]:
    """An evaluation's accuracy and macro-F1 (`val_acc`, `val_f1`; multi-label `val_f1_macro`), from its decided
    predictions: read from the outputs, not from the trainer's metrics, which other callbacks may be editing."""
    from modules.decisions.thresholds import f1_scores

    if task == "multi_label":
        return {"val_f1_macro": f1_scores(predicted, labels)[0]}
    if task != "single_label":
        return {}
    one_hot = torch.nn.functional.one_hot
    return {
        "val_acc": float((predicted == labels).float().mean()),
        "val_f1": f1_scores(one_hot(predicted.long(), num_labels), one_hot(labels.long(), num_labels))[0],
    }


def flat(history: list[dict[str, float]], epochs: int = 3, low: float = 0.5) -> list[str]:
    """Metrics (loss left out) stuck: equal to 4 decimals over the last `epochs` validations, and below `low` (a
    model that converged at 0.95 is not stuck)."""
    if len(history) < epochs:
        return []
    last = history[-epochs:]
    names = [k for k in last[-1] if not k.endswith("_loss") and all(k in h for h in last)]
    return [k for k in names if len({round(h[k], 4) for h in last}) == 1 and last[-1][k] < low]
