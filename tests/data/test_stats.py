"""The data report's pure functions: token length percentiles, truncation share, pair sides, label counts."""

import pyarrow as pa
import pytest

from modules.data.labels import LabelSpec
from modules.data.stats import label_stats, length_stats, pair_sides


def test_length_stats_percentiles_and_truncated_share():
    stats = length_stats(list(range(1, 101)), max_length=96)
    assert stats == {"p50": 50, "p95": 95, "max": 100, "truncated_share": 0.05}


def test_length_stats_of_an_empty_split():
    assert length_stats([], max_length=8)["truncated_share"] == 0.0


def test_pair_sides_from_token_type_ids():
    first, second = pair_sides(pa.chunked_array([[[0, 0, 0, 1, 1], [], [0, 0, 1, 1, 1, 1]]]))
    assert first.tolist() == [3, 0, 2] and second.tolist() == [2, 0, 4]


def test_single_label_counts_and_imbalance():
    spec = LabelSpec("single_label", ("neg", "neu", "pos"))
    assert label_stats(pa.chunked_array([[0, 2, 2, 2, 1, 2]]), spec) == {
        "counts": {"neg": 1, "neu": 1, "pos": 4},
        "imbalance_ratio": 4.0,
    }


def test_a_label_that_never_occurs_has_no_ratio():
    spec = LabelSpec("single_label", ("neg", "pos"))
    assert label_stats(pa.chunked_array([[1, 1]]), spec)["imbalance_ratio"] is None


def test_multi_label_counts_positives():
    spec = LabelSpec("multi_label", ("a", "b"))
    assert label_stats(pa.chunked_array([[[1.0, 0.0], [1.0, 1.0], [1.0, 0.0]]]), spec) == {
        "counts": {"a": 3, "b": 1},
        "imbalance_ratio": 3.0,
    }


def test_regression_range():
    assert label_stats(pa.chunked_array([[0.5, 1.5, 4.0]]), LabelSpec("regression", ())) == pytest.approx(
        {"min": 0.5, "max": 4.0, "mean": 2.0}
    )


def test_split_stats_reads_arrow_columns_through_a_selection():
    from datasets import Dataset

    from modules.data.stats import split_stats

    rows = Dataset.from_dict({
        "length": [5, 6, 3, 9],
        "token_type_ids": [[0, 0, 0, 1, 1], [0, 0, 1, 1, 1, 1], [0, 0, 0], [0] * 9],
        "labels": [[1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.0, 0.0]],
    }).select([0, 1, 3])  # fmt: skip
    report = split_stats(rows, max_length=9, spec=LabelSpec("multi_label", ("a", "b")), pairs=True)
    assert report["rows"] == 3 and report["tokens"]["max"] == 9 and report["tokens"]["truncated_share"] == 0.3333
    assert report["tokens_first"]["max"] == 9 and report["tokens_second"]["max"] == 4
    assert report["labels"]["counts"] == {"a": 2, "b": 1}
