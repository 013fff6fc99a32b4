"""The model card (README.md) of a Hugging Face export: the Hub's metadata (base model, data, task, metrics in the
model-index schema), how well each label did and where its threshold sits, the calibration, how to load it, and the
config that made it. Every source is read defensively: a run without a test has validation metrics only."""

import csv
import json
import re
from pathlib import Path

import yaml
from huggingface_hub import EvalResult, ModelCardData
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

# A logged metric, without its `val_`/`test_` prefix -> model-index metric type (the Hub's metric id), name, args.
_METRICS: dict[str, tuple[str, str, dict | None]] = {
    "acc": ("accuracy", "Accuracy", None),
    "f1": ("f1", "F1 (macro)", {"average": "macro"}),
    "f1_micro": ("f1", "F1 (micro)", {"average": "micro"}),
    "f1_macro": ("f1", "F1 (macro)", {"average": "macro"}),
    "f1_macro_untuned": ("f1", "F1 (macro, every label at the default threshold)", {"average": "macro"}),
    "mse": ("mse", "MSE", None),
    "pearson": ("pearsonr", "Pearson r", None),
    "spearman": ("spearmanr", "Spearman rho", None),
    "ece": ("ece", "Expected calibration error", None),
    "ece_uncalibrated": ("ece", "Expected calibration error (raw scores)", None),
    "loss": ("loss", "Loss", None),
}
_TASK_TAGS = {
    "single_label_classification": "single-label",
    "multi_label_classification": "multi-label",
    "regression": "regression",
}


def write_model_card(output_dir: Path, run_dir: Path) -> None:
    """README.md for the export: metadata, base model, data, metrics per split and per label, thresholds,
    calibration, training time and hardware, how to load it, and the run's config."""
    summary = _read_json(run_dir / "fit_summary.json")
    test = _read_json(run_dir / "test_metrics.json").get("metrics") or {}
    config_path = run_dir / "config.yaml"
    config = config_path.read_text() if config_path.is_file() else "(not saved)"
    hf_config = json.loads((output_dir / "config.json").read_text())
    names = [str(name) for _, name in sorted((hf_config.get("id2label") or {}).items(), key=lambda kv: int(kv[0]))]
    base = summary.get("base_model") or hf_config.get("_name_or_path") or "model"
    lines = [
        "---",
        card_metadata(summary, hf_config, test, _data_config(config)).to_yaml().strip(),
        "---",
        f"# Fine-tuned {base}",
        "",
        f"- Base model: {_base_model(base)}",
        f"- Data: {_data(summary)}",
        f"- Task: {hf_config.get('problem_type')}, labels: {names}",
        f"- Best checkpoint: `{summary.get('best_checkpoint')}`",
        f"- Selected by: {summary.get('monitor')} = {summary.get('best_score')}",
        f"- Training time: {summary.get('train_seconds', 0):.0f} s on {summary.get('hardware')}",
        "",
        "## Metrics",
        "",
        "| split | metric | value |",
        "|---|---|---|",
    ]
    per_label = {f"test_{kind}_{_safe(name)}" for name in names for kind in ("precision", "recall")}
    for split, metrics in (("validation (last epoch)", summary.get("val_metrics", {})), ("test", test)):
        lines += [f"| {split} | {k} | {v:.4f} |" for k, v in metrics.items() if k not in per_label]
    if not test:
        lines.append("| test | - | run `python main.py test --config ... --ckpt_path best` to add it |")
    if hf_config.get("problem_type") != "regression" and names:
        lines += ["", *_label_section(run_dir, hf_config, names, test)]
    calibration = hf_config.get("hf_lightning_calibration")
    if calibration:
        lines += ["", *_calibration_section(calibration, names, test)]
    lines += ["", "## How to load", "", *_usage(output_dir, hf_config, summary.get("example_text")), ""]
    lines += ["## Training config (hf-lightning)", "", "```yaml", config.strip(), "```", ""]
    (output_dir / "README.md").write_text("\n".join(lines))


def card_metadata(summary: dict, hf_config: dict, test: dict, data_config: str | None = None) -> ModelCardData:
    """The front matter the Hub reads: `base_model` and `datasets` only where they name Hub repositories (a local
    path is no Hub id, and the Hub refuses one), and `model-index` with the test metrics, else the validation ones."""
    base = summary.get("base_model")
    dataset = summary.get("dataset")
    hub_dataset = _hub_id(dataset) if summary.get("data_files") is None else None
    split, metrics = ("test", test) if test else ("validation", summary.get("val_metrics") or {})
    prefix = "test_" if test else "val_"
    data_name = hub_dataset or _local_name(summary)
    results = [
        EvalResult(
            task_type="text-classification",
            task_name="Text Classification",
            dataset_type=hub_dataset or data_name,
            dataset_name=data_name,
            dataset_config=data_config if hub_dataset else None,
            dataset_split=split,
            metric_type=_METRICS[key][0],
            metric_name=_METRICS[key][1],
            metric_args=_METRICS[key][2],
            metric_value=round(float(value), 6),
        )
        for name, value in metrics.items()
        if (key := name.removeprefix(prefix)) in _METRICS and name.startswith(prefix)
    ]
    problem_type = hf_config.get("problem_type")
    return ModelCardData(
        base_model=_hub_id(base),
        datasets=[hub_dataset] if hub_dataset else None,
        library_name="transformers",
        pipeline_tag="text-classification",
        tags=[
            "hf-lightning",
            "text-classification",
            *([_TASK_TAGS[problem_type]] if problem_type in _TASK_TAGS else []),
        ],
        model_name=f"{Path(str(base or 'model')).name}-finetuned-{Path(data_name).name}" if results else None,
        eval_results=results or None,
    )


def _hub_id(name: object) -> str | None:
    """`name` when it reads as a Hub repository id and is no folder here; None for a local path."""
    if not isinstance(name, str) or not name or Path(name).expanduser().exists():
        return None
    try:
        validate_repo_id(name)
    except HFValidationError:
        return None
    return name


def _base_model(base: str) -> str:
    if _hub_id(base):
        return f"[`{base}`](https://huggingface.co/{base})"
    return f"`{base}` (a local folder: the metadata names no `base_model`)"


def _local_name(summary: dict) -> str:
    """A name for data that is not a Hub dataset: its folder, else its first file's name."""
    dataset, data_files = summary.get("dataset"), summary.get("data_files")
    if dataset:
        return Path(str(dataset)).name
    first = next(iter(data_files.values()), None) if isinstance(data_files, dict) else data_files
    first = first[0] if isinstance(first, list) and first else first
    return Path(str(first)).stem if first else "local files"


def _data_config(config_text: str) -> str | None:
    """`--data.dataset_config` from the run's saved config, for the model-index."""
    try:
        config = yaml.safe_load(config_text)
    except yaml.YAMLError:
        return None
    data = config.get("data") if isinstance(config, dict) else None
    value = data.get("dataset_config") if isinstance(data, dict) else None
    return str(value) if value else None


def _label_section(run_dir: Path, hf_config: dict, names: list[str], test: dict) -> list[str]:
    """Per label: test precision/recall/F1/support (`test_per_class.csv`, else `test_metrics.json`) and the rule that
    predicts it."""
    rows = _per_class(run_dir / "test_per_class.csv")
    thresholds = _thresholds(hf_config, names)
    lines = ["## Labels", "", "| label | precision | recall | f1 | support | threshold |", "|---|---|---|---|---|---|"]
    for name in names:
        row = rows.get(name) or _from_metrics(test, name)
        cells = [_number(row.get(column)) for column in ("precision", "recall", "f1")]
        support = row.get("support")
        lines.append(
            f"| {name} | {' | '.join(cells)} | {support if support not in (None, '') else '-'} | {thresholds[name]} |"
        )
    lines.append("")
    if not rows and not test:
        lines.append("Scores per label come with `python main.py test --config ... --ckpt_path best`.")
    if hf_config.get("problem_type") == "multi_label_classification":
        lines.append(
            "A label is predicted when its (calibrated) probability is above its threshold "
            "(`hf_lightning_thresholds` in config.json, else `hf_lightning_threshold`)."
        )
    elif hf_config.get("hf_lightning_decision"):
        lines.append(
            "`hf_lightning_decision` in config.json: its label is predicted when its probability is above "
            "the threshold, else the most probable other label."
        )
    else:
        lines.append("The most probable label is predicted.")
    return lines


def _thresholds(hf_config: dict, names: list[str]) -> dict[str, str]:
    """What each label's threshold cell says, from the export's `hf_lightning_*` keys (what `serve` applies)."""
    if hf_config.get("problem_type") == "multi_label_classification":
        per_label = hf_config.get("hf_lightning_thresholds") or {}
        default = hf_config.get("hf_lightning_threshold", 0.5)
        return {name: f"{float(per_label.get(name, default)):.4f}" for name in names}
    decision = hf_config.get("hf_lightning_decision") or {}
    if decision.get("label") in names:
        chosen = f"{float(decision['threshold']):.4f}"
        return {name: chosen if name == decision["label"] else "most probable of the others" for name in names}
    return dict.fromkeys(names, "most probable")


def _per_class(path: Path) -> dict[str, dict]:
    """`test_per_class.csv` rows by label; an unreadable file gives none (the card is written anyway)."""
    if not path.is_file():
        return {}
    try:
        with path.open(newline="") as f:
            return {str(row["label"]): row for row in csv.DictReader(f) if row.get("label")}
    except (OSError, csv.Error, KeyError, UnicodeDecodeError):
        return {}


def _from_metrics(test: dict, name: str) -> dict:
    """A label's test precision and recall as `test` logs them (single-label), and the F1 they give."""
    precision, recall = (test.get(f"test_{kind}_{_safe(name)}") for kind in ("precision", "recall"))
    if precision is None or recall is None:
        return {}
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def _safe(name: str) -> str:
    """A label as it appears in a logged metric's name (modules/model/evaluation.py)."""
    return re.sub(r"[^0-9A-Za-z]+", "_", name)


def _number(value: object) -> str:
    try:
        return f"{float(value):.4f}"
    except (TypeError, ValueError):
        return "-"


def _calibration_section(calibration: dict, names: list[str], test: dict) -> list[str]:
    """How the scores were calibrated, how much it helped, and that the export already applies it."""
    method, scale, bias = calibration.get("method"), calibration.get("scale") or [], calibration.get("bias") or []
    lines = ["## Calibration", ""]
    if method == "temperature" and scale:
        lines.append(f"Temperature scaling: softmax(logits / T) with T = {1 / float(scale[0]):.4f}.")
    elif method == "platt":
        lines += ["Platt scaling per label: sigmoid(a * logit + b).", "", "| label | a | b |", "|---|---|---|"]
        lines += [f"| {n} | {float(a):.4f} | {float(b):.4f} |" for n, a, b in zip(names, scale, bias)]
        lines.append("")
    else:
        lines.append(f"Method: {method}.")
    lines.append(
        f"Fitted on {calibration.get('rows', 0):,} validation rows by negative log-likelihood: validation ECE "
        f"{_number(calibration.get('ece_before'))} -> {_number(calibration.get('ece_after'))}, NLL "
        f"{_number(calibration.get('nll_before'))} -> {_number(calibration.get('nll_after'))}."
    )
    if "test_ece" in test and "test_ece_uncalibrated" in test:
        lines.append(f"Test ECE {_number(test['test_ece_uncalibrated'])} -> {_number(test['test_ece'])}.")
    if calibration.get("folded_into_weights"):
        lines += [
            "",
            "The calibration is folded into the classification head's weights: `pipeline()` and "
            "`AutoModelForSequenceClassification` give calibrated probabilities as they are; do not apply it "
            "again.",
        ]
    return lines


def _usage(output_dir: Path, hf_config: dict, example_text: str | None) -> list[str]:
    """The `pipeline(...)` snippet, deciding as `predict` and `serve` do. Multi-label: every label's score
    (`top_k=None`; the pipeline's default keeps the top label only) and the labels above their threshold.
    Single-label with a decision threshold: its label above it, else the most probable other."""
    text = repr(example_text or "a gripping, beautifully acted film")
    lines = ["```python", "from transformers import pipeline"]
    decision = hf_config.get("hf_lightning_decision")
    problem_type = hf_config.get("problem_type")
    if problem_type != "multi_label_classification" and not (decision and problem_type != "regression"):
        lines += [f'classifier = pipeline("text-classification", model="{output_dir}")', f"classifier({text})", "```"]
        return lines
    lines.append(f'classifier = pipeline("text-classification", model="{output_dir}", top_k=None)')
    if problem_type != "multi_label_classification":
        label, threshold = decision["label"], decision["threshold"]
        return lines + [
            f"scores = {{s['label']: s['score'] for s in classifier([{text}])[0]}}  # calibrated probabilities",
            f"others = max((name for name in scores if name != {label!r}), key=scores.get)",
            f"label = {label!r} if scores[{label!r}] > {threshold} else others  # hf_lightning_decision",
            "```",
        ]
    lines.append(f"scores = classifier([{text}])[0]  # every label's sigmoid probability, for the first text")
    if hf_config.get("hf_lightning_thresholds"):
        return lines + [
            "thresholds = classifier.model.config.hf_lightning_thresholds  # each label's tuned threshold",
            'labels = [s["label"] for s in scores if s["score"] > thresholds[s["label"]]]',
            "```",
        ]
    threshold = hf_config.get("hf_lightning_threshold", 0.5)
    return lines + [
        f'labels = [s["label"] for s in scores if s["score"] > {threshold}]  # the run\'s --model.threshold',
        "```",
    ]


def _data(summary: dict) -> str:
    """The dataset and, for local files, which files: `csv` alone does not say what the model learned from."""
    dataset, data_files = summary.get("dataset"), summary.get("data_files")
    if data_files is None:
        hub = _hub_id(dataset)
        return f"[`{hub}`](https://huggingface.co/datasets/{hub})" if hub else f"`{dataset}`"
    files = data_files if isinstance(data_files, dict) else {"train": data_files}
    listed = ", ".join(f"{split}: `{path}`" for split, path in files.items())
    return f"`{dataset}` files ({listed})" if dataset else f"files ({listed})"


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}
