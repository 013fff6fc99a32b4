"""Hyperparameter search over the CLI: each Optuna trial is a normal `fit` with sampled overrides, in a run folder of
its own; any number of workers, on one machine or many, share one study through an RDB storage.

    python main.py tune --config configs/bert.yaml --search configs/search/lr.yaml --n_trials 20 \\
        --storage sqlite:///tune.db --study_name lr

Arguments this command does not know are passed on to every trial's `fit` (e.g. `--trainer.max_epochs 1`).
The objective is `--metric` (default: the config's checkpoint callback's monitor), any metric the fit logs at
validation, taken at the trial's best checkpoint (the one its checkpoint callback keeps, the model the trial yields),
in `--direction`. Pruning (optuna-integration's Lightning callback, median pruner) watches the same metric after each
validation.
`--n_trials` is the study's total over all workers. A worker killed mid-trial stops beating its heartbeat; another
worker marks that trial failed after `--grace_period` seconds. At the end: a table of the trials, and the best
trial's full config as `best.yaml`, which `python main.py fit --config best.yaml` reproduces.
"""

import argparse
import contextlib
import fcntl
import io
import math
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from modules.cli.plain_parser import PlainParser
from modules.console.quiet import quiet_library_noise
from modules.data.tasks import PROBLEM_TYPES
from modules.errors import HFLightningError
from modules.tune.search_space import Parameter, as_flags, load_search_space


def _optuna():
    try:
        import optuna
        from optuna_integration import PyTorchLightningPruningCallback
    except ImportError:
        raise HFLightningError("tune needs Optuna: `pip install -e '.[tune]'` (optuna, optuna-integration).") from None
    return optuna, PyTorchLightningPruningCallback


def _parser() -> argparse.ArgumentParser:
    parser = PlainParser("tune", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", action="append", required=True, help="a fit config (repeat to stack them)")
    parser.add_argument("--search", required=True, help="search-space YAML: dotted CLI key -> distribution")
    parser.add_argument("--n_trials", type=int, required=True, help="trials in the study, over all workers")
    parser.add_argument("--study_name", required=True, help="the study; workers with the same name share it")
    parser.add_argument(
        "--metric",
        help="the objective: a metric the fit logs at validation, e.g. val_f1_macro (default: the checkpoint "
        "callback's monitor), taken at the trial's best checkpoint",
    )
    parser.add_argument(
        "--direction",
        choices=["minimize", "maximize"],
        help="minimize or maximize --metric (default: the checkpoint callback's mode for its monitor; for another "
        "metric, minimize a loss or mse and maximize the rest)",
    )
    parser.add_argument("--storage", help="Optuna RDB URL (default: sqlite:///<output_dir>/study.db)")
    parser.add_argument("--output_dir", help="trial run folders, best.yaml, trials.csv (default: tune/<study_name>)")
    parser.add_argument("--pruning", choices=["true", "false"], default="true", help="median pruning (default true)")
    parser.add_argument("--pruner_startup_trials", type=int, default=5, help="trials finished before pruning starts")
    parser.add_argument("--pruner_warmup_epochs", type=int, default=0, help="epochs of a trial never pruned")
    parser.add_argument(
        "--baseline",
        choices=["true", "false"],
        default="true",
        help="trial 0 runs the config's own values (default true)",
    )
    parser.add_argument("--sampler", choices=["tpe", "random"], default="tpe", help="Optuna sampler (default tpe)")
    parser.add_argument("--seed", type=int, help="the sampler's seed (each worker should have its own)")
    parser.add_argument("--heartbeat_interval", type=int, default=30, help="seconds between a trial's heartbeats")
    parser.add_argument("--grace_period", type=int, default=120, help="seconds without a heartbeat: trial failed")
    return parser


def main(argv: list[str] | None = None) -> None:
    try:
        run(argv)
    except HFLightningError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


def run(argv: list[str] | None = None) -> Any:
    """Run this worker's share of the study; returns the study."""
    args, fit_args = _parser().parse_known_args(argv)
    from modules.tune.report import ValidationMetrics, write_report  # Lightning: imported past --help and bad flags

    quiet_library_noise()  # before Optuna's first call, as cli_main does before each trial's

    if args.n_trials < 1:
        raise HFLightningError(f"--n_trials must be >= 1, got {args.n_trials}.")
    space = load_search_space(args.search)
    optuna, pruning_callback = _optuna()
    output_dir = Path(args.output_dir or Path("tune") / args.study_name)
    output_dir.mkdir(parents=True, exist_ok=True)
    url = args.storage or f"sqlite:///{output_dir / 'study.db'}"
    base = [flag for config in args.config for flag in ("--config", config)] + fit_args
    settings = _check(base, space)  # before any trial: the configs, the extra flags and every searched key parse
    monitor = settings["monitor"]  # what picks each trial's best checkpoint
    metric, direction = _objective(args.metric, args.direction, settings)  # and what is read from it
    pruner = (
        optuna.pruners.MedianPruner(args.pruner_startup_trials, args.pruner_warmup_epochs)
        if args.pruning == "true"
        else optuna.pruners.NopPruner()
    )
    sampler = (
        optuna.samplers.RandomSampler(args.seed)
        if args.sampler == "random"
        else optuna.samplers.TPESampler(seed=args.seed)
    )
    # Two workers starting at once: one creates the storage's tables and the study, the other loads them.
    with _Claim(url):
        storage = optuna.storages.RDBStorage(
            url,
            heartbeat_interval=args.heartbeat_interval,
            grace_period=args.grace_period,
            engine_kwargs={"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None,
        )
        study = optuna.create_study(
            study_name=args.study_name,
            storage=storage,
            direction=direction,
            sampler=sampler,
            pruner=pruner,
            load_if_exists=True,
        )
        _same_objective(study, metric, direction)
        if args.baseline == "true" and not study.get_trials(deepcopy=False):
            # The config as it is, first: the table then says what the search gained over it.
            study.enqueue_trial(settings["baseline"], user_attrs={"baseline": True})
    chosen = "" if metric == monitor else f" at the best checkpoint by {monitor}"
    print(f"Study {args.study_name!r} in {url}: {direction} {metric}{chosen}, {args.n_trials} trials in all.")

    def objective(trial: Any) -> float:
        claim.release()  # the trial has its number: the next worker may ask for one
        values = {p.key: p.suggest(trial) for p in space}
        folder = _folder_flags(settings["logger"], output_dir, trial.number)
        callbacks = [pruning_callback(trial, metric)] if args.pruning == "true" else []
        metrics = ValidationMetrics(monitor)
        started = time.perf_counter()
        try:
            score, run_dir = _fit([*base, *as_flags(values), *folder], [*callbacks, metrics])
        except optuna.TrialPruned:
            trial.set_user_attr("seconds", time.perf_counter() - started)
            raise
        except Exception as error:  # recorded on the trial; the study goes on
            first_line = (str(error).strip().splitlines() or [""])[0]
            trial.set_user_attr("error", f"{type(error).__name__}: {first_line}")
            trial.set_user_attr("seconds", time.perf_counter() - started)
            raise
        trial.set_user_attr("seconds", time.perf_counter() - started)
        trial.set_user_attr("run_dir", str(run_dir))
        best = metrics.at(score)
        value = score if metric == monitor else best.get(metric)
        trial.set_user_attr("metrics", {name: v for name, v in best.items() if name != metric})
        if value is None or not math.isfinite(value):
            problem = f"no finite {metric} at the best checkpoint (by {monitor})"
            trial.set_user_attr("error", f"ValueError: {problem}")
            raise ValueError(problem)
        return value

    with _Claim(url) as claim:
        while True:
            claim.acquire()
            # A queued trial (the baseline) is not yet one of the n: it runs in this loop's next `optimize`.
            started = [t for t in study.get_trials(deepcopy=False) if t.state != optuna.trial.TrialState.WAITING]
            if len(started) >= args.n_trials:
                break
            study.optimize(objective, n_trials=1, catch=(Exception,), gc_after_trial=True)
    _wait_for_stale(optuna, study, args.heartbeat_interval, args.grace_period)
    write_report(study, space, output_dir)
    return study


def _check(base: list[str], space: list[Parameter]) -> dict:
    """Parse the fit config once, and once per searched key with each end of its range, without training."""
    from modules.runs.paths import config_entries  # torch and Lightning: not for `tune --help`

    config = yaml.safe_load(_parse([*base, "--print_config"], "the config and extra flags"))
    for parameter in space:
        for value in parameter.examples():
            _parse([*base, *as_flags({parameter.key: value}), "--print_config"], f"search key {parameter.key}")
    trainer = config.get("trainer") or {}
    checkpoint = next(
        (c for c in config_entries(trainer.get("callbacks")) if "Checkpoint" in str(c.get("class_path", ""))), None
    )
    init_args = (checkpoint or {}).get("init_args") or {}
    if not init_args.get("monitor"):
        raise HFLightningError("tune needs a checkpoint callback with a `monitor` in the config: the objective.")
    loggers = config_entries(trainer.get("logger"))
    return {
        "monitor": init_args["monitor"],
        "mode": init_args.get("mode", "min"),
        "logger": loggers[0] if loggers else None,
        "data": config.get("data") or {},
        "baseline": {p.key: value for p in space if p.contains(value := _lookup(config, p.key))},
    }


def _objective(metric: str | None, direction: str | None, settings: dict) -> tuple[str, str]:
    """The metric to optimize and its direction; a metric the fit never logs at validation fails here, before any
    trial (pruning reads it after each validation, the objective at the best checkpoint's)."""
    monitor, mode = settings["monitor"], settings["mode"]
    metric = metric or monitor
    if metric == monitor:
        return metric, direction or ("minimize" if mode == "min" else "maximize")
    tasks = [task for task in PROBLEM_TYPES if metric in _validation_names(task)]
    if not tasks:
        known = sorted({name for task in PROBLEM_TYPES for name in _validation_names(task)})
        raise HFLightningError(
            f"--metric {metric}: no fit logs it at validation; use one of {known} (test-only and per-label "
            "metrics are not logged during fit)."
        )
    if len(tasks) < len(PROBLEM_TYPES):
        task = _data_task(settings["data"])
        if task is not None and task not in tasks:
            raise HFLightningError(
                f"--metric {metric}: a {task} run never logs it; use one of {_validation_names(task)}."
            )
    # The logged names are a closed set: the losses and the mean squared error fall as the model improves.
    return metric, direction or ("minimize" if metric.endswith(("_loss", "_mse")) else "maximize")


def _validation_names(task: str) -> list[str]:
    from modules.model.metrics import logged_names

    return logged_names(task, "val")


def _data_task(data: dict) -> str | None:
    """The task `fit` will find in the data (None: it cannot tell, and the trial will say why): `--data.task`, else
    the train split's labels as `fit` reads them, loaded without tokenizing (and cached for the trials)."""
    from modules.data.labels import infer_label_spec
    from modules.data.sources import load_splits

    if data.get("task", "auto") != "auto":
        return data["task"]
    if data.get("streaming"):
        return "single_label"  # a streamed fit is single-label (modules/data/streaming.py)
    raw = load_splits(
        data.get("dataset"),
        data.get("dataset_config"),
        data.get("data_files"),
        None,
        "test",
        data.get("text_column", "text"),
    )
    if "train" not in raw:
        return None
    return infer_label_spec(raw["train"], data.get("label_column", "label"), "auto").task


def _same_objective(study: Any, metric: str, direction: str) -> None:
    """Every worker of a study optimizes one metric in one direction: the first to start records them."""
    recorded = study.user_attrs.get("metric")
    recorded_direction = study.direction.name.lower()
    if recorded is None and not study.get_trials(deepcopy=False):
        study.set_user_attr("metric", metric)
        recorded = metric
    if (recorded or metric, recorded_direction) != (metric, direction):
        raise HFLightningError(
            f"study {study.study_name!r} {recorded_direction}s {recorded or 'another metric'}; this worker was given "
            f"--metric {metric} --direction {direction}: give the same, or a new --study_name."
        )


def _lookup(config: dict, key: str) -> Any:
    """The value of a dotted key in a printed config (None where it has none)."""
    value: Any = config
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _parse(args: list[str], what: str) -> str:
    from modules.cli.app import cli_main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            cli_main(["fit", *args])
        except SystemExit as exit_:
            if exit_.code == 0:
                return out.getvalue()
    message = (err.getvalue().strip().splitlines() or ["it does not parse"])[0].removeprefix("error: ")
    raise HFLightningError(f"{what}: {message}")


def _folder_flags(logger: Any, output_dir: Path, number: int) -> list[str]:
    """Each trial in its own run folder, `<output_dir>/trials/trial_<number>/version_0`."""
    trials = output_dir / "trials"
    class_path = str(logger.get("class_path", "")) if isinstance(logger, dict) else ""
    if class_path.endswith(("TensorBoardLogger", "CSVLogger")):
        return [
            "--trainer.logger.init_args.save_dir",
            str(trials),
            "--trainer.logger.init_args.name",
            f"trial_{number}",
        ]
    return ["--trainer.default_root_dir", str(trials / f"trial_{number}")]


def _fit(args: list[str], callbacks: list) -> tuple[float, Path]:
    from modules.cli.app import cli_main
    from modules.runs.paths import run_folder

    err = _Tee(sys.stderr)
    try:
        with contextlib.redirect_stderr(err):
            cli = cli_main(["fit", *args], callbacks=callbacks)
    except SystemExit as exit_:  # a sampled value the parser refuses
        raise ValueError((err.getvalue().strip().splitlines() or [f"exit status {exit_.code}"])[0]) from None
    callback = cli.trainer.checkpoint_callback
    score = callback.best_model_score if callback else None
    if score is None or not math.isfinite(float(score)):
        raise ValueError(f"no finite {callback.monitor if callback else 'monitored metric'} at a best checkpoint")
    return float(score), run_folder(cli.trainer)


class _Tee(io.StringIO):
    """Stderr as it goes, also kept: a parse error's message becomes the trial's recorded error."""

    def __init__(self, stream: Any) -> None:
        super().__init__()
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(text)
        return super().write(text)

    def flush(self) -> None:
        self._stream.flush()


def _wait_for_stale(optuna: Any, study: Any, interval: int, grace: int) -> None:
    """Give trials of killed workers the grace period to be marked failed, so the table shows them as such."""
    deadline = time.monotonic() + grace + 2 * interval
    while time.monotonic() < deadline:
        optuna.storages.fail_stale_trials(study)
        if not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            return
        time.sleep(interval)


class _Claim:
    """An exclusive lock around "count the trials, then start one", so concurrent workers on one SQLite file never
    start more than `--n_trials`. Server databases (PostgreSQL, MySQL) get no lock: there, workers finishing at the
    same moment may each start one trial past the total."""

    def __init__(self, url: str) -> None:
        path = url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else None
        self._file = open(f"{path}.lock", "a") if path else None  # noqa: SIM115 (held across calls)
        self._held = False

    def acquire(self) -> None:
        if self._file and not self._held:
            fcntl.flock(self._file, fcntl.LOCK_EX)
        self._held = True

    def release(self) -> None:
        if self._file and self._held:
            fcntl.flock(self._file, fcntl.LOCK_UN)
        self._held = False

    def __enter__(self) -> "_Claim":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
        if self._file:
            self._file.close()


if __name__ == "__main__":
    main()
