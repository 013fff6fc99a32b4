"""Every command of `main.py` (and the `hf-lightning` script) in one table: its one-line help and where it lives.

Read without importing any command, so `main.py --help` and an unknown command answer at once.
"""

DESCRIPTION = """Fine-tune a Hugging Face transformer for text classification, then test, predict, export and serve it.

examples:
  python main.py check --config configs/demo.yaml                    # data, memory and time, before a long run
  python main.py fit --config configs/demo.yaml                      # train (python main.py demo builds its data)
  python main.py test --config configs/demo.yaml --ckpt_path best    # the best checkpoint of that config's last fit
  python main.py predict --ckpt_path logs/demo/version_0/checkpoints/last.ckpt --data.predict_file new.csv
  python main.py serve logs/demo/version_0/hf_model                  # an HTTP server for the export
`python main.py COMMAND --help` lists every option of a command; --ckpt_path takes a file, `best` or `last`."""

# name -> (one line for the top-level --help, "module:function" that runs it with the command's arguments)
COMMANDS: dict[str, tuple[str, str]] = {
    "fit": (
        "Train, validating each epoch; checkpoints, logs and the Hugging Face export land in the run folder.",
        "modules.cli.app:main",
    ),
    "validate": (
        "One pass over the validation split (with --ckpt_path: that checkpoint's weights).",
        "modules.cli.app:main",
    ),
    "test": (
        "One pass over the test split (--ckpt_path best/last/a file): metrics and a per-class report.",
        "modules.cli.app:main",
    ),
    "predict": (
        "Predictions for a split or a file (--data.predict_file); --ckpt_path alone gives model and labels.",
        "modules.cli.app:main",
    ),
    "check": (
        "What `fit` with the same flags would cost (time, memory) and whether its data and model load.",
        "modules.cli.app:main",
    ),
    "tune": (
        "Search hyperparameters: an Optuna study whose trials are fits, shared across machines.",
        "modules.tune.command:main",
    ),
    "serve": (
        "Serve an export (or a checkpoint) over HTTP: batched, length-sorted, with request limits.",
        "modules.serve.command:main",
    ),
    "export": (
        "A checkpoint to a Hugging Face model folder (--onnx, --quantize: also ONNX), or ONNX for an hf_model/.",
        "modules.outputs.export:main",
    ),
    "demo": (
        "Write the offline demo: a tiny BERT and a generated review dataset.",
        "modules.data.demo:main",
    ),
}
# The commands LightningCLI runs: they share the config sections (trainer, model, data, ...).
LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict", "check")


def summary(name: str) -> str:
    """The command's one-line help."""
    return COMMANDS[name][0]
