"""The numbers of the test report, from decided predictions and gold labels: precision, recall, F1 and support per
label, the most-confused label pairs, and a regression's residuals. Pure torch: tested alone."""

import torch

TOP_PAIRS = 5  # most-confused label pairs the report prints
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)  # of a regression's residuals


def label_rows(
    true_positives: torch.Tensor, predicted: torch.Tensor, support: torch.Tensor, names: list[str]
) -> list[dict]:
    """precision, recall, F1 and support per label from its counts: rows it got right, rows it was predicted for,
    rows it is the gold label of. A label never predicted has precision 0, one absent from the data recall 0
    (torchmetrics' convention)."""
    hits, predicted, support = true_positives.double(), predicted.double(), support.double()
    precision = torch.where(predicted > 0, hits / predicted.clamp(min=1), 0.0)
    recall = torch.where(support > 0, hits / support.clamp(min=1), 0.0)
    f1 = torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall).clamp(min=1e-12), 0.0)
    return [
        {"label": name, "precision": p, "recall": r, "f1": f, "support": int(s)}
        for name, p, r, f, s in zip(names, precision.tolist(), recall.tolist(), f1.tolist(), support.tolist())
    ]


def per_class_rows(matrix: torch.Tensor, names: list[str]) -> list[dict]:
    """Single-label `label_rows` from a confusion matrix (rows: true label, columns: predicted)."""
    return label_rows(matrix.diagonal(), matrix.sum(0), matrix.sum(1), names)


def multi_label_rows(predicted: torch.Tensor, labels: torch.Tensor, names: list[str]) -> list[dict]:
    """Multi-label `label_rows` from `(rows, labels)` 0/1 decisions and gold labels."""
    predicted, labels = predicted.bool(), labels.bool()
    return label_rows((predicted & labels).sum(0), predicted.sum(0), labels.sum(0), names)


def confusion_matrix(predicted: torch.Tensor, labels: torch.Tensor, num_labels: int) -> torch.Tensor:
    """`(num_labels, num_labels)` counts, rows: true label, columns: predicted (as torchmetrics')."""
    pairs = labels.long() * num_labels + predicted.long()
    return torch.bincount(pairs, minlength=num_labels * num_labels).reshape(num_labels, num_labels)


def confused_pairs(predicted: torch.Tensor, labels: torch.Tensor, names: list[str], top: int = TOP_PAIRS) -> list[dict]:
    """The label pairs the model mixes up most, as `{gold, predicted, rows}`, most rows first.

    Single-label: the confusion matrix's off-diagonal counts. Multi-label: among rows whose predicted set is wrong,
    how often a gold label co-occurs with a label predicted but absent (the label the model reached for instead)."""
    if predicted.ndim == 1:
        counts = confusion_matrix(predicted, labels, len(names))
        counts.fill_diagonal_(0)
    else:
        predicted, labels = predicted.bool(), labels.bool()
        wrong = (predicted != labels).any(dim=1)
        extra = (predicted & ~labels)[wrong].double()
        counts = (labels[wrong].double().T @ extra).long()  # (gold, wrongly predicted); the diagonal is 0
    flat = counts.flatten()
    order = torch.argsort(flat, descending=True, stable=True)[:top]
    width = len(names)
    return [
        {"gold": names[int(i) // width], "predicted": names[int(i) % width], "rows": int(flat[i])}
        for i in order
        if flat[i] > 0
    ]


def residual_summary(predicted: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """A regression's residuals (predicted - gold): mean, std, MAE, RMSE and quantiles."""
    residuals = predicted.double() - labels.double()
    summary = {
        "mean": float(residuals.mean()),
        "std": float(residuals.std()) if len(residuals) > 1 else 0.0,
        "mae": float(residuals.abs().mean()),
        "rmse": float(residuals.pow(2).mean().sqrt()),
    }
    values = torch.quantile(residuals, torch.tensor(QUANTILES, dtype=torch.float64))
    summary.update({f"q{round(q * 100):02d}": float(v) for q, v in zip(QUANTILES, values)})
    return summary


def markdown_table(rows: list[dict]) -> str:
    """`rows` (dicts with the same keys) as a Markdown table; floats to 4 decimals."""
    keys = list(rows[0])

    def cell(value: object) -> str:
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(cell(row[k]) for k in keys) + " |" for row in rows]
    return "\n".join(lines)
