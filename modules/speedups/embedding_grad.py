"""Word-embedding gradients written into one kept buffer instead of a fresh vocabulary-sized tensor every step.

The dense backward of an embedding allocates a (vocab_size, hidden) tensor of zeros each step and adds the batch's rows
into it: for BERT's 30522 x 384 that is 47 MB of freshly mapped memory, whose page faults cost ~30 ms of a 200 ms
MiniLM step on 2 CPU cores. Here the embedding emits a sparse gradient (the batch's rows only) and a hook adds it into a
buffer that lives across steps, in which only the previous batch's rows need zeroing. The optimizer, clipping and any
callback still see the usual dense gradient: the same values (rows summed in another order), the same update. The
buffer's norm is taken from the touched rows when it is filled, and used by gradient clipping while the buffer's
version counter shows it unchanged; a buffer changed in place since it was filled is zeroed whole.
"""

from collections.abc import Callable

import torch
from torch import nn
from transformers import PreTrainedModel

from modules import compat


def use_kept_embedding_grad(model: PreTrainedModel) -> Callable[[], None] | None:
    """Route the input embedding's gradient through a kept buffer; returns undo, or None where it does not apply.

    Single process only: DDP all-reduces gradients during the backward, before a sparse one could be made dense.
    """
    embedding = model.get_input_embeddings()
    output = model.get_output_embeddings()
    weight = getattr(embedding, "weight", None)
    if type(embedding) is not nn.Embedding or embedding.sparse or weight is None or not weight.requires_grad:
        return None
    if output is not None and getattr(output, "weight", None) is weight:  # tied to an output layer: its grad is dense
        return None
    buffer = torch.zeros_like(weight)
    filled = None  # (the buffer's version once filled, the rows filled then): the only non-zero rows

    def densify(parameter: torch.Tensor) -> None:
        nonlocal filled
        grad = parameter.grad
        if grad is not None and grad.is_sparse:  # a dense one already holds the sparse grads of earlier micro-batches
            if filled is not None and filled[0] == compat.version(buffer):
                # Unchanged since it was filled (fused AdamW's clip-factor write, which keeps zeros, leaves the version
                # as it is): zero the rows filled then, not all 47 MB (~4 ms a step on 2 cores).
                buffer.index_fill_(0, filled[1], 0.0)
            else:  # new, or changed in place since (a callback, micro-batches of gradient accumulation)
                buffer.zero_()
            indices, values = compat.sparse_rows(grad)
            buffer.index_add_(0, indices, values.to(buffer.dtype))
            rows = indices.unique()
            parameter.grad = buffer
            # Its norm, from the rows the batch touched (~1k of 30k): gradient clipping need not read all 47 MB.
            buffer._rows_norm = (compat.version(buffer), torch.linalg.vector_norm(buffer.index_select(0, rows)))
            filled = (compat.version(buffer), rows)

    embedding.sparse = True
    handle = weight.register_post_accumulate_grad_hook(densify)

    def undo() -> None:
        handle.remove()
        embedding.sparse = False

    return undo


def known_norm(grad: torch.Tensor) -> torch.Tensor | None:
    """The L2 norm of a kept-buffer gradient, recorded when it was filled; None if it changed since (or is another)."""
    record = getattr(grad, "_rows_norm", None)
    return record[1] if record is not None and record[0] == compat.version(grad) else None
