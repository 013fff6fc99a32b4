"""Thresholds chosen on validation outputs: per label for the best F1 (multi-label), or for a target precision or
recall of one label (multi-label per label, or the named class of a binary single-label model).

A label is predicted when its probability is above its threshold. Cuts fall halfway between two distinct
validation scores, so the threshold reproduces on validation exactly the decisions it was chosen for.
"""

from collections.abc import Mapping

import torch

from modules.decisions.record import DecisionRule, Target


def _cuts(scores: torch.Tensor, positive: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For each way of predicting the top-k rows positive (k = 1..n, between distinct scores): k, true positives
    and the threshold that predicts exactly them."""
    order = torch.argsort(scores, descending=True, stable=True)
    ranked, hits = scores[order].double(), positive[order].double()
    true_positives = hits.cumsum(0)
    n = len(ranked)
    k = torch.arange(1, n + 1, dtype=torch.float64)
    distinct = torch.ones(n, dtype=torch.bool)
    distinct[:-1] = ranked[:-1] > ranked[1:]  # a cut after k only where the k-th and (k+1)-th scores differ
    below = torch.cat([ranked[1:], ranked.new_zeros(1)])
    threshold = ((ranked + below) / 2).clamp(1e-6, 1 - 1e-6)
    return k[distinct], true_positives[distinct], threshold[distinct]


def best_f1(scores: torch.Tensor, positive: torch.Tensor) -> tuple[float, float]:
    """The threshold of the best F1 on these rows, and that F1."""
    k, true_positives, threshold = _cuts(scores, positive)
    f1 = 2 * true_positives / (k + positive.sum())
    best = int(torch.argmax(f1))  # the first best: the highest threshold among equals
    return float(threshold[best]), float(f1[best])


def for_target(scores: torch.Tensor, positive: torch.Tensor, metric: str, value: float) -> tuple[float, float]:
    """The threshold that meets `metric` >= `value` with the most of the other one (recall for a precision target,
    precision for a recall target, within the cuts that all meet a precision target), and the metric reached; when
    none meets it, the closest."""
    k, true_positives, threshold = _cuts(scores, positive)
    precision, recall = true_positives / k, true_positives / max(float(positive.sum()), 1.0)
    reached = precision if metric == "precision" else recall
    meets = reached >= value
    if not meets.any():
        best = int(torch.argmax(reached))
        return float(threshold[best]), float(reached[best])
    index = torch.nonzero(meets).flatten()
    if metric == "recall":  # recall only grows with k: the smallest k that meets it keeps the most precision
        best = int(index[0])
        return float(threshold[best]), float(reached[best])
    # Precision is noisy in k: the largest k that meets the target is where noise last lifted it over, and held-out
    # data falls short there. Instead: from the first cut with enough rows to measure (5% of the positives), the end
    # of the run of cuts that all meet it.
    enough = torch.nonzero(k >= max(1.0, 0.05 * float(positive.sum()))).flatten()
    start = int(enough[0]) if len(enough) else 0
    if not meets[start]:
        best = int(index[-1])
    else:
        misses = torch.nonzero(~meets[start:]).flatten()
        best = start + int(misses[0]) - 1 if len(misses) else len(meets) - 1
    return float(threshold[best]), float(reached[best])


def tune_multi_label(
    probabilities: torch.Tensor,
    labels: torch.Tensor,
    names: list[str],
    default: float,
    min_positives: int,
    target_precision: float | Mapping[str, float] | None = None,
) -> tuple[tuple[float, ...], dict[str, str], tuple[Target, ...]]:
    """One threshold per label: the best F1's, or a target precision's (all labels, or those named). Labels with
    fewer than `min_positives` validation positives keep `default`; returned with why."""
    thresholds, untuned, targets = [], {}, []
    for column, name in enumerate(names):
        positive = labels[:, column] > 0.5
        count = int(positive.sum())
        if count < min_positives:
            thresholds.append(default)
            untuned[name] = f"{count} positive(s) in validation, fewer than --decisions.min_positives {min_positives}"
            continue
        scores = probabilities[:, column]
        wanted = target_precision.get(name) if isinstance(target_precision, Mapping) else target_precision
        if wanted is None:
            thresholds.append(best_f1(scores, positive)[0])
            continue
        threshold, reached = for_target(scores, positive, "precision", wanted)
        thresholds.append(threshold)
        targets.append(Target(name, "precision", wanted, threshold, reached))
    return tuple(thresholds), untuned, tuple(targets)


def tune_binary(probabilities: torch.Tensor, labels: torch.Tensor, names: list[str], label: str, metric: str,
                value: float) -> Target:  # fmt: skip
    """Single-label with two classes: the threshold on `label`'s probability for `metric` >= `value`."""
    column = names.index(label)
    threshold, reached = for_target(probabilities[:, column], labels == column, metric, value)
    return Target(label, metric, value, threshold, reached)


def predicted(task: str, probabilities: torch.Tensor, rule: DecisionRule, names: list[str]) -> torch.Tensor:
    """The decisions `rule` makes: `(rows,)` class ids (single-label) or `(rows, labels)` 0/1 floats (multi-label);
    regression values pass through."""
    if task == "regression":
        return probabilities
    if task == "multi_label":
        cut = probabilities.new_tensor(rule.per_label(probabilities.shape[-1]))
        return (probabilities > cut).float()
    best = probabilities.argmax(dim=-1)
    if rule.decision is None:
        return best
    label, cut = rule.decision
    column = names.index(label)
    others = probabilities.clone()
    others[:, column] = -1.0
    return torch.where(probabilities[:, column] > cut, torch.full_like(best, column), others.argmax(dim=-1))


def f1_scores(predicted: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """Multi-label (macro, micro) F1 of 0/1 decisions (a label neither predicted nor present scores 0 in the macro
    mean, as torchmetrics)."""
    predicted, labels = predicted.bool(), labels.bool()
    true_positives = (predicted & labels).sum(0).double()
    denominator = predicted.sum(0).double() + labels.sum(0).double()
    per_label = torch.where(denominator > 0, 2 * true_positives / denominator.clamp(min=1), 0.0)
    micro = 2 * true_positives.sum() / denominator.sum() if denominator.sum() > 0 else torch.tensor(0.0)
    return float(per_label.mean()), float(micro)
