"""Model: `TransformerModule` (`module`), the LightningModule around a Hugging Face sequence classifier, with its
validation, test and predict steps (`evaluation`: metrics per row, or per document for windowed long texts);
building that model from a name, a config or a checkpoint (`build`); AdamW, the warmup schedule and gradient
clipping (`optimization`); the metrics of each task (`metrics`); LoRA adapters (`lora`).
"""

from modules.model.build import trained_model
from modules.model.module import TransformerModule

__all__ = ["TransformerModule", "trained_model"]
