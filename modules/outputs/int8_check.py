"""Is int8 exact enough? `model.int8.onnx` against `model.onnx` on a labelled split: each one's metric and how often
their decisions agree, recorded in the export's config.json, where `serve --backend auto` reads it.

Written at the end of `fit` with `--export.quantize true` (on the validation split), so the choice between the
fast and the exact file is made once, from this model on this data, not by guess.
"""

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

CHECK_KEY = "hf_lightning_int8_check"
# Largest loss of the metric (accuracy, micro-F1 for multi-label) that still counts as exact enough: half a point.
TOLERANCE = 0.005


def int8_check(model_dir: str | Path, texts: Sequence[str], pairs: Sequence[str] | None, labels, split: str) -> dict:
    """Score the rows with both ONNX files of `model_dir` and compare: `metric` (accuracy, or micro-F1 at the
    export's thresholds for multi-label), `fp32` and `int8` values, `agreement` (share of rows decided alike) and
    `exact_enough` (int8 within `TOLERANCE` of fp32). Writes it into config.json and returns it."""
    from transformers import AutoConfig, AutoTokenizer

    from modules.data.collate import logits_by_length
    from modules.data.tasks import task_of
    from modules.decisions.record import DecisionRule
    from modules.decisions.thresholds import f1_scores, predicted
    from modules.model.loss import task_outputs
    from modules.outputs.onnx import OnnxLogits

    model_dir = Path(model_dir)
    config = AutoConfig.from_pretrained(model_dir)
    task = task_of(config.problem_type, config.num_labels)
    names = [config.id2label[i] for i in range(config.num_labels)]
    rule = DecisionRule.from_config(config)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    gold = torch.as_tensor(np.asarray(labels))
    decisions = {}
    for name, quantized in (("fp32", False), ("int8", True)):
        session = OnnxLogits(model_dir, quantized=quantized)
        logits = logits_by_length(tokenizer, texts, pairs, session, config.num_labels, 32)
        decisions[name] = predicted(task, task_outputs(task, torch.from_numpy(logits)), rule, names)
    if task == "multi_label":
        metric = "micro_f1"
        values = {name: f1_scores(d, gold)[1] for name, d in decisions.items()}
        agreement = float((decisions["fp32"] == decisions["int8"]).all(-1).float().mean())
    else:
        metric = "accuracy"
        values = {name: float((d == gold).float().mean()) for name, d in decisions.items()}
        agreement = float((decisions["fp32"] == decisions["int8"]).float().mean())
    check = {
        "split": split,
        "rows": len(gold),
        "metric": metric,
        "fp32": round(values["fp32"], 6),
        "int8": round(values["int8"], 6),
        "agreement": round(agreement, 6),
        "exact_enough": values["fp32"] - values["int8"] <= TOLERANCE,
    }
    config_file = model_dir / "config.json"
    written = json.loads(config_file.read_text())
    written[CHECK_KEY] = check
    config_file.write_text(json.dumps(written, indent=2, sort_keys=True) + "\n")
    return check


def describe(check: dict) -> str:
    """One line for the log."""
    points = 100 * (check["int8"] - check["fp32"])
    verdict = "exact enough" if check["exact_enough"] else f"more than {100 * TOLERANCE:.1f} below: not exact enough"
    return (
        f"int8 on {check['split']} ({check['rows']:,} rows): {check['metric']} {check['int8']:.4f} against fp32's "
        f"{check['fp32']:.4f} ({points:+.2f} points, {verdict}), decisions agree on "
        f"{100 * check['agreement']:.1f}% of rows"
    )


def read_check(model_dir: str | Path) -> dict | None:
    """The check recorded in an export's config.json; None when it has none."""
    config_file = Path(model_dir) / "config.json"
    if not config_file.is_file():
        return None
    return json.loads(config_file.read_text()).get(CHECK_KEY)
