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


def task_of(problem_type: str | None, num_labels: int) -> str:
    """The task of a Hugging Face config: its `problem_type`, else transformers' own rule (one output: regression,
    more: single-label)."""
    if problem_type:
        return TASKS[problem_type]
    return "regression" if num_labels == 1 else "single_label"
