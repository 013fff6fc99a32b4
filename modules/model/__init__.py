"""Model: `TransformerModule` (`module`), the LightningModule around a Hugging Face sequence classifier, with its
validation, test and predict steps (`evaluation`: metrics per row, or per document for windowed long texts);
building that model from a name, a config or a checkpoint (`build`); AdamW, the warmup schedule and gradient
clipping (`optimization`); the metrics of each task (`metrics`); LoRA adapters (`lora`); keeping N of a pretrained
model's layers for a smaller student (`layers`).

`TransformerModule` and `trained_model` are imported on first use (PEP 562), so a light module here (`loss`, whose
`task_outputs` the server uses) loads no Lightning, datasets or torchmetrics.
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from modules.model.build import trained_model
    from modules.model.module import TransformerModule

__all__ = ["TransformerModule", "trained_model"]
_HOMES = {"TransformerModule": "modules.model.module", "trained_model": "modules.model.build"}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
