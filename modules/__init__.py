"""hf-lightning's code, one package per role; `main.py` is the door that dispatches every command to them.

- `cli/`: the command table, the LightningCLI app (fit, validate, test, predict, check), the parsers and their
  one-line errors, and the answers given before Lightning is imported.
- `data/`: where rows come from and how they become batches (sources, labels, tokenization, collation, sampling),
  and the `DataContract` the data hands the model.
- `model/`: the LightningModule, its Hugging Face model, metrics, optimizer, LoRA and layer selection.
- `runs/`: runs and their reliability: checkpoint files and paths, what a checkpoint records, interrupts, RNG state,
  and `HFTrainer`. (`run/` is its old name, kept as an alias for saved configs.)
- `console/`: progress lines and library noise filtered at its source.
- `check/`: the `check` command: data, memory and time before a long run; the machine's precisions.
- `tune/`: the `tune` command: an Optuna study whose trials are fits.
- `outputs/`: what a run leaves behind: the Hugging Face export, ONNX, model card, predictions, the test report,
  the saved config and metrics.
- `serve/`: the `serve` command: a LitServe server that loads no training stack.
- `speedups/`: optional patches of Hugging Face model internals that make CPU training faster without changing
  results, each with its undo, behind one entry point.
- `compat.py`: every private Lightning / transformers / torch member the code touches, with its reason.
- `errors.py`: the one exception type for bad input.
"""
