"""The test report's figures: the confusion matrix (single-label) and the reliability diagram (classifiers).

matplotlib is optional (`pip install hf-lightning[plots]`): each function raises ImportError without it. Figures are
built without pyplot, so no display or backend is needed.
"""

import torch


def confusion_figure(matrix: torch.Tensor, names: list[str]):
    """A matplotlib Figure of the counts (rows: true label, columns: predicted)."""
    from matplotlib.figure import Figure

    n = len(names)
    size = min(4 + 0.5 * n, 20)
    figure = Figure(figsize=(size, size))
    axes = figure.subplots()
    image = axes.imshow(matrix.numpy(), cmap="Blues")
    axes.set_xticks(range(n), labels=names, rotation=45, ha="right")
    axes.set_yticks(range(n), labels=names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(f"Test confusion matrix ({int(matrix.sum())} rows)")
    if n <= 30:  # beyond that the numbers no longer fit their cells
        high = matrix.max().item() / 2
        for i in range(n):
            for j in range(n):
                count = int(matrix[i, j])
                axes.text(j, i, count, ha="center", va="center", color="white" if count > high else "black")
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)  # as tall as the matrix
    figure.tight_layout()
    return figure


def reliability_figure(curves: dict[str, tuple[list[dict], float]], what: str):
    """A reliability diagram: per confidence bin, the accuracy against the mean confidence, one line per curve.

    Args:
        curves: Name (`raw`, `calibrated`) -> its bins (modules/decisions/calibration.py `reliability`) and its ECE.
        what: What the confidence is of, for the axis label (the top label's probability, or every label's).
    """
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5.5, 5.5))
    axes = figure.subplots()
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
    for (name, (points, ece)), marker in zip(curves.items(), "os^"):
        rows = sum(p["rows"] for p in points) or 1
        axes.plot([p["confidence"] for p in points], [p["accuracy"] for p in points], marker=marker,
                  label=f"{name} (ECE {ece:.4f})")  # fmt: skip
        # The share of rows in each bin as the marker's area would hide the line: a faint bar per bin instead.
        axes.bar([p["confidence"] for p in points], [p["rows"] / rows for p in points], width=0.03, alpha=0.2)
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.set_xlabel(f"confidence ({what})")
    axes.set_ylabel("accuracy (bars: share of rows)")
    axes.set_title("Test reliability diagram")
    axes.legend(loc="upper left")
    figure.tight_layout()
    return figure
