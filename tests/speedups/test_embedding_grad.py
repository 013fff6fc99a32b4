"""Kept embedding-gradient buffer (speedups/embedding_grad.py): the same gradients and updates as the dense backward."""

from unittest import mock

import torch
from transformers import BertConfig, BertForSequenceClassification, GPT2Config, GPT2LMHeadModel

from helpers import write_base_config
from modules.cli.app import cli_main
from modules.speedups.embedding_grad import known_norm, use_kept_embedding_grad


def _model() -> BertForSequenceClassification:
    torch.manual_seed(0)
    config = BertConfig(vocab_size=97, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    config.hidden_dropout_prob = config.attention_probs_dropout_prob = 0.0
    return BertForSequenceClassification(config).train()


def _loss(model, ids: torch.Tensor) -> torch.Tensor:
    return model(input_ids=ids, labels=torch.tensor([0, 1, 1])).loss


def test_same_gradients_and_updates_as_the_dense_backward():
    batches = [torch.randint(0, 97, (3, 6), generator=torch.Generator().manual_seed(i)) for i in range(4)]
    batches[0][0, :3] = 5  # a token repeated within the batch: its rows must add up
    results = []
    for kept in (False, True):
        model = _model()
        undo = use_kept_embedding_grad(model) if kept else None
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, fused=True)
        weight = model.get_input_embeddings().weight
        grads, pointers = [], []
        for step, ids in enumerate(batches):
            _loss(model, ids).backward()
            grads.append(weight.grad.clone())
            pointers.append(weight.grad.data_ptr())
            assert not weight.grad.is_sparse
            # Gradient clipping's path on CPU: fused AdamW divides the gradients by grad_scale in place, without a
            # version bump; the next step must still find only zeros outside the rows it fills.
            optimizer.grad_scale = torch.tensor(2.0) if step % 2 else None
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        if kept:
            assert len(set(pointers)) == 1  # one buffer, kept across steps
            undo()
            assert not model.get_input_embeddings().sparse
        results.append((grads, model.state_dict()))
    (dense_grads, dense_state), (kept_grads, kept_state) = results
    for dense, kept in zip(dense_grads, kept_grads):
        torch.testing.assert_close(kept, dense, rtol=1e-6, atol=1e-7)
        assert torch.count_nonzero(kept) == torch.count_nonzero(dense)
    for name in dense_state:
        torch.testing.assert_close(kept_state[name], dense_state[name], rtol=1e-5, atol=1e-6)


def test_known_norm_is_the_full_norm_until_the_gradient_changes():
    model = _model()
    use_kept_embedding_grad(model)
    ids = torch.randint(0, 97, (3, 6), generator=torch.Generator().manual_seed(0))
    ids[0, :3] = 5  # a repeated row
    _loss(model, ids).backward()
    grad = model.get_input_embeddings().weight.grad
    torch.testing.assert_close(known_norm(grad), torch.linalg.vector_norm(grad))
    grad[0] += 1.0  # a callback changing the gradient in place: the recorded norm no longer holds
    assert known_norm(grad) is None
    assert known_norm(model.classifier.weight.grad) is None  # no record on other gradients


def test_gradient_accumulation_adds_micro_batches():
    ids = [torch.randint(0, 97, (3, 5), generator=torch.Generator().manual_seed(i)) for i in range(2)]
    expected = _model()
    for batch in ids:
        _loss(expected, batch).backward()
    model = _model()
    use_kept_embedding_grad(model)
    for batch in ids:
        _loss(model, batch).backward()
    grad = model.get_input_embeddings().weight.grad
    torch.testing.assert_close(grad, expected.get_input_embeddings().weight.grad, rtol=1e-6, atol=1e-7)
    # The second micro-batch's rows went in after the buffer was filled: the next step must not keep them.
    model.zero_grad(set_to_none=True)
    _loss(model, ids[0]).backward()
    expected.zero_grad(set_to_none=True)
    _loss(expected, ids[0]).backward()
    torch.testing.assert_close(grad, expected.get_input_embeddings().weight.grad, rtol=1e-6, atol=1e-7)


def test_a_gradient_changed_in_place_is_zeroed_whole_before_the_next_batch():
    model = _model()
    use_kept_embedding_grad(model)
    weight = model.get_input_embeddings().weight
    first, second = torch.zeros(3, 6, dtype=torch.long) + 7, torch.zeros(3, 6, dtype=torch.long) + 9
    _loss(model, first).backward()
    weight.grad[40] += 1.0  # a callback writing outside the batch's rows
    model.zero_grad(set_to_none=True)
    _loss(model, second).backward()
    assert weight.grad.abs().sum(dim=1).nonzero().flatten().tolist() == [9]


def test_not_applied_to_frozen_or_tied_embeddings():
    model = _model()
    model.get_input_embeddings().weight.requires_grad_(False)
    assert use_kept_embedding_grad(model) is None
    tied = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_embd=16, n_layer=1, n_head=2))
    assert tied.get_output_embeddings().weight is tied.get_input_embeddings().weight
    assert use_kept_embedding_grad(tied) is None and not tied.get_input_embeddings().sparse


def test_fit_uses_it_in_a_single_cpu_process_and_undoes_it(tiny_model, reviews_dir, tmp_path):
    base = write_base_config(tmp_path, tiny_model, data={"dataset": str(reviews_dir)}, trainer={"max_epochs": 1})
    undos = []

    def spy(model):
        undos.append(use_kept_embedding_grad(model))
        return undos[-1]

    with mock.patch("modules.speedups.use_kept_embedding_grad", side_effect=spy):
        cli = cli_main(["fit", "--config", str(base)])
    assert len(undos) == 1 and undos[0] is not None  # applied once, to the tiny BERT's word embeddings
    embedding = cli.model.model.get_input_embeddings()
    assert not embedding.sparse and not getattr(embedding.weight, "_post_accumulate_grad_hooks", None)
