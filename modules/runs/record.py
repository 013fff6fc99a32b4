"""What a checkpoint records about its run, in one schema: the keys `fit` writes (the model's hyperparameters and
`hf_config`, the datamodule's state) and `RunRecord`, the one typed reader every consumer uses (`predict` and `test`
with only `--ckpt_path`, the export, a module loaded on its own).

The keys on disk are those earlier versions wrote, so their checkpoints still load. Light: no lightning or torch.
"""

from dataclasses import dataclass, field
from typing import Any

HYPER_PARAMETERS_KEY = "hyper_parameters"  # Lightning's: the model's `save_hyperparameters`
HF_CONFIG_KEY = "hf_config"  # the Hugging Face model config, as `to_dict()` gives it
# Lightning stores a datamodule's `state_dict()` under its class name.
DATA_STATE_KEY = "HFDataModule"


def data_state(
    tokenizer_name_or_path: str | None,
    max_length: int | None,
    long_text: str | None,
    stride: int | None,
    task: str | None,
    label_names: list[str] | None,
    global_batch_size: int,
) -> dict:
    """The datamodule's checkpoint state (`HFDataModule.state_dict`): `max_length` as the run used it (clamped)."""
    return {
        "tokenizer_name_or_path": tokenizer_name_or_path,
        "max_length": max_length,
        "long_text": long_text,
        "stride": stride,
        "task": task,
        "label_names": label_names,
        "global_batch_size": global_batch_size,
    }


@dataclass(frozen=True)
class RunRecord:
    """A checkpoint's record of its run. Every field is None (or empty) where the checkpoint lacks it.

    Attributes:
        hyper_parameters: The model's hyperparameters, as saved (what rebuilds `TransformerModule`).
        hf_config: The Hugging Face model config, as a dict.
        tokenizer_name_or_path: The tokenizer the run's data was encoded with.
        max_length: The longest input the run used, in tokens (clamped; checkpoints of earlier versions may hold
            the length asked for: consumers clamp again with `clamp_max_length`).
        long_text: `truncate` or `chunk`.
        stride: `--data.stride` as set (None: a quarter of `max_length`).
        global_batch_size: Rows per optimizer step across processes (resume warns when it differs).
    """

    hyper_parameters: dict[str, Any] = field(default_factory=dict)
    hf_config: dict[str, Any] | None = None
    tokenizer_name_or_path: str | None = None
    max_length: int | None = None
    long_text: str | None = None
    stride: int | None = None
    global_batch_size: int | None = None

    @classmethod
    def from_checkpoint(cls, checkpoint: dict) -> "RunRecord":
        """Read a loaded checkpoint (`torch.load`'s dict)."""
        data = checkpoint.get(DATA_STATE_KEY) or {}
        return cls(
            hyper_parameters=dict(checkpoint.get(HYPER_PARAMETERS_KEY) or {}),
            hf_config=checkpoint.get(HF_CONFIG_KEY),
            tokenizer_name_or_path=data.get("tokenizer_name_or_path"),
            max_length=data.get("max_length"),
            long_text=data.get("long_text"),
            stride=data.get("stride"),
            global_batch_size=data.get("global_batch_size"),
        )

    @property
    def model_name_or_path(self) -> str | None:
        return self.hyper_parameters.get("model_name_or_path")

    @property
    def problem_type(self) -> str | None:
        return self.hyper_parameters.get("problem_type")

    @property
    def label_names(self) -> list[str] | None:
        return self.hyper_parameters.get("label_names")

    @property
    def threshold(self) -> float | None:
        """Multi-label: the probability above which the run counted a label (`--model.threshold`)."""
        return self.hyper_parameters.get("threshold")

    @property
    def lora_r(self) -> int:
        return self.hyper_parameters.get("lora_r") or 0

    @property
    def tokenizer(self) -> str | None:
        """The tokenizer to load: the data's, else the base model's."""
        return self.tokenizer_name_or_path or self.model_name_or_path
