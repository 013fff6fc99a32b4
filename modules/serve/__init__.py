"""Serving a fine-tuned model over HTTP: `python main.py serve MODEL_DIR` (docs/serve.md).

`api` is the LitServe API: it loads an `hf_model/` export (or a checkpoint, exported first), batches the inputs of
concurrent requests together (LitServe's dynamic batching), sorts them by length so each forward pass pads little,
and answers in each request's input order, in the server's own shape or Hugging Face's. `limits` checks every
request before it reaches a worker (body size, JSON shape, input count and length, the API key), so bad input gets a
4xx and never a worker's batch. `command` is `python main.py serve`.

Light on purpose: importing this package, or anything a worker runs, loads no Lightning, datasets or torchmetrics
(tests/serve/test_light.py). Start-up and serving figures live in benchmarks/README.md.
"""
