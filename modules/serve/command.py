"""`python main.py serve MODEL_DIR`: serve an `hf_model/` export (or a `.ckpt`) on LitServe.

POST /predict  {"inputs": ["text", ...], "top_k": 1}   -> {"predictions": [{"label": ..., "score": ...}, ...]}
               multi-label: {"labels": [...], "scores": {...}} per input; `"threshold": 0.3` (every label) or
               `"threshold": {"label": 0.3}` (some labels) overrides the server's thresholds for that request
POST /predict  {"inputs": "text", "parameters": {}}    -> [[{"label": ..., "score": ...}, ...]]  (Hugging Face's)
GET  /health   "ok" once the model is loaded;   GET /info   model, task, labels, max_length, thresholds, settings
"""

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import NoReturn

from modules.cli.plain_parser import PlainParser
from modules.errors import HFLightningError

DTYPES = {"32-true": "float32", "bf16-true": "bfloat16", "16-true": "float16"}  # --precision -> torch dtype name
# CPU workers by default: one per core, each with its own torch threads, none waiting at another's barriers (it
# answered more rows/s than one worker with every thread: benchmarks/README.md), at most this many model copies.
MOST_CPU_WORKERS = 4
API_KEY_VARIABLE = "HF_LIGHTNING_API_KEY"
_SERVER_PID: int | None = None  # the process `main` runs in; its forks inherit `_interrupt`


def parse(args: list[str] | None) -> argparse.Namespace:
    parser = PlainParser("serve", description=__doc__.splitlines()[0])
    parser.add_argument("model", help="an hf_model/ export folder, or a Lightning .ckpt (exported first)")
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max_batch_size", type=int, default=32, help="requests LitServe batches together")
    parser.add_argument("--batch_timeout", type=float, default=0.005, help="seconds a batch waits to fill up")
    parser.add_argument("--rows_per_pass", type=int, default=64, help="inputs per forward pass within a batch")
    parser.add_argument("--max_length", type=int, default=None, help="tokens per input; default the model's")
    parser.add_argument(
        "--long_text", default=None, choices=["truncate", "chunk"],
        help="a text over --max_length tokens: cut there, or scored as overlapping windows whose logits are averaged "
        "(max for multi-label), as --data.long_text chunk does; default: what the run that made the export used",
    )  # fmt: skip
    parser.add_argument(
        "--stride", type=int, default=None, help="tokens windows share; default the run's, else max_length / 4"
    )
    parser.add_argument(
        "--threshold", type=float, default=None,
        help="multi-label: probability above which a label counts, for every label: replaces the run's tuned "
        "per-label thresholds and --model.threshold (kept in the export; default: those, else 0.5); a request may "
        'set its own (`"threshold": 0.3`, or `{"label": 0.3}` for some labels)',
    )  # fmt: skip
    parser.add_argument("--max_inputs", type=int, default=64, help="inputs per request")
    parser.add_argument("--max_chars", type=int, default=20_000, help="characters per text")
    parser.add_argument("--max_body_bytes", type=int, default=1 << 20, help="request body size")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds before a request gets a 504")
    parser.add_argument(
        "--fast_queue", action=argparse.BooleanOptionalAction, default=False,
        help="ZeroMQ queues between the HTTP server and the workers instead of multiprocessing ones",
    )  # fmt: skip
    parser.add_argument(
        "--backend", default="torch", choices=["torch", "onnx", "onnx-int8", "auto"],
        help="torch: the PyTorch model; onnx / onnx-int8: model.onnx / model.int8.onnx with onnxruntime on the CPU "
        "(written by --export.onnx true [--export.quantize true], docs/serve.md); auto: the fastest the export has "
        "that is exact enough (int8 when its validation check recorded it within half a point of fp32, else onnx, "
        "else torch), on the CPU",
    )  # fmt: skip
    parser.add_argument(
        "--precision", default="32-true", choices=list(DTYPES),
        help="the PyTorch backend's weights and compute, as predict's --trainer.precision: 32-true gives predict's "
        "numbers; bf16-true is faster where bf16 is native (GPUs from Ampere, CPUs with AMX or AVX512-BF16)",
    )  # fmt: skip
    parser.add_argument("--accelerator", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    parser.add_argument(
        "--workers_per_device", type=int, default=None,
        help=f"model copies per device; default 1 per GPU, and on CPUs one per core up to {MOST_CPU_WORKERS}",
    )  # fmt: skip
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads per CPU worker; default: cores / workers"
    )
    parser.add_argument(
        "--api_key", default=os.environ.get(API_KEY_VARIABLE) or None,
        help="require `Authorization: Bearer KEY` on every request but GET /health (401 without it); default "
        f"${API_KEY_VARIABLE}, which keeps the key out of the process list",
    )  # fmt: skip
    options = parser.parse_args(args)
    if options.backend == "auto":
        options.backend, why = auto_backend(options.model)
        print(f"--backend auto: {options.backend} ({why})")
    if options.backend != "torch" and options.accelerator not in ("auto", "cpu"):
        parser.error(f"--backend {options.backend} runs on the CPU: drop --accelerator {options.accelerator}")
    if options.backend != "torch" and options.precision != "32-true":
        parser.error(
            f"--precision applies to --backend torch; {options.backend} runs its file's own precision "
            "(onnx-int8: int8 weights)"
        )
    if options.threshold is not None and not 0 < options.threshold < 1:
        parser.error(f"--threshold must be between 0 and 1 (exclusive), got {options.threshold}")
    for name in ("max_batch_size", "rows_per_pass", "max_inputs", "max_chars", "max_body_bytes", "workers_per_device"):
        if getattr(options, name) is not None and getattr(options, name) < 1:
            parser.error(f"--{name} must be at least 1")
    return options


def auto_backend(model: str) -> tuple[str, str]:
    """`--backend auto`: the fastest backend the export has that is exact enough, and why it was chosen. int8 only
    with the export's recorded check (modules/outputs/int8_check.py) saying so; onnxruntime must be installed."""
    from importlib.util import find_spec

    from modules.outputs.int8_check import describe, read_check
    from modules.outputs.onnx import INT8_FILE, ONNX_FILE

    folder = Path(model).expanduser()
    if not folder.is_dir():
        return "torch", "not an export folder"
    if find_spec("onnxruntime") is None:
        return "torch", "onnxruntime is not installed: pip install -e '.[onnx]'"
    check = read_check(folder)
    if (folder / INT8_FILE).is_file():
        if check and check["exact_enough"]:
            return "onnx-int8", describe(check)
        why = describe(check) if check else f"{INT8_FILE} has no recorded check (written by --export.quantize true)"
    else:
        why = f"no {INT8_FILE}"
    if (folder / ONNX_FILE).is_file():
        return "onnx", why
    return "torch", f"{why}; no {ONNX_FILE}"


def device_type(accelerator: str, backend: str) -> str:
    """What LitServe's `accelerator` resolves to: cuda, mps or cpu."""
    if backend != "torch" or accelerator == "cpu":
        return "cpu"
    if accelerator != "auto":
        return accelerator
    import torch

    if torch.cuda.is_available():
        return "cuda"
    return "mps" if torch.backends.mps.is_available() else "cpu"


def main(args: list[str] | None = None) -> None:
    options = parse(args)
    try:
        import litserve as ls
    except ImportError:
        _fail("serving needs LitServe: pip install -e '.[serve]'")
    from modules.serve.api import ClassifierAPI, describe, model_folder
    from modules.serve.limits import ApiKey, Limits, RequestLimits

    try:
        folder = model_folder(options.model, options.backend)
        info = describe(folder, options.max_length, options.long_text, options.stride, options.threshold)
        info |= {"backend": options.backend}
    except (HFLightningError, ImportError, OSError, ValueError) as error:
        _fail(str(error))
    device = device_type(options.accelerator, options.backend)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    workers = options.workers_per_device or (min(cores, MOST_CPU_WORKERS) if device == "cpu" else 1)
    threads = options.threads or max(1, cores // workers)
    if options.backend == "torch":
        from modules.check.machine import precision_warning

        warning = precision_warning(options.precision, device, "--precision", "serving")
        if warning:
            print(f"warning: {warning}", file=sys.stderr)
    info |= {"precision": options.precision if options.backend == "torch" else None, "workers": workers}
    api = ClassifierAPI(
        folder,
        info,
        options.rows_per_pass,
        threads,
        options.backend,
        dtype=DTYPES[options.precision],
        max_batch_size=options.max_batch_size,
        batch_timeout=options.batch_timeout,
    )
    limits = Limits(
        options.max_body_bytes, options.max_inputs, options.max_chars, info["task"] == "multi_label",
        tuple(info["labels"]),
    )  # fmt: skip
    middlewares = [(RequestLimits, {"limits": limits})]
    if options.api_key:  # listed last, so outermost: a request without the key is refused before its body is read
        middlewares.append((ApiKey, {"key": options.api_key}))
    server = ls.LitServer(
        api,
        accelerator=device,
        workers_per_device=workers,
        timeout=options.timeout,
        model_metadata=info | {"api_key": bool(options.api_key)},
        middlewares=middlewares,
        fast_queue=options.fast_queue,
    )
    # SIGTERM (a scheduler's or a container's stop) takes LitServe's Ctrl-C path: the HTTP server stops accepting,
    # answers what is in flight, then the workers stop. Its default action would kill this process alone and leave
    # the HTTP server and workers running, holding the port.
    global _SERVER_PID
    _SERVER_PID = os.getpid()
    signal.signal(signal.SIGTERM, _interrupt)
    print(f"Serving {info['model']} ({info['task']}, labels {info['labels']}) on http://{options.host}:{options.port}")
    try:
        server.run(host=options.host, port=options.port, num_api_servers=1, generate_client_file=False)
    finally:
        _reap_children()


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM in the server's own process: LitServe's Ctrl-C path. In a process forked from it (the HTTP server),
    which inherits this handler and whose uvicorn re-raises the SIGTERM it stopped on once it has drained: a clean
    exit. A KeyboardInterrupt there printed a traceback; dying of the signal skipped multiprocessing's finalizers,
    and the resource tracker then warned of leaked semaphores. LitServe's manager process stays up."""
    if os.getpid() == _SERVER_PID:
        raise KeyboardInterrupt
    import multiprocessing

    if multiprocessing.current_process().name.startswith("SyncManager"):
        # LitServe's multiprocessing manager, which holds the shutdown event and queues: a stop signalled to the
        # whole process group (systemd, `kill -- -PGID`) reaches it too, and its exit crashed the server's monitor
        # thread mid-drain. The server process shuts it down once the workers are done.
        return
    sys.exit(0)


def _fail(message: str) -> NoReturn:
    """What cannot be served, in one line, with exit status 2 as for a bad option."""
    sys.stderr.write(f"error: {message}\n")
    sys.exit(2)


def _reap_children(grace: float = 10.0) -> None:
    """Wait for every worker process to be gone before this one exits. LitServe's shutdown SIGKILLs a worker that
    outlives its grace period without waiting for it, so without this the port's owner can outlive the server."""
    import multiprocessing

    for child in multiprocessing.active_children():
        child.join(timeout=grace)
        if child.is_alive():
            child.kill()
            child.join()


if __name__ == "__main__":
    main()
