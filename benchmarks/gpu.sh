#!/usr/bin/env bash
# The GPU pass: three measurements in one call of the lent GPU machine, planned at ~6 minutes there (all steps stop by
# BUDGET=470 s, then the summary prints).
#   1. throughput.py's GPU row: a random-init bert-base (12 layers, hidden 768, MiniLM's vocab) in bf16, ours against
#      the Hugging Face Trainer, 200 steps, 2 repeats, each run in its own process after an untimed warm-up run
#   2. check_vs_fit.py: `check`'s epoch time and peak memory against the one-epoch `fit` that follows (a random-init
#      model of MiniLM's architecture, bf16-mixed)
#   3. serve_load.py on the export of a short fit: ours (32-true, then bf16-true) against the naive server
# Outputs under ${OUT:-/tmp/gpu_out}: gpu.log (everything printed), env.json, throughput.json, check_vs_fit.json,
# serve_load.json, serve_load_bf16.json, summary.txt (the table printed at the end).
#
# Before the device call, HERE: `bash benchmarks/gpu_wheels.sh` (fills .whl/ and .gpu/), then ONE device call:
#     run(command="bash benchmarks/gpu.sh", carry=[".whl", ".gpu"], timeout_s=500)
# Without CUDA (this machine) the same steps run on a tiny model (2 layers, hidden 64) with few steps, in minutes:
#     OUT=/tmp/gpu_out bash benchmarks/gpu.sh
# Knobs: PYTHON (default .venv/bin/python if present, else python3), ONLY="throughput check serve" (a subset, e.g.
# to rerun one step), BUDGET (seconds for all steps; each step also has its own cap), WHEELS=0/1 (install .whl/).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_out}
WORK=${WORK:-/tmp/gpu_work}
mkdir -p "$OUT"

main() {
  local start=$SECONDS
  export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
  if [ -n "${PYTHON:-}" ]; then
    PY=$PYTHON
  elif [ -x .venv/bin/python ]; then
    PY=$PWD/.venv/bin/python  # this machine: the project's venv has every package
  else
    PY=python3  # the device: its image's Python 3.12 with torch, plus the carried wheels
  fi
  local wheels=${WHEELS:-auto}
  if [ "$wheels" = auto ]; then
    wheels=0
    if [ "$PY" = python3 ] && compgen -G ".whl/*.whl" >/dev/null; then wheels=1; fi
  fi
  if [ "$wheels" = 1 ]; then
    echo "== installing $(ls .whl/*.whl | wc -l) carried wheels into /tmp/site"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
      .whl/*.whl || return 1
    export PYTHONPATH=/tmp/site:$PWD
  else
    export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
  fi
  if [ ! -x /usr/bin/time ]; then  # check_vs_fit.py reads the fit's max RSS from GNU time
    printf '#!/bin/sh\nexec %s %s time "$@"\n' "$(command -v "$PY")" "$PWD/benchmarks/gpu_pass.py" >/usr/bin/time &&
      chmod +x /usr/bin/time && echo "== /usr/bin/time missing: wrote a stand-in (benchmarks/gpu_pass.py time)"
  fi
  local tok=.gpu/minilm data=.gpu/rotten_tomatoes
  [ -f "$tok/tokenizer.json" ] || tok=$(bash ../shared/scripts/get-minilm.sh)
  [ -d "$data" ] || data=../shared/data/rotten_tomatoes
  data=$(cd "$data" && pwd)
  tok=$(cd "$tok" && pwd)
  rm -rf "$WORK" && mkdir -p "$WORK"
  : >"$WORK/steps.tsv"

  echo "== preflight ($(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo "unknown here: the calling session's HEAD"))"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
  "$PY" benchmarks/gpu_pass.py preflight "$OUT/env.json" || return 1
  local cuda
  cuda=$("$PY" -c "import json, sys; print(int(json.load(open(sys.argv[1]))['cuda']))" "$OUT/env.json")

  # Sizes: GPU as the brief asks; CPU a tiny model and few steps (this file's own test, minutes on 2 cores).
  local budget throughput_args check_precision serve_args small_model cap_throughput cap_check cap_serve
  if [ "$cuda" = 1 ]; then
    budget=${BUDGET:-470}
    throughput_args=(--from_config_layers 12 --from_config_hidden 768 --precision bf16 --steps 200 --repeats 2)
    throughput_args+=(--tools ours hf)  # grouping buys nothing at this host-bound size (README, GPU throughput)
    check_precision=bf16-mixed
    serve_args=(--requests 600 --concurrency 1 8 32 --time_cap 12)
    small_model=()  # MiniLM's own architecture: 6 layers, hidden 384
    cap_throughput=200 cap_check=100 cap_serve=120
  else
    budget=${BUDGET:-1200}
    throughput_args=(--from_config_layers 2 --from_config_hidden 64 --precision 32 --steps 12 --warmup_steps 2)
    throughput_args+=(--repeats 1 --warmup_run_steps 0 --tools ours hf --batch_size 16 --max_length 64)
    check_precision=32-true
    serve_args=(--requests 40 --concurrency 1 8 --time_cap 10)
    small_model=(2 64)
    cap_throughput=400 cap_check=300 cap_serve=240
  fi
  local deadline=$((start + budget))

  # step NAME CAP COMMAND...: runs COMMAND under `timeout`, at most CAP seconds and never past the deadline.
  step() {
    local name=$1 cap=$2 left began rc status
    shift 2
    left=$((deadline - SECONDS))
    if [ "$left" -lt 30 ]; then
      printf '%s\tskipped\t0\n' "$name" >>"$WORK/steps.tsv"
      echo "== $name: skipped, ${left}s of the budget left"
      return 1
    fi
    [ "$cap" -gt "$left" ] && cap=$left
    echo "== $name (cap ${cap}s): $*"
    began=$SECONDS
    timeout -k 10 "$cap" "$@"
    rc=$?
    case $rc in 0) status=ok ;; 124 | 137) status=timeout ;; *) status="rc=$rc" ;; esac
    printf '%s\t%s\t%s\n' "$name" "$status" $((SECONDS - began)) >>"$WORK/steps.tsv"
    echo "== $name: $status after $((SECONDS - began))s"
    return "$rc"
  }

  local only=" ${ONLY:-throughput check serve} "
  step model 120 "$PY" benchmarks/gpu_pass.py model "$tok" "$WORK/small" "${small_model[@]}" || return 1
  if [[ $only == *" throughput "* ]]; then
    step throughput "$cap_throughput" "$PY" benchmarks/throughput.py --model "$tok" --dataset "$data" --random_init \
      "${throughput_args[@]}" --json "$OUT/throughput.json"
  fi
  local fit_flags=(--config configs/bert.yaml --model.model_name_or_path "$WORK/small" --data.dataset "$data")
  fit_flags+=(--trainer.precision "$check_precision")
  if [[ $only == *" check "* ]]; then
    step check_vs_fit "$cap_check" "$PY" benchmarks/check_vs_fit.py "${fit_flags[@]}" |& tee "$WORK/check_vs_fit.out"
    "$PY" benchmarks/gpu_pass.py check_json "$WORK/check_vs_fit.out" "$OUT/check_vs_fit.json"
  fi
  if [[ $only == *" serve "* ]]; then
    # A short fit for an export to serve (the weights' values do not change the speed).
    step export_fit 90 "$PY" main.py fit "${fit_flags[@]}" --trainer.max_epochs 1 --trainer.limit_train_batches 30 \
      --trainer.limit_val_batches 5 --trainer.logger.init_args.save_dir "$WORK/logs" \
      --trainer.enable_progress_bar false
    local export
    export=$(find "$WORK/logs" -type d -name hf_model 2>/dev/null | head -1)
    if [ -n "$export" ]; then
      step serve_load "$cap_serve" "$PY" benchmarks/serve_load.py "$export" --data "$data" "${serve_args[@]}" \
        --json "$OUT/serve_load.json"
      if [ "$cuda" = 1 ]; then
        step serve_load_bf16 60 "$PY" benchmarks/serve_load.py "$export" --data "$data" --servers ours \
          "--serve_args=--precision bf16-true" "${serve_args[@]}" --json "$OUT/serve_load_bf16.json"
      fi
    else
      echo "== no hf_model export under $WORK/logs: serve_load skipped"
      printf 'serve_load\tno export\t0\n' >>"$WORK/steps.tsv"
    fi
  fi

  echo "== summary (all steps: $((SECONDS - start))s)"
  "$PY" benchmarks/gpu_pass.py summary "$OUT" "$WORK/steps.tsv"
  ! grep -qv $'\tok\t' "$WORK/steps.tsv"  # exit status 1 if any step failed, timed out or was skipped
}

# One line, so that bash has read all of it before main runs (an edit of this file mid-run cannot change the run).
main 2>&1 | tee "$OUT/gpu.log"; exit "${PIPESTATUS[0]}"
