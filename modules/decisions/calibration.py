"""Calibrating a classifier's scores on validation outputs, and folding the result into its last layer.

Single-label: temperature scaling (Guo et al. 2017), one T for softmax(logits / T), which keeps every argmax and so
accuracy. Multi-label: Platt scaling per label, sigmoid(a * logit + b). Both are fitted by negative log-likelihood and
are affine in the logits, so `fold_into_head` writes them into the classifier's last linear layer: any reader of the
Hugging Face export (`transformers.pipeline`, ONNX, another server) gets calibrated probabilities.
"""

import torch
from torch import nn

from modules.decisions.record import Calibration
from modules.errors import HFLightningError

BINS = 15  # ECE bins (equal width), as in Guo et al. and most reports
PRIOR = 1e-4  # weight of the Gaussian prior that keeps log-scale and bias near 0, in units of the score per row
MIN_ROWS = 5  # multi-label: positives (and negatives) a label needs in validation for its own Platt scaling


def apply(logits: torch.Tensor, calibration: Calibration | None) -> torch.Tensor:
    """Calibrated logits (the same tensor when `calibration` is None)."""
    if calibration is None:
        return logits
    scale = torch.tensor(calibration.scale, dtype=logits.dtype, device=logits.device)
    logits = logits * scale
    if calibration.bias:
        logits = logits + torch.tensor(calibration.bias, dtype=logits.dtype, device=logits.device)
    return logits


def expected_calibration_error(probabilities: torch.Tensor, labels: torch.Tensor, multi_label: bool) -> float:
    """ECE with `BINS` equal-width bins: the rows' weighted gap between confidence and accuracy.

    Single-label: the top label's probability against whether it is right. Multi-label: every (row, label)
    probability against whether the label is present (the calibration of each yes/no)."""
    if multi_label:
        confidence, correct = probabilities.flatten(), labels.flatten().float()
    else:
        confidence, predicted = probabilities.max(dim=-1)
        correct = (predicted == labels).float()
    if not len(confidence):
        return 0.0
    confidence, correct = confidence.double(), correct.double()
    bins = torch.clamp((confidence * BINS).long(), max=BINS - 1)
    gap = torch.zeros(BINS, dtype=torch.float64).index_add_(0, bins, confidence - correct)
    return float(gap.abs().sum() / len(confidence))


def reliability(probabilities: torch.Tensor, labels: torch.Tensor, multi_label: bool) -> list[dict]:
    """Per bin: mean confidence, accuracy and rows (the reliability diagram's points)."""
    if multi_label:
        confidence, correct = probabilities.flatten(), labels.flatten().float()
    else:
        confidence, predicted = probabilities.max(dim=-1)
        correct = (predicted == labels).float()
    bins = torch.clamp((confidence * BINS).long(), max=BINS - 1)
    points = []
    for b in range(BINS):
        mask = bins == b
        if mask.any():
            points.append(
                {"bin": b, "confidence": float(confidence[mask].mean()), "accuracy": float(correct[mask].mean()),
                 "rows": int(mask.sum())}
            )  # fmt: skip
    return points


def _nll(logits: torch.Tensor, labels: torch.Tensor, multi_label: bool) -> torch.Tensor:
    if multi_label:
        return nn.functional.binary_cross_entropy_with_logits(logits, labels.float(), reduction="mean")
    return nn.functional.cross_entropy(logits, labels.long())


def _brier(logits: torch.Tensor, labels: torch.Tensor, multi_label: bool) -> torch.Tensor:
    """Mean squared error of the probabilities against the 0/1 truth (summed over classes for softmax)."""
    if multi_label:
        return ((torch.sigmoid(logits) - labels.float()) ** 2).mean()
    truth = nn.functional.one_hot(labels.long(), logits.shape[-1]).to(logits.dtype)
    return ((torch.softmax(logits, dim=-1) - truth) ** 2).sum(-1).mean()


LOSSES = {"brier": _brier, "nll": _nll}


def fit(
    logits: torch.Tensor, labels: torch.Tensor, multi_label: bool, with_bias: bool = True, loss: str = "brier"
) -> Calibration:
    """Temperature (single-label) or per-label Platt (multi-label) parameters minimising a proper scoring rule on
    validation outputs: the Brier score (default) or the negative log-likelihood.

    Both are minimised by calibrated probabilities; they differ where one temperature cannot calibrate every row.
    NLL is dominated by the few confidently wrong rows (their log-loss is unbounded), the Brier score weighs every
    row's probability gap alike, which is what the expected calibration error (ECE) reads. On the MiniLM recipe the
    two gave the same test NLL and the Brier fit the lower test ECE (benchmarks/README.md).

    `with_bias` False fits a temperature per label only (a head without a bias, GPT-2's `score`, cannot take a
    Platt shift). The scale is fitted in log space (it stays positive: ranks are kept); L-BFGS on the few
    parameters takes milliseconds for thousands of rows."""
    # Called from validation hooks, which run under inference mode: fresh tensors and autograd back on.
    with torch.inference_mode(False), torch.enable_grad():
        logits, labels = logits.detach().double().cpu().clone(), labels.detach().cpu().clone()
        return _fit(logits, labels, multi_label, with_bias, LOSSES[loss], loss)


def _fit(logits: torch.Tensor, labels: torch.Tensor, multi_label: bool, with_bias: bool, objective, name: str
         ) -> Calibration:  # fmt: skip
    num_labels = logits.shape[-1]
    log_scale = torch.zeros(num_labels if multi_label else 1, dtype=torch.float64, requires_grad=True)
    shifted = multi_label and with_bias
    bias = torch.zeros(num_labels if shifted else 0, dtype=torch.float64, requires_grad=shifted)
    parameters = [log_scale, bias] if shifted else [log_scale]
    optimizer = torch.optim.LBFGS(parameters, lr=0.5, max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        scaled = logits * log_scale.exp() + (bias if shifted else 0)
        # A weak prior on the identity: on validation data a label separates perfectly, the score alone would push
        # its scale to infinity (probabilities of exactly 0 and 1 that the test split then punishes).
        prior = PRIOR * ((log_scale**2).sum() + (bias**2).sum())
        loss = objective(scaled, labels, multi_label) + prior
        loss.backward()
        return loss

    optimizer.step(closure)
    scale = [float(v) for v in log_scale.detach().exp()]
    shift = [float(v) for v in bias.detach()]
    if multi_label:  # a label seen (or missed) fewer than MIN_ROWS times in validation keeps its raw scores
        positives = labels.float().sum(0)
        for column in torch.nonzero((positives < MIN_ROWS) | (len(labels) - positives < MIN_ROWS)).flatten():
            scale[column] = 1.0
            if shift:
                shift[column] = 0.0
    scale = tuple(scale)
    calibration = Calibration(
        method="platt" if multi_label else "temperature",
        scale=scale,
        bias=tuple(shift),
        rows=len(logits),
        fitted_by=name,
    )
    after = apply(logits, calibration)
    if not objective(after, labels, multi_label) <= objective(logits, labels, multi_label):
        # a degenerate fit (e.g. one class only): keep the scores as they are
        calibration = Calibration(method=calibration.method, scale=(1.0,) * len(scale),
                                  bias=(0.0,) * len(calibration.bias), rows=len(logits), fitted_by=name)  # fmt: skip
        after = logits
    nll_before, nll_after = float(_nll(logits, labels, multi_label)), float(_nll(after, labels, multi_label))
    probabilities = _probabilities(logits, multi_label), _probabilities(after, multi_label)
    return Calibration(
        **{**calibration.__dict__, "nll_before": nll_before, "nll_after": nll_after,
           "ece_before": expected_calibration_error(probabilities[0], labels, multi_label),
           "ece_after": expected_calibration_error(probabilities[1], labels, multi_label)}
    )  # fmt: skip


def _probabilities(logits: torch.Tensor, multi_label: bool) -> torch.Tensor:
    return torch.sigmoid(logits) if multi_label else torch.softmax(logits, dim=-1)


def head_layer(model: nn.Module, num_labels: int) -> nn.Linear:
    """The classifier's last linear layer (the one whose outputs are the logits): the last `nn.Linear` with
    `num_labels` outputs in the modules outside the pretrained body (`classifier`, `score`, `classification_head`)."""
    prefix = getattr(model, "base_model_prefix", None)
    candidates = [
        module
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear)
        and module.out_features == num_labels
        and not (prefix and (name == prefix or name.startswith(f"{prefix}.")))
    ]
    if not candidates:
        raise HFLightningError(
            f"cannot fold calibration into {type(model).__name__}: no linear layer with {num_labels} outputs in its "
            "head. Train with --decisions.calibrate false."
        )
    return candidates[-1]


@torch.no_grad()
def fold_into_head(model: nn.Module, calibration: Calibration, num_labels: int) -> None:
    """Scale (and shift) the head's last layer so that the model itself outputs calibrated logits."""
    layer = head_layer(model, num_labels)
    scale = torch.tensor(calibration.scale, dtype=layer.weight.dtype, device=layer.weight.device)
    scale = scale.expand(num_labels) if scale.numel() == 1 else scale
    layer.weight.mul_(scale[:, None])
    if layer.bias is not None:
        layer.bias.mul_(scale)
    if calibration.bias:
        if layer.bias is None:
            raise HFLightningError(
                f"cannot fold Platt scaling into {type(model).__name__}: its last layer has no bias. Train with "
                "--decisions.calibrate false."
            )
        layer.bias.add_(torch.tensor(calibration.bias, dtype=layer.bias.dtype, device=layer.bias.device))
