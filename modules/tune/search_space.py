"""The search space of a hyperparameter study: a YAML mapping of dotted CLI keys to distributions, checked before any
trial runs, and sampled into `--key value` overrides of `fit`.

    model.learning_rate: {type: float, low: 1.0e-5, high: 1.0e-4, log: true}
    model.warmup_ratio: {type: float, low: 0.0, high: 0.2}
    trainer.max_epochs: {type: int, low: 1, high: 4}
    data.batch_size: {type: categorical, choices: [16, 32]}
"""

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from modules.errors import HFLightningError

_FIELDS = {
    "float": ({"type", "low", "high"}, {"log", "step"}),
    "int": ({"type", "low", "high"}, {"log", "step"}),
    "categorical": ({"type", "choices"}, set()),
}


@dataclass(frozen=True)
class Parameter:
    """One searched CLI key and its distribution."""

    key: str
    type: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: Any) -> Any:
        """The value an Optuna trial samples for this key."""
        if self.type == "categorical":
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.type == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.log)

    def contains(self, value: Any) -> bool:
        """Whether `value` lies in this distribution (a config's own value can then be a trial of its own)."""
        if self.type == "categorical":
            return value in self.choices
        numbers = (int,) if self.type == "int" else (int, float)
        return isinstance(value, numbers) and not isinstance(value, bool) and self.low <= value <= self.high

    def examples(self) -> list[Any]:
        """Values that span the range (its ends, or every choice): each must parse as this key's type."""
        return list(self.choices) if self.type == "categorical" else [self.low, self.high]


def load_search_space(path: str | Path) -> list[Parameter]:
    """Read and check a search-space YAML; any problem is one error naming the key and the fix."""
    path = Path(path)
    if not path.is_file():
        raise HFLightningError(f"--search {path}: no such file.")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise HFLightningError(f"--search {path} is not valid YAML: {str(error).splitlines()[0]}") from None
    if not isinstance(raw, dict) or not raw:
        raise HFLightningError(f"--search {path} must map dotted keys to distributions, e.g. {_EXAMPLE}.")
    return [_parameter(str(key), spec, path) for key, spec in raw.items()]


_EXAMPLE = "`model.learning_rate: {type: float, low: 1.0e-5, high: 1.0e-4, log: true}`"


def _parameter(key: str, spec: object, path: Path) -> Parameter:
    where = f"--search {path}: {key}"
    if key.split(".")[0] not in {"model", "data", "trainer", "export", "seed_everything"} or key.startswith("-"):
        raise HFLightningError(f"{where}: not a CLI key; use a dotted key such as model.learning_rate.")
    if not isinstance(spec, dict) or spec.get("type") not in _FIELDS:
        raise HFLightningError(f"{where}: needs `type` float, int or categorical, e.g. {_EXAMPLE}.")
    required, optional = _FIELDS[spec["type"]]
    missing, unknown = required - set(spec), set(spec) - required - optional
    if missing or unknown:
        problem = f"missing {sorted(missing)}" if missing else f"unknown fields {sorted(unknown)}"
        raise HFLightningError(f"{where}: {problem} for type {spec['type']} (fields: {sorted(required | optional)}).")
    if spec["type"] == "categorical":
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            raise HFLightningError(f"{where}: `choices` must be a non-empty list.")
        return Parameter(key, "categorical", choices=tuple(choices))
    low, high = spec["low"], spec["high"]
    numbers = (int,) if spec["type"] == "int" else (int, float)
    if not all(isinstance(v, numbers) and not isinstance(v, bool) for v in (low, high)):
        raise HFLightningError(f"{where}: `low` and `high` must be {spec['type']}s, got {low!r} and {high!r}.")
    if not (math.isfinite(low) and math.isfinite(high)) or low > high:
        raise HFLightningError(f"{where}: needs low <= high, got low {low} and high {high}.")
    log = bool(spec.get("log", False))
    if log and low <= 0:
        raise HFLightningError(f"{where}: `log: true` needs low > 0, got {low}.")
    step = spec.get("step")
    if step is not None and (log or not isinstance(step, numbers) or step <= 0):
        raise HFLightningError(f"{where}: `step` must be a positive number and cannot go with `log: true`.")
    cast = int if spec["type"] == "int" else float  # `--trainer.max_epochs 1.0` would not parse as an int
    return Parameter(key, spec["type"], cast(low), cast(high), log, step)


def as_flags(values: dict[str, Any]) -> list[str]:
    """`--key value` pairs for the CLI, values as YAML so that lists, None and booleans parse as typed."""
    flags = []
    for key, value in values.items():
        flags += [f"--{key}", yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("\n...")]
    return flags
