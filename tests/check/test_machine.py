"""The precision guard: one warning at start when bf16 would be emulated, none when the hardware runs it natively."""

import warnings

import pytest

from helpers import write_base_config
from modules.check import machine
from modules.cli.app import cli_main


def test_precision_kind():
    assert [machine.precision_kind(p) for p in ("bf16-mixed", "bf16-true", "16-mixed", "32-true", "64")] == [
        "bf16",
        "bf16",
        "16",
        None,
        None,
    ]


def test_cpu_bf16_comes_from_amx_or_avx512_bf16(monkeypatch):
    monkeypatch.setattr(machine, "cpu_flags", lambda: {"avx512f", "avx2"})
    assert not machine.has_native_16bit("bf16", "cpu")
    monkeypatch.setattr(machine, "cpu_flags", lambda: {"avx512f", "avx512_bf16"})
    assert machine.has_native_16bit("bf16", "cpu") and not machine.has_native_16bit("16", "cpu")
    monkeypatch.setattr(machine, "cpu_flags", lambda: {"amx_bf16", "amx_tile"})
    assert machine.has_native_16bit("bf16", "cpu")


def _validate(tmp_path, tiny_model, reviews_dir, precision: str) -> list[str]:
    base = write_base_config(tmp_path, tiny_model, data={"dataset": str(reviews_dir)})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cli_main(["validate", "--config", str(base), "--trainer.precision", precision])
    return [str(w.message) for w in caught if "is emulated" in str(w.message)]


@pytest.mark.e2e
def test_guard_warns_when_bf16_is_emulated(tmp_path, tiny_model, reviews_dir, monkeypatch):
    monkeypatch.setattr(machine, "has_native_16bit", lambda kind, device_type: False)
    messages = _validate(tmp_path, tiny_model, reviews_dir, "bf16-mixed")
    assert len(messages) == 1
    assert "--trainer.precision 32-true" in messages[0] and "slower than in fp32" in messages[0]


@pytest.mark.e2e
def test_guard_is_silent_when_bf16_is_native(tmp_path, tiny_model, reviews_dir, monkeypatch):
    monkeypatch.setattr(machine, "has_native_16bit", lambda kind, device_type: True)
    assert _validate(tmp_path, tiny_model, reviews_dir, "bf16-mixed") == []


@pytest.mark.e2e
def test_guard_is_silent_in_fp32(tmp_path, tiny_model, reviews_dir, monkeypatch):
    monkeypatch.setattr(machine, "has_native_16bit", lambda kind, device_type: False)
    assert _validate(tmp_path, tiny_model, reviews_dir, "32-true") == []


def test_the_warning_names_the_flag_it_is_about(monkeypatch):
    monkeypatch.setattr(machine, "has_native_16bit", lambda kind, device_type: False)
    message = machine.precision_warning("bf16-true", "cpu", "--precision", "serving")
    assert message.startswith("--precision bf16-true: this CPU") and "serving will be far slower" in message
    assert "Use --precision 32-true" in message
