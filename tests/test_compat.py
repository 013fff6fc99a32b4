"""modules/compat.py: every private member it lists exists in the installed versions, and a missing one is named."""

import re
import subprocess

import pytest
from lightning.pytorch.callbacks import ModelCheckpoint
from transformers import PreTrainedModel

from helpers import ROOT
from modules import compat


def test_every_listed_private_member_exists():
    assert compat.missing_members() == [], f"installed: {compat.installed_versions()}"


@pytest.mark.parametrize(
    ("owner", "name", "expected"),
    [
        (ModelCheckpoint, "_save_last_checkpoint", "lightning: ModelCheckpoint._save_last_checkpoint"),
        (PreTrainedModel, "_supports_attention_backend", "transformers: PreTrainedModel._supports_attention_backend"),
    ],
)
def test_a_removed_member_is_named(owner, name, expected, monkeypatch):
    monkeypatch.delattr(owner, name)
    assert compat.missing_members() == [expected]


def test_a_removed_instance_attribute_is_named(monkeypatch):
    # Set in __init__, so the check must look at an instance: make __init__ stop setting it.
    from lightning.pytorch.trainer.connectors.signal_connector import _SignalConnector

    init = _SignalConnector.__init__

    def without_flag(self, trainer) -> None:
        init(self, trainer)
        del self.received_sigterm

    monkeypatch.setattr(_SignalConnector, "__init__", without_flag)
    assert compat.missing_members() == ["lightning: Trainer._signal_connector.received_sigterm"]


def _private_uses(text: str) -> set[str]:
    """`obj._name` accesses in code, leaving out `self._x`/`cls._x` (our own), dunders and namedtuple's `_replace`."""
    found = set()
    for match in re.finditer(r"(\w+)\.(_[a-z]\w*)\b", text):
        receiver, member = match.groups()
        if receiver in {"self", "cls", "compat"} or member == "_replace":
            continue
        found.add(f"{receiver}.{member}")
    return found


# Underscored attributes that are ours, set on objects we create: not an upstream member.
OUR_OWN = {"buffer._rows_norm"}  # speedups/embedding_grad.py: the kept gradient buffer's recorded norm


def test_no_private_member_is_reached_outside_compat():
    tracked = subprocess.run(
        ["git", "ls-files", "main.py", "modules"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    offenders = {}
    for path in tracked:
        if not path.endswith(".py") or path == "modules/compat.py":
            continue
        code = "\n".join(line.split("#")[0] for line in (ROOT / path).read_text().splitlines())
        uses = _private_uses(code) - OUR_OWN
        if uses:
            offenders[path] = sorted(uses)
    assert offenders == {}


def test_listed_members_match_the_docstring():
    # The docstring says why each member is used: every listed member has its entry there.
    doc = compat.__doc__
    for member in compat.MEMBERS:
        assert member.name in doc, member.name
