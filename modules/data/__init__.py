"""Data: load a Hub dataset, a local folder or files (`sources`), discover and encode labels (`labels`), clean and
tokenize (`preprocess`, with Arrow row checks in `arrow_rows`), pad batches (`collate`), and sample them by length,
resumably (`sampler`). `build` turns sources into a stage's tokenized splits; `HFDataModule` (`datamodule`) holds
the settings, loaders and checkpoint state. `streaming` reads a train split larger than memory; `long_text` windows
long documents and aggregates their logits; `stats` reports on the data for `check`; `demo` builds the offline demo
model and data.
"""

from modules.data.datamodule import HFDataModule

__all__ = ["HFDataModule"]
