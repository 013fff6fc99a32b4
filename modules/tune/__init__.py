"""The `tune` command: an Optuna study over the CLI, each trial a normal `fit` (`command`), the search space read
from YAML (`search_space`), and the study's report and best config (`report`).
"""
