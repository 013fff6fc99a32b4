#!/usr/bin/env bash
# Packs what benchmarks/gpu.sh needs on a lent GPU machine, which has no network and lacks some of our packages.
# Run HERE, from anywhere, before the device call:
#
#     bash benchmarks/gpu_wheels.sh
#
# It writes two folders that .git/info/exclude ignores (it adds them there) and that the device call carries:
#   .whl/  wheels for Python 3.12 manylinux x86_64 of what the device image lacks or has too old (its package list:
#          /work/.library/device/KINDS.md), pinned to the versions in this project's .venv
#   .gpu/  MiniLM's tokenizer and config (no weights: model.safetensors is 91 MB, over the 64 MiB a call carries;
#          gpu.sh builds random-init models from this config) and the rotten_tomatoes data folder
# and prints the total that travels (tracked files + these), which must stay under 64 MiB.
#
# Then, with a device lent (`status`: can_start_another true), ONE call:
#     run(command="bash benchmarks/gpu.sh", carry=[".whl", ".gpu"], timeout_s=500)
# gpu.sh writes gpu.log, throughput.json, check_vs_fit.json, serve_load.json and summary.txt under $OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV_PY=${VENV_PY:-.venv/bin/python}
PIP_PY=${PIP_PY:-python3}  # any python with pip: it only downloads

# Missing from the device image: datasets, jsonargparse (+ signatures extra), litserve and its server stack, kernels
# and httpx2 (transformers 5.25 / huggingface_hub 2.x). Present but too old or of unknown version, carried to pin
# them: transformers (5.17 there, our floor 5.24), huggingface_hub (1.33 there, transformers 5.25 needs >=2.4),
# accelerate and lightning (the tested pairs), fsspec (datasets wants <=2026.9.0), click (hub wants >=8.4.2),
# regex, typing_extensions (pydantic wants >=4.16), anyio, idna, h11. Not carried: pyarrow (datasets needs >=24;
# its wheel alone is ~40 MB; gpu.sh's preflight says if the device's is too old), uvicorn[standard]'s
# watchfiles/websockets/python-dotenv (reload and websockets only).
NAMES=(
  transformers huggingface_hub httpx2 httpcore2 truststore kernels tomlkit click regex accelerate lightning
  datasets dill multiprocess fsspec
  jsonargparse docstring_parser typeshed_client
  litserve pyzmq fastapi starlette pydantic pydantic_core annotated-types typing-inspection typing_extensions
  opentelemetry-api anyio idna h11 uvicorn httptools
)
PLATFORMS=()
for p in manylinux_2_28 manylinux_2_27 manylinux_2_24 manylinux_2_17 manylinux2014 manylinux1 manylinux_2_31 \
  manylinux_2_34 manylinux_2_35; do
  PLATFORMS+=(--platform "${p}_x86_64")
done

pins=()
for name in "${NAMES[@]}"; do
  version=$("$VENV_PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name")
  pins+=("$name==$version")
done
echo "pinned from $VENV_PY: ${pins[*]}"

for line in /.whl/ /.gpu/; do
  grep -qxF "$line" .git/info/exclude 2>/dev/null || echo "$line" >>.git/info/exclude
done
rm -rf .whl && mkdir -p .whl
"$PIP_PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${PLATFORMS[@]}" -d .whl "${pins[@]}" 2> >(grep -v "is ignored: it is neither" >&2)
count=$(ls .whl/*.whl | wc -l)
if [ "$count" -ne "${#NAMES[@]}" ]; then
  echo "error: ${#NAMES[@]} packages asked for, $count wheels in .whl" >&2
  exit 2
fi

minilm=${MINILM:-$(bash ../shared/scripts/get-minilm.sh)}
data=${DATA:-../shared/data/rotten_tomatoes}
rm -rf .gpu && mkdir -p .gpu/minilm
for file in config.json tokenizer.json tokenizer_config.json special_tokens_map.json vocab.txt; do
  cp "$minilm/$file" .gpu/minilm/
done
cp -r "$data" .gpu/rotten_tomatoes

ls -l .whl | awk 'NR > 1 {printf "%9d  %s\n", $5, $9}'
tracked=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
untracked=$(git ls-files -z --others --exclude-standard | xargs -0 -r du -cb 2>/dev/null | tail -1 | cut -f1)
whl=$(du -sb .whl | cut -f1)
gpu=$(du -sb .gpu | cut -f1)
total=$((tracked + ${untracked:-0} + whl + gpu))
mib() { awk -v b="$1" 'BEGIN {printf "%.1f MiB", b / 1048576}'; }
echo "travels: tracked $(mib "$tracked") + untracked $(mib "${untracked:-0}") + .whl $(mib "$whl") ($count wheels)" \
  "+ .gpu $(mib "$gpu") = $(mib "$total") of 64 MiB"
if [ "$total" -gt $((60 * 1048576)) ]; then
  echo "error: over 60 MiB; the device call would be refused near 64" >&2
  exit 2
fi
echo 'device call: run(command="bash benchmarks/gpu.sh", carry=[".whl", ".gpu"], timeout_s=500)'
