"""The model card (README.md) of a Hugging Face export: what it was trained from and on, how well it did, how to
load it, and the config that made it."""

import json
from pathlib import Path


def write_model_card(output_dir: Path, run_dir: Path) -> None:
    """README.md for the export: base model, data, config, metrics, training time and hardware, how to load it."""
    summary = _read_json(run_dir / "fit_summary.json")
    test = _read_json(run_dir / "test_metrics.json")
    config_path = run_dir / "config.yaml"
    config = config_path.read_text() if config_path.is_file() else "(not saved)"
    hf_config = json.loads((output_dir / "config.json").read_text())
    lines = [
        "---",
        "library_name: transformers",
        "pipeline_tag: text-classification",
        "---",
        f"# Fine-tuned {summary.get('base_model', hf_config.get('_name_or_path', 'model'))}",
        "",
        f"- Base model: `{summary.get('base_model')}`",
        f"- Data: {_data(summary)}",
        f"- Task: {hf_config.get('problem_type')}, labels: {list(hf_config.get('id2label', {}).values())}",
        f"- Best checkpoint: `{summary.get('best_checkpoint')}`",
        f"- Selected by: {summary.get('monitor')} = {summary.get('best_score')}",
        f"- Training time: {summary.get('train_seconds', 0):.0f} s on {summary.get('hardware')}",
        "",
        "## Metrics",
        "",
        "| split | metric | value |",
        "|---|---|---|",
    ]
    for split, metrics in (
        ("validation (last epoch)", summary.get("val_metrics", {})),
        ("test", test.get("metrics", {})),
    ):
        lines += [f"| {split} | {k} | {v:.4f} |" for k, v in metrics.items()]
    if not test:
        lines.append("| test | - | run `python main.py test --config ... --ckpt_path best` to add it |")
    lines += ["", "## How to load", "", *_usage(output_dir, hf_config, summary.get("example_text")), ""]
    lines += [
        "## Training config (hf-lightning)",
        "",
        "```yaml",
        config.strip(),
        "```",
        "",
    ]
    (output_dir / "README.md").write_text("\n".join(lines))


def _usage(output_dir: Path, hf_config: dict, example_text: str | None) -> list[str]:
    """The `pipeline(...)` snippet. Multi-label: every label's score (`top_k=None`; the pipeline's default keeps the
    top label only) and the labels above the run's threshold, as `predict` and `serve` decide."""
    text = repr(example_text or "a gripping, beautifully acted film")
    lines = ["```python", "from transformers import pipeline"]
    if hf_config.get("problem_type") != "multi_label_classification":
        lines += [f'classifier = pipeline("text-classification", model="{output_dir}")', f"classifier({text})", "```"]
        return lines
    threshold = hf_config.get("hf_lightning_threshold", 0.5)
    return lines + [
        f'classifier = pipeline("text-classification", model="{output_dir}", top_k=None)',
        f"scores = classifier([{text}])[0]  # every label's sigmoid probability, for the first text",
        f'labels = [s["label"] for s in scores if s["score"] > {threshold}]  # the run\'s --model.threshold',
        "```",
    ]


def _data(summary: dict) -> str:
    """The dataset and, for local files, which files: `csv` alone does not say what the model learned from."""
    dataset, data_files = summary.get("dataset"), summary.get("data_files")
    if data_files is None:
        return f"`{dataset}`"
    files = data_files if isinstance(data_files, dict) else {"train": data_files}
    listed = ", ".join(f"{split}: `{path}`" for split, path in files.items())
    return f"`{dataset}` files ({listed})" if dataset else f"files ({listed})"


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}
