"""Library noise is filtered at its source; other messages from the same places still show."""

import logging
import warnings

import pytest
from lightning.pytorch.utilities import rank_zero_info

from modules.console.quiet import quiet_library_noise


def test_lightning_tips_are_dropped_other_info_kept(caplog):
    quiet_library_noise()
    with caplog.at_level(logging.INFO, logger="lightning.pytorch.utilities.rank_zero"):
        rank_zero_info("💡 Tip: For seamless cloud logging and experiment tracking, try installing litlogger")
        rank_zero_info("Loading `train_dataloader` to estimate number of stepping batches.")
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


def test_zero_flops_line_dropped_rest_of_the_summary_kept(caplog):
    quiet_library_noise()
    logger = logging.getLogger("lightning.pytorch.callbacks.model_summary")
    with caplog.at_level(logging.INFO, logger=logger.name):
        logger.info("\n24.5 K    Total params\n0         Total Flops")
        logger.info("\n24.5 K    Total params\n12.3 M    Total Flops")
    assert [r.getMessage() for r in caplog.records] == [
        "\n24.5 K    Total params",
        "\n24.5 K    Total params\n12.3 M    Total Flops",
    ]


def test_repo_card_note_dropped_other_hub_warnings_kept(caplog):
    quiet_library_noise()
    logger = logging.getLogger("huggingface_hub.repocard")
    with caplog.at_level(logging.WARNING, logger=logger.name):
        logger.warning("Repo card metadata block was not found. Setting CardData to empty.")
        logger.warning("Something else")
    assert [r.getMessage() for r in caplog.records] == ["Something else"]


def test_load_report_colour_codes_stripped_in_files(caplog):
    quiet_library_noise()  # pytest's stderr is not a terminal
    logger = logging.getLogger("transformers.modeling_utils")
    with caplog.at_level(logging.WARNING, logger=logger.name):
        logger.warning("\x1b[1mBertForSequenceClassification LOAD REPORT\x1b[0m from: x")
    assert caplog.records[0].getMessage() == "BertForSequenceClassification LOAD REPORT from: x"


def test_model_summary_precision_warning_dropped_elsewhere_kept():
    message = "Precision bf16-mixed is not supported by the model summary.  Estimated model size in MB will not be"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_library_noise()
        module = "lightning.pytorch.utilities.model_summary.model_summary"
        warnings.warn_explicit(message, UserWarning, "model_summary.py", 243, module=module)
        warnings.warn_explicit(message, UserWarning, "ours.py", 1, module="modules.model.module")
    assert [w.filename for w in caught] == ["ours.py"]


def test_load_report_of_only_a_new_head_is_one_line_others_stay_whole(tmp_path, caplog):
    from transformers import AutoModelForSequenceClassification, BertConfig, BertForMaskedLM, BertModel

    quiet_library_noise()
    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    BertModel(config).save_pretrained(tmp_path / "encoder")  # fine-tuning a pretrained encoder: only the head is new
    BertForMaskedLM(config).save_pretrained(tmp_path / "mlm")  # an MLM head left over: unexpected weights
    with caplog.at_level(logging.WARNING, logger="transformers"):
        AutoModelForSequenceClassification.from_pretrained(tmp_path / "encoder", num_labels=2)
        AutoModelForSequenceClassification.from_pretrained(tmp_path / "mlm", num_labels=2)
    reports = [r.getMessage() for r in caplog.records if "classifier.weight" in r.getMessage()]
    assert reports[0] == (
        f"BertForSequenceClassification from {tmp_path / 'encoder'}: a new classification head (classifier.bias, "
        "classifier.weight), trained by fit."
    )
    assert "LOAD REPORT" in reports[1] and "UNEXPECTED" in reports[1] and len(reports[1].splitlines()) > 3


@pytest.mark.parametrize(
    ("message", "module"),
    [
        ("LightningCLI's args parameter is intended to run from within Python like if it were CLI input.", "lightning"),
        (
            "Argument ``heartbeat_interval`` is an experimental feature. The interface can change in the future.",
            "optuna._experimental",
        ),
        (
            "optuna.storages._heartbeat.fail_stale_trials is experimental (supported from v2.9.0). The interface can "
            "change in the future.",
            "modules.tune.command",
        ),
        (
            "Metric `SpearmanCorrcoef` will save all targets and predictions in the buffer. For large datasets, this "
            "may lead to large memory footprint.",
            "torchmetrics.utilities.prints",
        ),
    ],
)
def test_notes_on_what_we_do_on_purpose_are_dropped_elsewhere_kept(message, module):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_library_noise()
        warnings.warn_explicit(message, UserWarning, "theirs.py", 1, module=module)
        warnings.warn_explicit(message, UserWarning, "ours.py", 1, module="modules.data.labels")
    assert [w.filename for w in caught] == ["ours.py"]
