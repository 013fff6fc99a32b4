"""The LitServe API: an exported classifier, dynamic batches sorted by length, answers in input order.

Light on purpose: neither this module nor what a worker's `setup` imports loads Lightning, datasets or torchmetrics
(tests/serve/test_light.py); only serving a `.ckpt` imports the training stack, to export it first.
"""

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import litserve as ls
import numpy as np
import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer
from transformers.utils import logging as hf_logging

from modules.data.contract import clamp_max_length
from modules.data.long_text import aggregate_windows, encode_windows, window_stride
from modules.data.tasks import TASKS
from modules.decisions.record import DecisionRule
from modules.errors import HFLightningError
from modules.model.loss import task_outputs
from modules.outputs.answers import Prediction
from modules.serve.limits import Options, is_pair, request_options
from modules.speedups import apply_exact, apply_for_inference, without_full_mask


def model_folder(path: str | Path, backend: str = "torch") -> Path:
    """An `hf_model/` export as is; a Lightning checkpoint exported to a temporary folder first (with its ONNX
    files when `backend` is onnx or onnx-int8). Fails here, before any worker starts, on what cannot be served."""
    path = Path(path).expanduser()
    if not path.exists():
        raise HFLightningError(f"{path} does not exist: serve a run's `hf_model/` folder or one of its checkpoints")
    quantized = backend == "onnx-int8"
    if backend != "torch":
        from modules.outputs.onnx import INT8_FILE, ONNX_FILE, export_onnx, how_to_export, require_onnxruntime

        require_onnxruntime()
    if path.is_file() and path.suffix == ".ckpt":
        from modules.outputs.export import export_checkpoint

        folder = export_checkpoint(path, tempfile.mkdtemp(prefix="hf-lightning-serve-"))
        if backend != "torch":
            export_onnx(folder, quantize=quantized)
        return folder
    if not (path / "config.json").is_file():
        raise HFLightningError(
            f"{path}: not a model export (no config.json) or a .ckpt file. Serve the `hf_model/` folder of a run "
            "(logs/<name>/version_N/hf_model) or one of its checkpoints."
        )
    if backend != "torch" and not (path / (INT8_FILE if quantized else ONNX_FILE)).is_file():
        raise HFLightningError(
            f"{path} has no {INT8_FILE if quantized else ONNX_FILE} for --backend {backend}: "
            f"{how_to_export(path, quantized)}."
        )
    return path


def describe(
    folder: Path,
    max_length: int | None,
    long_text: str | None = None,
    stride: int | None = None,
    threshold: float | None = None,
) -> dict:
    """What `/info` says: the model, its task, label names (in id order), the longest input in tokens (by default the
    run's `--data.max_length`, which the export's tokenizer keeps), how longer inputs are read (by default as the
    run read them: `--data.long_text` and `--data.stride`, kept in the export's config) and how scores become labels,
    as `predict` decides (the export's config, `DecisionRule.from_config`): multi-label, `threshold` (the run's
    `--model.threshold`, else 0.5) and, when the run tuned them, `thresholds` ({label: threshold}); a binary
    single-label model tuned for a target precision or recall, `decision` ({label, threshold}). `threshold` (serve's
    `--threshold`) replaces every multi-label threshold."""
    config = AutoConfig.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    longest = clamp_max_length(max_length or tokenizer.model_max_length, config)  # the data's and the export's rule
    task = TASKS.get(config.problem_type or "single_label_classification", "single_label")
    labels = [config.id2label[i] for i in range(config.num_labels)]
    if threshold is not None and task != "multi_label":
        raise HFLightningError(f"--threshold applies to a multi-label model; this one is {task}: drop --threshold")
    info = {"model": str(folder), "task": task, "labels": labels, "max_length": longest}
    rule = DecisionRule.from_config(config, threshold)
    if task == "multi_label":
        default = threshold if threshold is not None else getattr(config, "hf_lightning_threshold", None)
        info["threshold"] = 0.5 if default is None else float(default)
        if isinstance(rule.threshold, Sequence):
            info["thresholds"] = dict(zip(labels, rule.threshold))
    elif rule.decision is not None:
        info["decision"] = rule.describe()
    info["long_text"] = long_text or getattr(config, "hf_lightning_long_text", None) or "truncate"
    if info["long_text"] == "chunk":
        info["stride"] = window_stride(
            stride if stride is not None else getattr(config, "hf_lightning_stride", None), longest
        )
    return info


def served_rule(info: dict) -> DecisionRule:
    """The rule `describe` wrote into `info`: what every answer applies unless its request sets a threshold."""
    if "decision" in info:
        return DecisionRule(decision=(info["decision"]["label"], float(info["decision"]["threshold"])))
    if "thresholds" in info:
        return DecisionRule(threshold=tuple(float(info["thresholds"][name]) for name in info["labels"]))
    return DecisionRule(threshold=float(info.get("threshold", 0.5)))


def request_rule(rule: DecisionRule, threshold: float | dict[str, float] | None, labels: list[str]) -> DecisionRule:
    """A request's own multi-label `threshold` (checked by `limits`): a number replaces every label's threshold,
    `{label: number}` those labels' only."""
    if threshold is None:
        return rule
    if not isinstance(threshold, dict):
        return DecisionRule(threshold=float(threshold))
    current = rule.per_label(len(labels))
    return DecisionRule(threshold=tuple(float(threshold.get(name, cut)) for name, cut in zip(labels, current)))


# What one more forward pass costs, in padded tokens: its fixed costs (per-layer kernel launches, smaller matmuls).
# CPU: measured on MiniLM (benchmarks/README.md, "Serving under load"). GPUs pad almost for free and pay a launch
# per kernel, so a pass there is worth far more tokens (a guess, not measured: no GPU was at hand).
PASS_OVERHEAD_TOKENS = {"cpu": 128, "accelerator": 4096}


def plan_passes(lengths: list[int], most_rows: int, overhead: int) -> list[slice]:
    """Cut rows sorted longest first (their token `lengths`) into consecutive forward passes of at most `most_rows`
    rows, each padded to its first row, with the fewest padded tokens plus `overhead` tokens per pass."""
    best, cut = [0] + [float("inf")] * len(lengths), [0] * (len(lengths) + 1)
    for end in range(1, len(lengths) + 1):
        for start in range(max(0, end - most_rows), end):
            cost = best[start] + overhead + (end - start) * lengths[start]
            if cost < best[end]:
                best[end], cut[end] = cost, start
    passes, end = [], len(lengths)
    while end:
        passes.append(slice(cut[end], end))
        end = cut[end]
    return passes[::-1]


class ClassifierAPI(ls.LitAPI):
    """Requests are checked before they are queued (`limits`); here every request is valid, in the server's shape or
    Hugging Face's (`limits.request_options` reads either). Scores become labels by the rule `info` describes
    (`describe`: the run's tuned thresholds or binary decision), or by the request's own `threshold`."""

    def __init__(
        self,
        folder: Path,
        info: dict,
        rows_per_pass: int,
        threads: int,
        backend: str = "torch",
        dtype: str = "float32",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.folder, self.info = folder, info
        self.rows_per_pass, self.threads, self.backend, self.dtype = rows_per_pass, threads, backend, dtype
        self.rule = served_rule(info)

    def setup(self, device: str) -> None:
        if device == "cpu":
            torch.set_num_threads(self.threads)
        self.device = device
        # No "Loading weights" bar per worker in the server's log: its tqdm lock is also a named semaphore, which a
        # worker stopped by SIGTERM leaves for the resource tracker to warn about.
        hf_logging.disable_progress_bar()
        self.tokenizer = AutoTokenizer.from_pretrained(self.folder)
        if self.backend == "torch":
            model = AutoModelForSequenceClassification.from_pretrained(self.folder)
            self.model = model.to(device, getattr(torch, self.dtype)).eval()
            # What `predict` runs: the last layer on the first token only, fused projections on CPUs (modules/speedups).
            apply_exact(self.model, compiled=False)
            apply_for_inference(self.model, torch.device(device).type, compiled=False)
        else:
            from modules.outputs.onnx import OnnxLogits

            self.model = OnnxLogits(self.folder, quantized=self.backend == "onnx-int8", threads=self.threads)

    def decode_request(self, request):  # noqa: ANN001, ANN201 (no annotation: LitServe passes the parsed JSON)
        return request_options(request)

    def batch(self, requests: list) -> list:
        return requests

    def unbatch(self, outputs: list) -> list:
        return outputs

    @torch.inference_mode()
    def predict(self, requests: Any) -> list:
        batched = self.max_batch_size > 1
        requests: list[Options] = requests if batched else [requests]
        items = [(r, i, item) for r, request in enumerate(requests) for i, item in enumerate(request.inputs)]
        values: dict[tuple[int, int], list[float] | float] = {}
        for pairs in (False, True):
            group = [(r, i, item) for r, i, item in items if is_pair(item) == pairs]
            if not group:
                continue
            logits = self._logits_of([item for _, _, item in group], pairs)
            for function in {requests[r].function_to_apply for r, _, _ in group}:
                outputs = self._outputs(logits, function).cpu().tolist()
                values.update(
                    {(r, i): v for (r, i, _), v in zip(group, outputs) if requests[r].function_to_apply == function}
                )
        answers = [self._answer(request, [values[(r, i)] for i in range(len(request.inputs))])
                   for r, request in enumerate(requests)]  # fmt: skip
        return answers if batched else answers[0]

    def _logits_of(self, items: list, pairs: bool) -> torch.Tensor:
        """One row of logits per item of `items` (texts, or pairs when `pairs`), in their order."""
        first = [item[0] for item in items] if pairs else items
        second = [item[1] for item in items] if pairs else None
        max_length = self.info["max_length"]
        if self.info.get("long_text") != "chunk":
            encoded = self.tokenizer(first, second, truncation=True, max_length=max_length)
            logits = self._logits_in_passes(encoded)
        else:  # every window of every input; then one row of logits per input
            encoded = encode_windows(self.tokenizer, first, max_length, self.info["stride"], second)
            document = torch.tensor(encoded.pop("document"))
            logits = self._logits_in_passes(encoded)
            logits = aggregate_windows(logits, document, multi_label=self.info["task"] == "multi_label")
        return logits

    def _outputs(self, logits: torch.Tensor, function: str | None) -> torch.Tensor:
        """The task's outputs, as `predict` writes them; or Hugging Face's `function_to_apply` on the logits."""
        if function is None:
            return task_outputs(self.info["task"], logits)
        logits = logits.float()
        if function == "softmax":
            return torch.softmax(logits, dim=-1)
        return logits.sigmoid() if function == "sigmoid" else logits  # "none": the logits themselves

    def _logits_in_passes(self, encoded: dict) -> torch.Tensor:
        """Logits of unpadded token rows, in their order: the rows are sorted by length and cut into forward passes
        by `plan_passes`, each padded to its own longest row."""
        lengths = [len(ids) for ids in encoded["input_ids"]]
        order = sorted(range(len(lengths)), key=lambda row: -lengths[row])
        overhead = PASS_OVERHEAD_TOKENS["cpu" if self.device == "cpu" else "accelerator"]
        logits = None
        for part in plan_passes([lengths[row] for row in order], self.rows_per_pass, overhead):
            rows = order[part]
            values = self._logits(self.tokenizer.pad({k: [v[row] for row in rows] for k, v in encoded.items()}))
            if logits is None:
                logits = torch.empty((len(lengths), values.shape[-1]), device=values.device)  # fp32 from any precision
            logits[rows] = values.float()
        return logits

    def _logits(self, encoded: dict) -> torch.Tensor:
        """Logits of one padded batch of token ids (a tokenizer's lists)."""
        if self.backend != "torch":
            return torch.from_numpy(self.model({k: np.asarray(v) for k, v in encoded.items()}))
        inputs = {k: torch.tensor(v, device=self.device) for k, v in encoded.items()}
        return self.model(**without_full_mask(inputs)).logits  # as in `predict`

    def _answer(self, request: Options, values: list) -> dict | list:
        """One request's answer from its inputs' `values` (modules/outputs/answers.py, as `predict`'s rows): Hugging
        Face's list of `{"label", "score"}` lists, or the server's own `{"predictions": [...]}`."""
        rule = request_rule(self.rule, request.threshold, self.info["labels"])
        predictions = [
            Prediction(self.info["task"], self.info["labels"], v, rule.threshold, rule.decision) for v in values
        ]
        if request.hugging_face:
            return [p.hugging_face(request.top_k) for p in predictions]
        return {"predictions": [p.answer(request.top_k) for p in predictions]}

    def encode_response(self, output: dict | list) -> dict | list:
        return output
