"""`gather` (modules/decisions/outputs.py): a stage's outputs as one row per index on every process, windows of one
document averaged, whichever batches and ranks they came from."""

import torch

from modules.decisions.outputs import gather


def test_windows_split_across_batches_and_ranks_become_one_row_per_document(monkeypatch):
    # Document 0 has windows on both ranks, in two batches; every rank gets every document once.
    logits = torch.tensor([[1.0, 0.0], [3.0, 2.0], [0.0, 5.0], [2.0, 2.0]])
    rank_parts = {
        0: [(torch.tensor([0]), logits[:1], torch.tensor([1])), (torch.tensor([2]), logits[2:3], torch.tensor([0]))],
        1: [(torch.tensor([0, 1]), torch.stack([logits[1], logits[3]]), torch.tensor([1, 0]))],
    }
    gathered = [tuple(torch.cat([p[i] for p in parts]) for i in range(3)) for parts in rank_parts.values()]
    monkeypatch.setattr(torch.distributed, "all_gather_object", lambda out, _: out.__setitem__(slice(None), gathered))
    for parts in rank_parts.values():
        outputs = gather(parts, False, 2)
        assert torch.equal(outputs.index, torch.tensor([0, 1, 2]))
        assert torch.equal(outputs.logits, torch.tensor([[2.0, 1.0], [2.0, 2.0], [0.0, 5.0]]))  # document 0: mean
        assert torch.equal(outputs.labels, torch.tensor([1, 0, 0]))


def test_an_empty_split_gives_no_rows(monkeypatch):
    assert len(gather([], False, 1).index) == 0
    empty = (torch.empty(0, dtype=torch.long), torch.empty(0, 1), torch.empty(0))
    gather_empty = lambda out, _: out.__setitem__(slice(None), [empty] * 2)  # noqa: E731
    monkeypatch.setattr(torch.distributed, "all_gather_object", gather_empty)
    outputs = gather([], False, 2)  # no rank had a row
    assert len(outputs.index) == 0 and len(outputs.logits) == 0 and len(outputs.labels) == 0
