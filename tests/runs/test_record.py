"""RunRecord: the one reader of what a checkpoint saves about its run, for checkpoints of this and earlier versions."""

from modules.runs.record import DATA_STATE_KEY, RunRecord, data_state

# The keys an earlier version wrote (before RunRecord): the model's hyperparameters, its config, the data's state.
EARLIER_CHECKPOINT = {
    "hyper_parameters": {
        "model_name_or_path": "base-model",
        "problem_type": "single_label_classification",
        "label_names": ["neg", "pos"],
        "lora_r": 8,
        "_instantiator": "lightning.pytorch.cli.instantiate_module",
    },
    "hf_config": {"model_type": "bert", "max_position_embeddings": 128},
    "HFDataModule": {
        "tokenizer_name_or_path": "own-tokenizer",
        "max_length": 4096,
        "long_text": "chunk",
        "stride": 16,
        "task": "single_label",
        "label_names": ["neg", "pos"],
        "global_batch_size": 32,
    },
}


def test_reads_a_checkpoint_of_an_earlier_version():
    record = RunRecord.from_checkpoint(EARLIER_CHECKPOINT)
    assert (record.model_name_or_path, record.problem_type, record.label_names) == (
        "base-model",
        "single_label_classification",
        ["neg", "pos"],
    )
    assert (record.lora_r, record.tokenizer, record.max_length) == (8, "own-tokenizer", 4096)
    assert (record.long_text, record.stride, record.global_batch_size) == ("chunk", 16, 32)
    assert record.hf_config["max_position_embeddings"] == 128
    assert record.hyper_parameters["_instantiator"]  # kept whole: it rebuilds the module


def test_writes_the_keys_it_reads():
    state = data_state("tok", 128, "truncate", None, "multi_label", ["a", "b"], 16)
    assert set(state) == set(EARLIER_CHECKPOINT["HFDataModule"])  # the same keys on disk as before
    record = RunRecord.from_checkpoint({DATA_STATE_KEY: state})
    assert (record.tokenizer_name_or_path, record.max_length, record.long_text) == ("tok", 128, "truncate")


def test_missing_parts_read_as_none():
    record = RunRecord.from_checkpoint({"hyper_parameters": {"model_name_or_path": "m"}})
    assert (record.hf_config, record.max_length, record.label_names, record.lora_r) == (None, None, None, 0)
    assert record.tokenizer == "m"  # no data state: the base model's tokenizer
