"""Serving a fine-tuned model over HTTP: `python -m modules.serve MODEL_DIR` (docs/serve.md).

`api` is the LitServe API: it loads an `hf_model/` export (or a checkpoint, exported first), batches the inputs of
concurrent requests together (LitServe's dynamic batching), sorts them by length so each forward pass pads little,
and answers in each request's input order. `limits` checks every request before it reaches a worker (body size,
JSON shape, input count and length), so bad input gets a 4xx and never a worker's batch. `command` is
`python main.py serve`.
"""
