"""hf-lightning's code, one package per role; `main.py` wires them into LightningCLI.

- `data/`: where rows come from and how they become batches (sources, labels, tokenization, collation, sampling).
- `model/`: the LightningModule, its Hugging Face model, metrics, optimizer and LoRA.
- `run/`: run control: checkpoint files and paths, interrupts, progress output, RNG state.
- `outputs/`: what a run leaves behind: the Hugging Face export and model card, predictions, the test report,
  the saved config and metrics.
- `speedups/`: optional patches of Hugging Face model internals that make CPU training faster without changing
  results, each with its undo, behind one entry point.
- `compat.py`: every private Lightning / transformers / torch member the code touches, with its reason.
- `errors.py`: the one exception type for bad input.
- `fast_path.py`: the top-level `--help` and unknown-key errors, answered before Lightning is imported.
"""
