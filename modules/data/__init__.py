"""Data: load a Hub dataset, a local folder or files (`sources`), discover and encode labels (`labels`), clean and
tokenize (`preprocess`), pad batches (`collate`), and sample them by length, resumably (`sampler`).
`HFDataModule` (`datamodule`) ties these together; `stats` reports on the result for `check`; `demo` builds the
offline demo model and data.
"""

from modules.data.datamodule import HFDataModule

__all__ = ["HFDataModule"]
