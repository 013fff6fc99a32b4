"""Label discovery: the task and label names each kind of label column gives, and per-row encoding errors."""

import numpy as np
import pyarrow as pa
import pytest
from datasets import ClassLabel, Dataset, Features, List, Value

from modules.data import arrow_rows
from modules.data.labels import LabelSpec, encode_label, infer_label_spec
from modules.errors import HFLightningError


def _train(labels, feature=None) -> Dataset:
    features = Features({"text": Value("string"), "label": feature}) if feature else None
    return Dataset.from_dict({"text": ["x"] * len(labels), "label": labels}, features=features)


def test_classlabel_names():
    spec = infer_label_spec(_train([0, 1, 1], ClassLabel(names=["neg", "pos"])), "label")
    assert spec == LabelSpec("single_label", ("neg", "pos"))


def test_string_labels_sorted_and_integer_ids():
    assert infer_label_spec(_train(["b", "a", "b"]), "label").names == ("a", "b")
    assert infer_label_spec(_train([0, 2, 1]), "label") == LabelSpec("single_label", ("0", "1", "2"))


def test_float_labels_integral_stay_single_label_else_regression():
    assert infer_label_spec(_train([0.0, 1.0, 1.0]), "label").task == "single_label"
    assert infer_label_spec(_train([0.2, 1.5]), "label").task == "regression"
    assert infer_label_spec(_train([0.0, 1.0]), "label", task="regression").task == "regression"
    with pytest.raises(HFLightningError, match="non-integer values"):
        infer_label_spec(_train([0.5, 1.0]), "label", task="single_label")


def test_multi_label_from_lists_and_columns():
    spec = infer_label_spec(_train([["sports"], ["art", "sports"], []]), "label")
    assert spec == LabelSpec("multi_label", ("art", "sports"))
    assert encode_label(["sports"], spec, "train row 0") == [0.0, 1.0]
    feature = List(ClassLabel(names=["x", "y", "z"]))
    assert infer_label_spec(_train([[0], [2]], feature), "label").names == ("x", "y", "z")
    spec = infer_label_spec(_train([0]), ["toxic", "insult"])
    assert spec == LabelSpec("multi_label", ("toxic", "insult"))
    assert encode_label({"toxic": 1, "insult": 0}, spec, "row") == [1.0, 0.0]


def test_encoding_errors_name_the_row():
    spec = LabelSpec("single_label", ("neg", "pos"))
    with pytest.raises(HFLightningError, match=r"unknown label 'meh' in test row 4"):
        encode_label("meh", spec, "test row 4")
    with pytest.raises(HFLightningError, match=r"label 3 in train row 9 is out of range for 2 labels"):
        encode_label(3, spec, "train row 9")


def test_overrides_the_data_cannot_support_fail():
    with pytest.raises(HFLightningError, match="multi_label needs a list"):
        infer_label_spec(_train([0, 1]), "label", task="multi_label")
    with pytest.raises(HFLightningError, match="holds strings"):
        infer_label_spec(_train(["a", "b"]), "label", task="regression")


@pytest.mark.parametrize("raw", ["meh", 2.5, 7, -3])
def test_arrow_and_per_row_encoding_give_the_same_error(raw):
    spec = LabelSpec("single_label", ("neg", "pos"))
    good = "pos" if isinstance(raw, str) else 1
    values = pa.chunked_array([[good, raw]])
    with pytest.raises(HFLightningError) as per_row:
        encode_label(raw, spec, "line 9 of x.csv")
    with pytest.raises(HFLightningError) as arrow:
        arrow_rows.encode_labels(values, spec, lambda row: f"line {row} of x.csv", np.array([4, 9]))
    assert str(arrow.value) == str(per_row.value)


def test_arrow_encoding_of_valid_labels_matches_per_row():
    spec = LabelSpec("single_label", ("neg", "pos"))
    for raw in (["pos", "neg", "pos"], [1, 0, 1], [1.0, 0.0, 1.0]):
        ids = arrow_rows.encode_labels(pa.chunked_array([raw]), spec, str, np.arange(3))
        assert ids.tolist() == [encode_label(v, spec, "row") for v in raw] == [1, 0, 1]
