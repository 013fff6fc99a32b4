"""Where `predict` writes (modules/outputs/predictions.py `output_file`): never over an earlier run's file unasked."""

from modules.outputs.predictions import output_file


def test_the_default_file_gets_a_new_name_when_an_earlier_predict_wrote_it(tmp_path):
    default = tmp_path / "predictions.jsonl"
    assert output_file(None, default) == default
    default.write_text("earlier\n")
    assert output_file(None, default) == tmp_path / "predictions-1.jsonl"
    (tmp_path / "predictions-1.jsonl").write_text("earlier\n")
    assert output_file(None, default) == tmp_path / "predictions-2.jsonl"


def test_a_named_file_is_the_one_written(tmp_path):
    named = tmp_path / "out.csv"
    named.write_text("earlier\n")
    assert output_file(str(named), tmp_path / "predictions.jsonl") == named  # replaced, with a notice
