"""Data: load a Hub dataset, a local folder or files (`sources`), discover and encode labels (`labels`), clean and
tokenize (`preprocess`, with Arrow row checks in `arrow_rows`), pad batches (`collate`), and sample them by length,
resumably (`sampler`). `build` turns sources into a stage's tokenized splits; `HFDataModule` (`datamodule`) holds
the settings, lifecycle and checkpoint state, and hands the model its `DataContract` (`contract`, with the one
max_length clamp); `loaders` makes its data loaders. `streaming` reads a train split larger than memory; `long_text`
windows long documents and aggregates their logits; `stats` reports on the data for `check`; `demo` builds the
offline demo model and data. `tasks` is the task table, light enough for the server.

`HFDataModule` is imported on first use (PEP 562), so `import modules.data.tasks` loads no Lightning or datasets.
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from modules.data.datamodule import HFDataModule

__all__ = ["HFDataModule"]


def __getattr__(name: str) -> Any:
    if name == "HFDataModule":
        return importlib.import_module("modules.data.datamodule").HFDataModule
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
