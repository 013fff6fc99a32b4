"""Training throughput of `hf-lightning fit` against the Hugging Face `Trainer` on the same model, data and settings.

Both tools train the same classifier on the same train split with the same batch size, max_length, precision and
number of optimizer steps, each run in a fresh process, alternating tool by tool within each repeat. Printed per tool
and precision: samples/s from the end of step --warmup_steps to the last step (startup excluded), the ratios ours/hf
and ours/hf_grouped, the fraction of real (non-pad) tokens in the batches each tool fed, and achieved GFLOP/s (6 x
non-embedding parameters x real tokens/s) against a matmul peak measured on the spot. It prints numbers and asserts
nothing about speed.

Run from the repo root, with accelerate installed (`pip install -e .[bench]`):

    python benchmarks/throughput.py                # MiniLM-L6 on rotten_tomatoes, fp32 and bf16, 2 repeats, 12 runs
    python benchmarks/throughput.py --random_init --from_config_layers 12 --from_config_hidden 768  # bert-base, GPUs
"""

import argparse
import functools
import gc
import itertools
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple
from unittest import mock

import datasets
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    DataCollatorWithPadding,
    TrainerCallback,
    TrainingArguments,
)
from transformers import Trainer as HFTrainer
from transformers.trainer_callback import PrinterCallback
from transformers.utils import logging as hf_logging

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ("ours", "hf", "hf_grouped")
EXTRA_TOOLS = ("ours_compile",)  # on request: `--model.compile true`, whose compile time falls in the timed steps
LIGHTNING_PRECISION = {"32": "32-true", "bf16": "bf16-mixed"}
MATMUL_DTYPE = {"32": torch.float32, "bf16": torch.bfloat16}


class Step(NamedTuple):
    end: float  # time.perf_counter() once the optimizer step is done
    samples: int
    real_tokens: int  # attention_mask.sum()
    padded_tokens: int  # input_ids.numel()


class StepTimer(Callback):
    """Timestamps each optimizer step of our `fit` and counts its batch's samples and tokens."""

    def __init__(self) -> None:
        self.steps: list[Step] = []

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: dict, batch_idx: int
    ) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize()
        end = time.perf_counter()
        mask = batch["attention_mask"]
        self.steps.append(Step(end, len(batch["input_ids"]), int(mask.sum()), batch["input_ids"].numel()))


class _StepClock(TrainerCallback):
    """Timestamps each optimizer step of the Hugging Face Trainer."""

    def __init__(self, cuda: bool) -> None:
        self.cuda = cuda
        self.ends: list[float] = []

    def on_step_end(self, args: TrainingArguments, state: Any, control: Any, **kwargs: Any) -> None:
        if self.cuda:
            torch.cuda.synchronize()
        self.ends.append(time.perf_counter())


class _CountingCollator:
    """Counts samples and real/padded tokens of every batch, in the order the Trainer asks for them."""

    def __init__(self, collator: DataCollatorWithPadding) -> None:
        self.collator = collator
        self.counts: list[tuple[int, int, int]] = []

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        batch = self.collator(features)
        mask = batch["attention_mask"]
        self.counts.append((len(mask), int(mask.sum()), mask.numel()))
        return batch


def run_ours(
    model: str, data: str, args: argparse.Namespace, precision: str, cuda: bool, compile: bool = False
) -> list[Step]:
    import throughput  # this file by module name: jsonargparse resolves `throughput.StepTimer` by import path
    from modules.cli.app import cli_main

    # LightningCLI warns when this script's own flags sit in sys.argv next to `args`.
    with tempfile.TemporaryDirectory() as root_dir, mock.patch.object(sys, "argv", sys.argv[:1]):
        cli = cli_main(
            ["fit", "--model.model_name_or_path", model, "--data.dataset", data]
            # The HF Trainer's defaults: lr 5e-5 and gradient clipping at norm 1.0, so both do the same work.
            + ["--model.learning_rate", "5e-5", "--trainer.gradient_clip_val", "1.0"]
            + ["--data.batch_size", str(args.batch_size), "--data.max_length", str(args.max_length)]
            + (["--data.pad_to_multiple_of", "8"] if cuda else [])
            + (["--model.compile", "true"] if compile else [])
            + ["--trainer.max_steps", str(args.steps), "--trainer.precision", LIGHTNING_PRECISION[precision]]
            + ["--trainer.limit_val_batches", "0", "--trainer.num_sanity_val_steps", "0"]
            + ["--trainer.enable_checkpointing", "false", "--trainer.logger", "false"]
            + ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
            + ["--export.enabled", "false", "--trainer.accelerator", "auto" if cuda else "cpu"]
            + ["--trainer.devices", "1", "--trainer.default_root_dir", root_dir, "--seed_everything", "0"]
            # A list of its own: the default one holds a checkpoint callback, which enable_checkpointing=false refuses.
            + ['--trainer.callbacks=[{"class_path": "throughput.StepTimer"}]']
        )
    timer = next(c for c in cli.trainer.callbacks if isinstance(c, throughput.StepTimer))
    return timer.steps


def run_hf(model: str, data: str, args: argparse.Namespace, precision: str, grouped: bool, cuda: bool) -> list[Step]:
    tokenizer = AutoTokenizer.from_pretrained(model)
    train = datasets.load_dataset(data)["train"]
    train = train.map(
        lambda batch: tokenizer(batch["text"], truncation=True, max_length=args.max_length),
        batched=True,
        remove_columns=[c for c in train.column_names if c != "label"],
    )
    collator = _CountingCollator(DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8 if cuda else None))
    clock = _StepClock(cuda)
    with tempfile.TemporaryDirectory() as output_dir:
        training_args = TrainingArguments(
            output_dir=output_dir,
            per_device_train_batch_size=args.batch_size,
            max_steps=args.steps,
            learning_rate=5e-5,
            bf16=precision == "bf16",
            use_cpu=not cuda,
            report_to="none",
            save_strategy="no",
            eval_strategy="no",
            logging_strategy="no",
            dataloader_num_workers=0,
            seed=0,
            disable_tqdm=True,
            # transformers 5.x replaced `group_by_length=True` with this strategy name
            train_sampling_strategy="group_by_length" if grouped else "random",
        )
        classifier = AutoModelForSequenceClassification.from_pretrained(model, num_labels=2)
        trainer = HFTrainer(classifier, training_args, collator, train, processing_class=tokenizer, callbacks=[clock])
        trainer.remove_callback(PrinterCallback)  # its end-of-training dict of rounded rates would only confuse
        trainer.train()
    # The dataloader may collate one batch ahead of the step it feeds: the first len(ends) batches are the steps'.
    return [Step(end, *counts) for end, counts in zip(clock.ends, collator.counts)]


def run_tool(tool: str, model: str, data: str, args: argparse.Namespace, precision: str, cuda: bool) -> list[Step]:
    if tool.startswith("ours"):
        return run_ours(model, data, args, precision, cuda, compile=tool == "ours_compile")
    return run_hf(model, data, args, precision, tool == "hf_grouped", cuda)


def with_settings(args: argparse.Namespace, **changes) -> argparse.Namespace:
    """A copy of the benchmark's settings with `changes` applied (a shorter run, a smaller batch)."""
    return argparse.Namespace(**{**vars(args), **changes})


def run_isolated(tool: str, model: str, data: str, args: argparse.Namespace, precision: str, cuda: bool) -> list[Step]:
    """`run_tool` in a fresh Python process, after an untimed run of `--warmup_run_steps` steps there.

    One training per process, as users train: no run inherits the heap, caches or thread state that earlier runs of
    either tool left behind, so the order of the tools cannot favour one of them.
    """
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "steps.json"
        command = [
            sys.executable,
            __file__,
            "--run_one",
            tool,
            precision,
            str(out),
            "--model",
            model,
            "--dataset",
            data,
        ]
        for name in ("batch_size", "max_length", "steps", "warmup_steps", "warmup_run_steps"):
            command.append(f"--{name}={getattr(args, name)}")
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"{tool} {precision} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        return [Step(*step) for step in json.loads(out.read_text())]


def summarize(steps: list[Step], warmup_steps: int, n_params: int) -> dict[str, float]:
    """Rates over the steps after step `warmup_steps`, timed from the end of that step to the end of the last."""
    window = steps[warmup_steps:]
    elapsed = steps[-1].end - steps[warmup_steps - 1].end
    real, padded = sum(s.real_tokens for s in window), sum(s.padded_tokens for s in window)
    return {
        "steps": len(steps),
        "samples_per_s": sum(s.samples for s in window) / elapsed,
        "real_tokens_per_s": real / elapsed,
        "real_token_fraction": real / padded,
        "padded_tokens_per_step": padded / len(window),
        "gflop_per_s": 6 * n_params * real / elapsed / 1e9,  # forward 2N + backward 4N per token, attention aside
    }


def matmul_peak(dtype: torch.dtype, device: str, seconds: float = 0.25) -> float:
    """Best GFLOP/s that square matmuls of a few sizes sustain back to back for `seconds` (best of two windows each).

    Sustained, not the fastest single call: on this shared 2-core VM the fastest of ten 1-4 ms bf16 products ran at up
    to 2.6x the rate the same products held for half a second, and a training run lasts minutes.
    """
    best = 0.0
    for n in (4096, 8192) if device == "cuda" else (1024, 2048, 4096):
        a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
        for _ in range(3):  # the first calls pay for kernel selection and page faults
            a @ b
        best = max(best, sustained_rate(functools.partial(torch.matmul, a, b), 2 * n**3, device, seconds))
    return best


def sustained_rate(run: Callable[[], object], flops: float, device: str, seconds: float) -> float:
    """GFLOP/s that `run` (`flops` a call) sustains called back to back for `seconds`: the best of two windows."""
    sync = torch.cuda.synchronize if device == "cuda" else lambda: None
    best = 0.0
    for _ in range(2):
        sync()
        calls, start = 0, time.perf_counter()
        while calls < 3 or time.perf_counter() - start < seconds:
            run()
            calls += 1
            if device == "cuda" and calls % 10 == 0:
                sync()
        sync()
        best = max(best, flops * calls / (time.perf_counter() - start) / 1e9)
    return best


def linear_matmul_rate(model: str, tokens: int, dtype: torch.dtype, device: str, seconds: float = 0.25) -> float:
    """GFLOP/s of the model's own training matmuls alone: for each `nn.Linear` (at `tokens` rows, a step's padded token
    count), its forward product and the two of its backward (input and weight gradients), back to back, best of two
    windows. The square-matmul peak says what the hardware can do; this, what it does at the shapes training has (bf16
    at MiniLM's ~900 x 384 on 2 CPU cores: 405-1040 GFLOP/s in runs whose square products reached 755-1938). A step
    made of these products and nothing else would reach it."""
    classifier = AutoModelForSequenceClassification.from_pretrained(model, num_labels=2)
    shapes = [(m.in_features, m.out_features) for m in classifier.modules() if isinstance(m, torch.nn.Linear)]
    del classifier
    make = functools.partial(torch.randn, device=device, dtype=dtype)
    operands = {
        (n_in, n_out): (make(tokens, n_in), make(n_out, n_in), make(n_out), make(tokens, n_out))
        for n_in, n_out in set(shapes)
    }

    def step() -> None:
        for shape in shapes:
            x, weight, bias, grad = operands[shape]
            torch.addmm(bias, x, weight.t())
            grad @ weight
            grad.t() @ x

    step()  # the first calls pay for kernel selection
    return sustained_rate(step, sum(6 * tokens * n_in * n_out for n_in, n_out in shapes), device, seconds)


def fixed_step_ms(run: Callable, model: str, data: str, args: argparse.Namespace, precision: str, cuda: bool) -> float:
    """Median time of one of our steps when the batch is 1 row of 4 tokens: the part of a step that does not grow with
    the batch (host-side dispatch, the cast of every weight and gradient under autocast, the optimizer over all
    parameters, the per-call cost of each matmul). Against a step's full time it bounds what the matmul FLOPs can be."""
    tiny = with_settings(args, batch_size=1, max_length=4, steps=60)
    ends = [step.end for step in run("ours", model, data, tiny, precision, cuda)]
    return 1000 * statistics.median(b - a for a, b in zip(ends[args.warmup_steps :], ends[args.warmup_steps + 1 :]))


def non_embedding_parameters(model: str) -> int:
    """Parameters outside the embedding tables (word, position, token type): the N of the 6N FLOPs-per-token rule."""
    classifier = AutoModelForSequenceClassification.from_pretrained(model, num_labels=2)
    embedding = {id(p) for m in classifier.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()}
    return sum(p.numel() for p in classifier.parameters() if id(p) not in embedding)


def hardware(cuda: bool) -> str:
    if cuda:
        return torch.cuda.get_device_name()
    names = [
        line.split(":", 1)[1].strip()
        for line in Path("/proc/cpuinfo").read_text().splitlines()
        if line.startswith("model name")
    ]
    return f"{names[0] if names else 'unknown CPU'} ({len(names)} cores)"


def build_random_model(tokenizer_from: str, layers: int, hidden: int, folder: str) -> str:
    """A randomly initialised BERT of the given size, saved with the tokenizer of `tokenizer_from`."""
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_from)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 64),
        intermediate_size=4 * hidden,
        num_labels=2,
    )
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="local HF model folder (default: ../shared/scripts/get-minilm.sh)")
    parser.add_argument("--dataset", default=str(ROOT / "../shared/data/rotten_tomatoes"), help="text/label data")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--max_length", type=int, default=128)
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps per run")
    parser.add_argument("--warmup_steps", type=int, default=10, help="steps left out of the timing (>= 1)")
    parser.add_argument("--precision", nargs="+", choices=list(LIGHTNING_PRECISION), default=["32", "bf16"])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--warmup_run_steps", type=int, default=20, help="an untimed run of each tool first (0: none); see main()"
    )
    parser.add_argument("--tools", nargs="+", choices=TOOLS + EXTRA_TOOLS, default=list(TOOLS))
    parser.add_argument("--random_init", action="store_true", help="random BERT of the size below, --model's vocab")
    parser.add_argument("--from_config_layers", type=int, default=12)
    parser.add_argument("--from_config_hidden", type=int, default=768)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--in_process", action="store_true", help="every run in this process (default: each in a fresh one)"
    )
    parser.add_argument("--run_one", nargs=3, metavar=("TOOL", "PRECISION", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not 1 <= args.warmup_steps < args.steps:
        parser.error("--warmup_steps must be at least 1 and less than --steps")
    return args


def report(runs: list[dict], args: argparse.Namespace, peaks: dict[str, float], fixed: dict[str, float]) -> list[dict]:
    """Print one row per tool and precision (means over repeats) and the ratios ours/hf; return the rows."""
    rows = []
    print(f"{'tool':<13}{'precision':<10}{'samples/s (min-max)':<26}{'real tok':>9}{'GFLOP/s':>10}{'of peak':>9}")
    for precision, tool in itertools.product(args.precision, args.tools):
        mine = [r for r in runs if (r["tool"], r["precision"]) == (tool, precision)]
        rates = [r["samples_per_s"] for r in mine]
        row = {"tool": tool, "precision": precision, "samples_per_s_min": min(rates), "samples_per_s_max": max(rates)}
        for key in ("samples_per_s", "real_token_fraction", "gflop_per_s"):
            row[key] = statistics.mean(r[key] for r in mine)
        row["fraction_of_peak"] = row["gflop_per_s"] / peaks[precision]
        rows.append(row)
        spread = f"{row['samples_per_s']:.1f} ({min(rates):.1f}-{max(rates):.1f})"
        print(
            f"{tool:<13}{precision:<10}{spread:<26}{row['real_token_fraction']:>9.1%}"
            f"{row['gflop_per_s']:>10.3g}{row['fraction_of_peak']:>9.1%}"
        )
    for precision in args.precision:
        rate = {r["tool"]: r["samples_per_s"] for r in rows if r["precision"] == precision}
        pairs = itertools.product(("ours", "ours_compile"), ("hf", "hf_grouped"))
        ratios = []
        for a, b in pairs:
            if a in rate and b in rate:
                # The same repeat's runs were minutes apart, the repeats themselves farther: their ratios, as well.
                paired = [
                    x["samples_per_s"] / y["samples_per_s"]
                    for x, y in itertools.product(runs, runs)
                    if (x["tool"], y["tool"], x["precision"], y["precision"]) == (a, b, precision, precision)
                    and x["repeat"] == y["repeat"]
                ]
                each = ", ".join(f"{r:.2f}" for r in paired)
                median = statistics.median(paired)
                ratios.append(f"{a}/{b} {rate[a] / rate[b]:.2f}x (per repeat {each}; median {median:.2f})")
        if ratios:
            print(f"precision {precision}: " + "   ".join(ratios))
        shares = functools.partial(_shares, runs, args.tools, precision)
        print(f"precision {precision}, of the peak taken before each repeat: " + shares("peak_before_repeat"))
        rates = {r["repeat"]: r["linear_matmuls_after_repeat"] for r in runs if r["precision"] == precision}
        alone = ", ".join(f"{rates[repeat]:.0f}" for repeat in sorted(rates))
        print(f"precision {precision}, the model's Linear matmuls alone at the training's shapes: {alone} GFLOP/s")
        print(
            f"precision {precision}, of those matmuls' rate after each repeat: " + shares("linear_matmuls_after_repeat")
        )
        if precision in fixed:
            ours = [r for r in runs if (r["tool"], r["precision"]) == ("ours", precision)]
            step = statistics.mean(1000 * args.batch_size / r["samples_per_s"] for r in ours)
            print(
                f"precision {precision}, ours' step: {step:.1f} ms at {args.batch_size} rows, of which "
                f"{fixed[precision]:.1f} ms do not grow with the batch (a step of 1 row x 4 tokens)"
            )
    return rows


def _shares(runs: list[dict], tools: list[str], precision: str, rate: str) -> str:
    """Each tool's GFLOP/s, run by run, as a share of the rate recorded with the run under the key `rate`."""
    shares = []
    for tool in tools:
        mine = [r for r in runs if (r["tool"], r["precision"]) == (tool, precision)]
        if mine:
            shares.append(f"{tool} " + ", ".join(f"{r['gflop_per_s'] / r[rate]:.1%}" for r in mine))
    return "   ".join(shares)


def main() -> None:
    args = parse_args()
    sys.path.insert(0, str(ROOT))  # `main` (our CLI)
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # `throughput`, for the callback's class path
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    cuda = torch.cuda.is_available()
    threads = torch.get_num_threads()
    script = [str(ROOT / "../shared/scripts/get-minilm.sh")]
    model = args.model or subprocess.run(script, check=True, capture_output=True, text=True).stdout.split()[-1]
    data = str(Path(args.dataset).resolve())
    if args.run_one:  # a run of `run_isolated`, in its own process
        tool, precision, out = args.run_one
        if args.warmup_run_steps:
            run_tool(tool, model, data, with_settings(args, steps=args.warmup_run_steps), precision, cuda)
        Path(out).write_text(json.dumps(run_tool(tool, model, data, args, precision, cuda)))
        return
    run = run_tool if args.in_process else run_isolated
    settings = f"batch {args.batch_size}, max_length {args.max_length}, {args.steps} steps (timed after step "
    settings += f"{args.warmup_steps}), {args.repeats} repeats; {hardware(cuda)}, {threads} torch threads"
    runs = []
    with tempfile.TemporaryDirectory() as random_dir:
        if args.random_init:
            model = build_random_model(model, args.from_config_layers, args.from_config_hidden, random_dir)
        n_params = non_embedding_parameters(model)
        print(f"{settings}\nmodel: {model} ({n_params:,} non-embedding parameters); data: {data}")
        # The first run in a process pays one-off costs (lazy imports, on GPUs the loading of each kernel at its first
        # use, for shapes that may first appear after the timed steps began): it made the first tool of the first
        # repeat up to 25% slower on an H200. An untimed short run of each tool and precision takes them first (in the
        # process of each run, unless --in_process).
        warm_up = args.precision if args.warmup_run_steps and args.in_process else []
        for precision, tool in itertools.product(warm_up, args.tools):
            short = with_settings(args, steps=args.warmup_run_steps)
            run_tool(tool, model, data, short, precision, cuda)
            print(f"[warm-up] {tool} {precision}: {args.warmup_run_steps} steps, untimed")
        # The peak of a shared machine varies by 2x from minute to minute: measured before every repeat, best kept.
        peaks = dict.fromkeys(args.precision, 0.0)
        # Alternate the tools within each repeat, in reverse order every other repeat, so that a slow patch of the
        # machine and the order itself hit them alike.
        for repeat, precision in itertools.product(range(args.repeats), args.precision):
            peak = matmul_peak(MATMUL_DTYPE[precision], "cuda" if cuda else "cpu")
            peaks[precision] = max(peaks[precision], peak)
            print(f"[repeat {repeat}] matmul peak {precision}: {peak:.0f} GFLOP/s")
            for tool in args.tools if repeat % 2 == 0 else args.tools[::-1]:
                torch.set_num_threads(threads)  # a tool that changed it must not slow the next one
                steps = run(tool, model, data, args, precision, cuda)
                result = {"tool": tool, "precision": precision, "repeat": repeat, "peak_before_repeat": peak}
                result |= summarize(steps, args.warmup_steps, n_params)
                runs.append(result)
                rate = result["samples_per_s"]
                print(f"[repeat {repeat}] {tool} {precision}: {rate:.1f} samples/s, {len(steps)} steps")
                gc.collect()
                if cuda:
                    torch.cuda.empty_cache()
            # The same repeat's products at its training shapes (the rows: the padded tokens of ours' steps, else any).
            mine = [r for r in runs if (r["repeat"], r["precision"]) == (repeat, precision)]
            tokens = next((r for r in mine if r["tool"] == "ours"), mine[0])["padded_tokens_per_step"]
            rate = linear_matmul_rate(model, round(tokens), MATMUL_DTYPE[precision], "cuda" if cuda else "cpu")
            print(f"[repeat {repeat}] the model's Linear matmuls at {tokens:.0f} rows, {precision}: {rate:.0f} GFLOP/s")
            for result in mine:
                result["linear_matmuls_after_repeat"] = rate
        fixed = {}
        if "ours" in args.tools:  # once per precision, after the repeats, while a --random_init model still exists
            for precision in args.precision:
                fixed[precision] = fixed_step_ms(run, model, data, args, precision, cuda)
                print(f"[fixed] ours {precision}: {fixed[precision]:.1f} ms a step of 1 row x 4 tokens")
    print(f"\n{settings}")
    print("matmul peak (best of the repeats): " + ", ".join(f"{p} {v:.0f} GFLOP/s" for p, v in peaks.items()))
    rows = report(runs, args, peaks, fixed)
    if args.json:
        record = {"settings": settings, "model": model, "data": data, "args": vars(args), "peaks": peaks}
        record |= {"non_embedding_parameters": n_params, "runs": runs, "summary": rows, "fixed_step_ms": fixed}
        args.json.write_text(json.dumps(record, indent=2, default=str))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
