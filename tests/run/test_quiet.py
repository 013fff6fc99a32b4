"""Library noise is filtered at its source; other messages from the same places still show."""

import logging
import warnings

from lightning.pytorch.utilities import rank_zero_info

from modules.run.quiet import quiet_library_noise


def test_lightning_tips_are_dropped_other_info_kept(caplog):
    quiet_library_noise()
    with caplog.at_level(logging.INFO, logger="lightning.pytorch.utilities.rank_zero"):
        rank_zero_info("💡 Tip: For seamless cloud logging and experiment tracking, try installing litlogger")
        rank_zero_info("GPU available: False, used: False")
    assert [r.getMessage() for r in caplog.records] == ["GPU available: False, used: False"]


def test_leafspec_deprecation_from_lightning_is_dropped_elsewhere_kept():
    message = "`isinstance(treespec, LeafSpec)` is deprecated, use `isinstance(treespec, TreeSpec)` instead."
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_library_noise()
        warnings.warn_explicit(message, FutureWarning, "_pytree.py", 21, module="lightning.pytorch.utilities._pytree")
        warnings.warn_explicit(message, FutureWarning, "ours.py", 1, module="modules.model.module")
    assert [w.filename for w in caught] == ["ours.py"]
