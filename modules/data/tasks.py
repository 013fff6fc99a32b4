"""The three tasks and the `problem_type` names transformers writes into config.json for them.

A table with no imports, so the server (which reads an export's `problem_type`) needs none of the training stack.
"""

from typing import Literal

Task = Literal["single_label", "multi_label", "regression"]
PROBLEM_TYPES: dict[str, str] = {
    "single_label": "single_label_classification",
    "multi_label": "multi_label_classification",
    "regression": "regression",
}
TASKS = {problem_type: task for task, problem_type in PROBLEM_TYPES.items()}
