"""Error messages point at the line of the user's file, not at a 0-based row index."""

import pandas as pd
import pytest

from modules.data.preprocess import where
from modules.data.sources import file_line


def test_csv_counts_the_header_blank_lines_and_quoted_line_breaks(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text('text,label\n"two\nlines",pos\n\nthird row,neg\nfourth,pos\n')
    assert [file_line(str(path), i) for i in range(4)] == [2, 5, 6, None]


def test_jsonl_skips_blank_lines_and_text_keeps_them(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"text": "a"}\n\n{"text": "b"}\n')
    (tmp_path / "a.txt").write_text("first\n\nthird\n")
    assert file_line(str(tmp_path / "a.jsonl"), 1) == 3
    assert file_line(str(tmp_path / "a.txt"), 1) == 2


def test_tsv_row_and_formats_without_lines(tmp_path):
    (tmp_path / "a.tsv").write_text("text\tlabel\nx, y\tpos\nz\tneg\n")
    pd.DataFrame({"text": ["a", "b"]}).to_parquet(tmp_path / "a.parquet")
    assert file_line(str(tmp_path / "a.tsv"), 1) == 3
    assert file_line(str(tmp_path / "a.parquet"), 1) is None


@pytest.mark.parametrize(
    "source, expected",
    [
        ("data.csv", "line 5 of {tmp}/data.csv"),
        (None, "row 3 of the validation split (counting rows from 1)"),
    ],
)
def test_where_names_the_line_or_says_how_rows_count(tmp_path, source, expected):
    (tmp_path / "data.csv").write_text("text,label\na,pos\n\nb,neg\nc,pos\n")
    path = str(tmp_path / source) if source else None
    assert where(2, "validation", path) == expected.format(tmp=tmp_path)
